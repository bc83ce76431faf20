"""The app factory each worker process of ``sonobridge serve --workers N`` runs.

uvicorn starts N processes that import this module and call ``create``; the parent has already
migrated the database and loaded the sample, and has put every setting it was given on the
command line into the environment, so each worker reads the same settings. Every worker serves
HTTP; the listeners and senders run in the one that holds the cluster's lock
(``app/leader.py``).
"""

from __future__ import annotations

from starlette.applications import Starlette

from sonobridge import logs
from sonobridge.app.server import create_app
from sonobridge.config import Settings


def create() -> Starlette:
    settings = Settings.load()
    logs.configure(settings.log_format, settings.log_level)
    return create_app(settings, listeners=True)
