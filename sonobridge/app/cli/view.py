"""``sonobridge view run FILE.json``: a SQL on FHIR ViewDefinition over the local store, to a
file or standard output, with a progress indicator on the terminal.

The command streams (one batch of resources in memory, Parquet one row group), so unlike
``$run`` it has no size bound: it is how a whole year of reports reaches DuckDB or pandas.
A shipped view runs by its id (``sonobridge view run us-reports``); ``view list`` names them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from sonobridge.app.cli.options import DatabaseUrl, DataDir

view_app = typer.Typer(help="SQL on FHIR v2 views: run a ViewDefinition over the store.",
                       no_args_is_help=True)
console = Console(stderr=True)


def _load(spec: str) -> dict[str, Any]:
    from sonobridge.core.views.shipped import SHIPPED

    path = Path(spec)
    if not path.exists() and spec in SHIPPED:
        return SHIPPED[spec]
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {spec}:[/red] {exc}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        console.print(f"[red]{spec} is not a ViewDefinition (a JSON object)[/red]")
        raise typer.Exit(2)
    return body


@view_app.command("run")
def run_command(
    view: Annotated[str, typer.Argument(help="A ViewDefinition JSON file, or the id of a "
                                             "shipped view (see `view list`).")],
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="csv, ndjson, json or parquet.")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: "
                                             "standard output; parquet needs a file).")
                   ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many "
                                              "rows.")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Only this patient's "
                                                "compartment (Patient id).")] = None,
    search: Annotated[list[str] | None, typer.Option(
        "--search", help="A FHIR search parameter NAME=VALUE narrowing the resources read "
                         "through the search index (repeatable), e.g. issued=ge2026-11-01.")
                      ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show rows written and the rate.")] = True,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a view over every resource of its type in the store and write the rows."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.views.definition import compile_view
    from sonobridge.core.views.output import counted, format_of, write
    from sonobridge.core.views.service import RunOptions, ViewService

    body = _load(view)
    try:
        compiled = compile_view(body)
        kind = format_of(fmt, "csv")
    except CoreError as exc:
        for issue in exc.issues:
            where = ", ".join(issue.expression)
            console.print(f"[red]{issue.diagnostics}[/red]" + (f" at {where}" if where else ""))
        raise typer.Exit(2) from None
    query = []
    for item in search or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            console.print(f"[red]--search {item!r}: expected NAME=VALUE[/red]")
            raise typer.Exit(2)
        query.append((name, value))
    if kind == "parquet" and out is None:
        console.print("[red]--format parquet needs --out FILE[/red]")
        raise typer.Exit(2)
    core = open_app_core(_settings(data_dir=data_dir, database_url=database_url))
    sink: IO[bytes] = sys.stdout.buffer if out is None else out.open("wb")
    started = time.monotonic()
    count = 0
    try:
        caller = core.caller(Policy.system("view-run", "sonobridge view run"), "local")
        service = ViewService(core.store, core.search)
        rows = service.run(caller, compiled, RunOptions(patient=patient, limit=limit,
                                                        query=tuple(query)))
        show = progress and console.is_terminal
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
                      console=console, disable=not show) as bar:
            task = bar.add_task(f"{compiled.resource} → {kind}", total=None)
            count = write(kind, compiled.columns,
                          counted(rows, lambda n: bar.advance(task, n)), sink,
                          compiled.types, compiled.collections)
    except CoreError as exc:
        console.print(f"[red]{exc.message}[/red] "
                      f"{', '.join(e for i in exc.issues for e in i.expression)}")
        raise typer.Exit(1) from None
    finally:
        if out is not None:
            sink.close()
        else:
            sink.flush()
        core.close()
    seconds = time.monotonic() - started
    console.print(f"{count:,} rows in {seconds:.1f} s"
                  + (f" ({count / seconds:,.0f} rows/s)" if seconds > 0 else "")
                  + (f" → {out}" if out else ""))


@view_app.command("list")
def list_command() -> None:
    """The views SonoBridge ships (the data behind the QC indicators)."""
    from sonobridge.core.views.shipped import SHIPPED

    for view_id, body in SHIPPED.items():
        print(f"{view_id}\t{body['resource']}\t{body['title']}")
