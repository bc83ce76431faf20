"""``sonobridge config check``: the effective settings, where each came from, and what is wrong.

An operator who set ``SONOBRIDGE_DICOM_PROT=104`` (a typo) otherwise finds out when the modality
cannot connect; this names the unknown variable and the setting it probably meant. Secrets
(passwords in URLs, keys, tokens) are never printed.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sonobridge.config import ENV_NAMES, ENV_PREFIX, ConfigError, Settings

config_app = typer.Typer(help="The settings: check them before a start.", no_args_is_help=True)
console = Console()

# Variables that are not settings but are read by the project's own tools.
_NOT_SETTINGS = {"SONOBRIDGE_CONFIG"}
_NOT_SETTINGS_PREFIXES = ("SONOBRIDGE_TEST_", "SONOBRIDGE_BENCH_")
_SECRET = re.compile(r"secret|password|key|token", re.I)


def _redact(name: str, value: Any) -> str:
    text = str(value)
    if _SECRET.search(name) and text:
        return "•••"
    # A password inside a URL: scheme://user:password@host
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1•••@", text)


def check(environ: dict[str, str]) -> tuple[list[tuple[str, str, str, str]], list[str], str | None]:
    """(rows of setting, environment name, value, source), problems, the error that stops a
    start (or ``None``)."""
    problems: list[str] = []
    known_vars = set(ENV_NAMES.values())
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in known_vars or var in _NOT_SETTINGS \
                or var.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        guess = difflib.get_close_matches(var, known_vars, n=1, cutoff=0.75)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        problems.append(f"{var} is not a SonoBridge setting and is ignored{hint}")
    from_file: set[str] = set()
    config_file = environ.get("SONOBRIDGE_CONFIG")
    if config_file:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):  # Settings.load says
            from_file = set(tomllib.loads(Path(config_file).read_text("utf-8")))
    try:
        settings = Settings.load(environ)
    except ConfigError as exc:
        return [], problems, str(exc)
    rows = []
    for f in fields(Settings):
        var = ENV_NAMES.get(f.name, "")
        if var and environ.get(var):
            source = "environment"
        elif f.name in from_file:
            source = f"file {config_file}"
        else:
            source = "default"
        rows.append((f.name, var, _redact(f.name, getattr(settings, f.name)), source))
    if settings.auth_enabled is False:
        problems.append("SONOBRIDGE_AUTH=disabled: every API is open (loopback only)")
    if not settings.audit:
        problems.append("SONOBRIDGE_AUDIT is off: no audit trail is written")
    return rows, problems, None


@config_app.command("check")
def check_command(
    all_settings: bool = typer.Option(False, "--all",
                                      help="List every setting, not only those not default."),
) -> None:
    """Print the effective settings with their source (default, the TOML file named by
    SONOBRIDGE_CONFIG, or the environment), flag unknown SONOBRIDGE_* variables and invalid
    values. Exit status 1 when the settings would stop `sonobridge serve`."""
    rows, problems, error = check(dict(os.environ))
    if error is None:
        table = Table(title="SonoBridge settings 配置")
        for column in ("setting", "environment", "value", "source"):
            table.add_column(column)
        for row in rows:
            if all_settings or row[3] != "default":
                table.add_row(*row)
        console.print(table)
        if not all_settings:
            console.print(f"[dim]{sum(r[3] == 'default' for r in rows)} settings at their "
                          "default (--all lists them)[/dim]")
    for problem in problems:
        console.print(f"[yellow]warning:[/yellow] {problem}")
    if error is not None:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1)
    console.print("[green]settings are valid[/green]")
