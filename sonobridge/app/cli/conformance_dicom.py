"""The conformance kit's commands for: dicom (see ``app/cli/conformance.py``)."""

from __future__ import annotations

import typer


def register(conformance_app: typer.Typer, ig_app: typer.Typer) -> None:
    """Add this part's commands (none yet)."""
