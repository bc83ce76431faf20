"""The conformance kit's commands for the implementation guide (see ``app/cli/conformance.py``):
``sonobridge conformance ig`` builds the FHIR NPM package and its HTML site; ``sonobridge ig
load`` puts a package's conformance resources into the server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sonobridge.app.cli.options import DatabaseUrl, DataDir

console = Console(stderr=True)


def capability(base: str) -> dict[str, Any]:
    """The CapabilityStatement the FHIR edge serves, built without opening a database (the
    search parameters are the registry's: the R4 ones and the guide's own)."""
    from sonobridge.conformance.capability import capability_statement
    from sonobridge.conformance.ig.content import DATE
    from sonobridge.core.search.registry import Registry
    from sonobridge.fhir.formats import FORMATS, PATCH_FORMATS
    from sonobridge.fhir.routes import served_interactions

    class _Engine:  # what the builder reads of a SearchEngine: its registry
        registry = Registry()

    engine: Any = _Engine()
    return capability_statement(base, served_interactions(), DATE, engine,
                                formats=FORMATS, patch_formats=PATCH_FORMATS)


def build_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write package.tgz and site/ "
                                                    "into (created).")],
    base: Annotated[str | None, typer.Option(
        "--base", help="FHIR base URL the package's CapabilityStatement names "
                       "(default: the guide's canonical).")] = None,
    site: Annotated[bool, typer.Option("--site/--no-site", help="Also write the HTML site.")
                    ] = True,
) -> None:
    """Build the implementation guide: OUT/package.tgz (FHIR NPM package: profiles with
    snapshot and differential, value sets, code systems, search parameters, the
    CapabilityStatement, the ImplementationGuide, examples) and OUT/site/ (HTML, zh/en)."""
    from sonobridge.conformance.ig.build import build
    from sonobridge.conformance.ig.content import CANONICAL

    started = time.monotonic()
    g = build(out, capability(base or CANONICAL), site=site)
    counts: dict[str, int] = {}
    for res in g.conformance:
        counts[res["resourceType"]] = counts.get(res["resourceType"], 0) + 1
    summary = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    console.print(f"wrote {out / 'package.tgz'}: {summary}, {len(g.examples)} examples")
    if site:
        console.print(f"wrote {out / 'site' / 'index.html'}")
    console.print(f"in {time.monotonic() - started:.1f} s")


def load_command(
    package: Annotated[Path, typer.Argument(help="A FHIR NPM package (.tgz).", exists=True,
                                            dir_okay=False)],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    examples: Annotated[bool, typer.Option(
        "--examples/--no-examples", help="Also load package/example/ (clinical data: not on "
                                         "a production server).")] = False,
) -> None:
    """Load a package's conformance resources (StructureDefinition, ValueSet, CodeSystem,
    SearchParameter, CapabilityStatement, ImplementationGuide, …) into the server's store, each
    created or updated under its own id. Run `sonobridge reindex` after loading new
    SearchParameters."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.conformance.ig.load import load_package
    from sonobridge.core.policy import Policy

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("ig-load", "sonobridge ig load"), "local")
        try:
            loaded = load_package(core.resources, caller, package, examples=examples)
        except (ValueError, OSError) as exc:
            console.print(f"[red]cannot load {package}:[/red] {exc}")
            raise typer.Exit(1) from None
    finally:
        core.close()
    total = sum(loaded.counts.values())
    console.print(f"loaded {total} resources from {package}: "
                  + ", ".join(f"{n} {t}" for t, n in sorted(loaded.counts.items())))
    for reason in loaded.refused:
        console.print(f"[yellow]refused[/yellow] {reason}")
    if loaded.refused:
        raise typer.Exit(1)


def register(conformance_app: typer.Typer, ig_app: typer.Typer) -> None:
    """Add ``conformance ig`` and ``ig load``."""
    conformance_app.command("ig")(build_command)
    ig_app.command("load")(load_command)
