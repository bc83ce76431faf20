"""``sonobridge hie``: the regional platform exchange from the command line.

``hie status`` counts the XDS submissions queued for the platform (ITI-41 of final reports,
RAD-68 manifests: FHIR Tasks ``urn:sonobridge:xds``) by status and lists the latest failures.
``hie query --patient 110101…`` is the Document Consumer: ITI-18 FindDocuments for the
resident's affinity-domain id at ``SONOBRIDGE_XDS_REGISTRY_URL``, and with ``--out DIR`` each
document retrieved by ITI-43 from the repository that holds it
(``SONOBRIDGE_XDS_REPOSITORY_URL``) into DIR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sonobridge.app.cli.options import DatabaseUrl, DataDir

hie_app = typer.Typer(help="Regional platform exchange (IHE XDS.b/XDS-I.b).",
                      no_args_is_help=True)
console = Console(stderr=True)


@hie_app.command("status")
def status_command(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """XDS submissions to the platform by status, and the latest that failed."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.resources import SearchSpec
    from sonobridge.hie.xds.outbound import QUEUE_SYSTEM, status

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        counts = status(core)
        print(f"repository: {settings.xds_repository_url or '(not set: nothing is sent)'}")
        print("  ".join(f"{name} {count}" for name, count in counts.items()))
        bundle = core.resources.search(core.server, SearchSpec("Task", [
            ("code", f"{QUEUE_SYSTEM}|ITI-41,{QUEUE_SYSTEM}|RAD-68"),
            ("status", "failed,requested"), ("_sort", "-_lastUpdated"), ("_count", "20")])
        ).bundle
        import orjson

        table = Table("Task", "transaction", "status", "focus", "last outcome")
        for entry in bundle.get("entry") or []:
            task = orjson.loads(orjson.dumps(entry["resource"]))
            table.add_row(str(task.get("id")), str(task["code"]["coding"][0]["code"]),
                          str(task.get("status")), str(task.get("focus", {}).get("reference")),
                          str((task.get("businessStatus") or {}).get("text", ""))[:120])
        if table.rows:
            Console().print(table)
    finally:
        core.close()


@hie_app.command("query")
def query_command(
    patient: Annotated[str, typer.Option("--patient", help="The resident's id in the "
                                         "affinity domain (身份证号 by default).")],
    out: Annotated[Path | None, typer.Option("--out", help="Retrieve each document (ITI-43) "
                                             "into this directory.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """ITI-18 FindDocuments at the platform's registry (and ITI-43 with --out)."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.hie.xds import consumer
    from sonobridge.hie.xds.ebrim import cx
    from sonobridge.hie.xds.outbound import client as http_client

    settings = _settings(data_dir=data_dir, database_url=database_url)
    if not settings.xds_registry_url:
        console.print("[red]SONOBRIDGE_XDS_REGISTRY_URL is not set[/red]")
        raise typer.Exit(2)
    import httpx

    try:
        with http_client(settings) as http:
            entries = consumer.find_documents(http, settings.xds_registry_url,
                                              cx(patient, settings.xds_affinity_domain))
            table = Table("uniqueId", "title", "created", "mimeType", "size", "repository")
            for entry in entries:
                table.add_row(entry.unique_id, entry.title, entry.creation_time,
                              entry.mime_type, str(entry.size or ""),
                              entry.repository_unique_id)
            Console().print(table)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                if not settings.xds_repository_url:
                    console.print("[red]SONOBRIDGE_XDS_REPOSITORY_URL is not set[/red]")
                    raise typer.Exit(2)
                for entry in entries:
                    document = consumer.retrieve(http, settings.xds_repository_url,
                                                 entry.repository_unique_id, entry.unique_id)
                    suffix = {"application/xml": ".xml", "text/xml": ".xml",
                              "application/pdf": ".pdf", "application/dicom": ".dcm"
                              }.get(document.mime_type, ".bin")
                    (out / f"{entry.unique_id}{suffix}").write_bytes(document.data)
                    print(f"{out / (entry.unique_id + suffix)}  {len(document.data)} bytes")
    except consumer.ConsumerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except (OSError, httpx.HTTPError) as exc:
        console.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
