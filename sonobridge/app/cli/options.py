"""Options every command that opens the store shares (one spelling, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Data directory (SQLite database and blobs). Env: SONOBRIDGE_DATA_DIR.")]
DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="sqlite:///path or postgresql://user@host/db. "
                           "Env: SONOBRIDGE_DATABASE_URL.")]
