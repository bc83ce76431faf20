"""The ``sonobridge`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sonobridge import __version__
from sonobridge.app.cli.options import DatabaseUrl, DataDir
from sonobridge.config import ENV_NAMES, ConfigError, Settings
from sonobridge.core.policy import Policy

app = typer.Typer(
    name="sonobridge",
    help="SonoBridge: the standards gateway for remote ultrasound (FHIR R4, DICOMweb, DIMSE, "
         "HL7 v2). Settings come from SONOBRIDGE_* environment variables, an optional TOML file "
         "named by SONOBRIDGE_CONFIG, and the options below.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"sonobridge {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """SonoBridge command line."""


def _settings(**overrides: Any) -> Settings:  # passed on to ``Settings.load`` as they are
    try:
        return Settings.load(**overrides)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None




@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address. Env: SONOBRIDGE_HTTP_HOST.")
                    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port. Env: SONOBRIDGE_HTTP_PORT.")
                    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    blob_url: Annotated[str | None, typer.Option(
        "--blob-url", help="Blob store path. Env: SONOBRIDGE_BLOB_URL.")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Public base URL for absolute links (default: from each request, "
                           "honouring X-Forwarded-*). Env: SONOBRIDGE_BASE_URL.")] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text or json. Env: SONOBRIDGE_LOG_FORMAT.")] = None,
    max_body_size: Annotated[str | None, typer.Option(
        "--max-body-size", help="Largest request body, e.g. 64MB. "
                                "Env: SONOBRIDGE_MAX_BODY_SIZE.")] = None,
    sample: Annotated[bool, typer.Option(
        "--sample/--no-sample", help="Load the sample data into an empty database.")] = True,
    tls_cert: Annotated[str | None, typer.Option(
        "--tls-cert", help="Serve HTTPS with this PEM certificate chain (TLS 1.2 or later). "
                           "Env: SONOBRIDGE_TLS_CERT.")] = None,
    tls_key: Annotated[str | None, typer.Option(
        "--tls-key", help="The certificate's private key (PEM). Env: SONOBRIDGE_TLS_KEY.")
                       ] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64,
        help="HTTP worker processes (on PostgreSQL, or SQLite on one host). One of them runs "
             "the MLLP and DIMSE listeners and the senders.")] = 1,
) -> None:
    """Run the gateway: FHIR R4 at /fhir, health at /healthz and /readyz, metrics at /metrics.

    Migrates the database first. With no settings it uses ./data (SQLite + files) on
    127.0.0.1:8080.
    """
    import uvicorn

    from sonobridge import logs
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.app.sample import load_sample
    from sonobridge.app.server import create_app

    settings = _settings(http_host=host, http_port=port, data_dir=data_dir,
                         database_url=database_url, blob_url=blob_url, base_url=base_url,
                         log_format=log_format, max_body_size=max_body_size,
                         tls_cert=tls_cert, tls_key=tls_key)
    tls = None
    if settings.tls_cert:
        from sonobridge.config import ConfigError
        from sonobridge.tls import server_context

        try:  # checked before anything starts: a bad certificate is a clear error, exit 2
            server_context(settings, client_certificates=False)
        except ConfigError as exc:
            console.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from None
        tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key,
               "ssl_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20"}
    if not settings.auth_enabled:
        console.print("[bold red]WARNING: authorization is DISABLED (SONOBRIDGE_AUTH=disabled)."
                      "[/bold red] Every API is open to anyone who can reach "
                      f"{settings.http_host}:{settings.http_port}. Local development only.")
    logs.configure(settings.log_format, settings.log_level)
    try:
        core = open_core(settings)
    except Exception as exc:
        console.print(f"[red]cannot open the store:[/red] {exc}")
        raise typer.Exit(1) from None
    scheme = "https" if tls else "http"
    root = settings.base_url or f"{scheme}://{settings.http_host}:{settings.http_port}"
    loaded = 0
    if sample and not core.store.exists_any():
        loaded = load_sample(core, f"{root}/fhir")
    from sonobridge.conformance.ig.load import ensure_published

    ensure_published(core.resources, core.server)  # GET /fhir/ImplementationGuide/sonobridge
    _banner(settings, root, loaded)
    options: dict[str, Any] = {"host": settings.http_host, "port": settings.http_port,
                               "log_config": None, "access_log": False,
                               "server_header": False, "proxy_headers": False, **(tls or {})}
    if workers > 1:
        core.close()
        # The workers read their settings from the environment: what was given here goes
        # there too, so that every worker runs with the same settings as this command.
        given = {"http_host": host, "http_port": port, "data_dir": data_dir,
                 "database_url": database_url, "blob_url": blob_url, "base_url": base_url,
                 "log_format": log_format, "max_body_size": max_body_size,
                 "tls_cert": tls_cert, "tls_key": tls_key}
        for name, value in given.items():
            if value is not None:
                os.environ[ENV_NAMES[name]] = str(value)
        uvicorn.run("sonobridge.app.worker:create", factory=True, workers=workers, **options)
        return
    app_ = create_app(settings, core, listeners=True)
    uvicorn.run(app_, **options)


def _banner(settings: Settings, root: str, loaded: int) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("FHIR R4 base", f"{root}/fhir")
    table.add_row("CapabilityStatement", f"{root}/fhir/metadata")
    table.add_row("Health", f"{root}/healthz  {root}/readyz")
    table.add_row("Metrics", f"{root}/metrics")
    table.add_row("DICOMweb", f"{root}/dicomweb")
    if settings.mllp_port:
        table.add_row("HL7 v2 (MLLP)", f"{settings.mllp_host}:{settings.mllp_port}")
    if settings.dicom_port:
        table.add_row("DICOM (DIMSE)", f"{settings.dicom_aet} at "
                                       f"{settings.dicom_host}:{settings.dicom_port}")
    if settings.auth_enabled:
        table.add_row("Authorization", f"SMART on FHIR, required; discovery at "
                                       f"{root}/fhir/.well-known/smart-configuration")
    else:
        table.add_row("Authorization", "[red]disabled[/red]")
    table.add_row("Database", _redact(settings.resolved_database_url))
    table.add_row("Blobs", settings.resolved_blob_url)
    if loaded:
        table.add_row("Sample data", f"loaded {loaded} resources, try {root}/fhir/Patient/"
                                     "sample-patient")
    console.print(f"[bold]SonoBridge {__version__}[/bold]")
    console.print(table)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("migrate")
def migrate_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    sql: Annotated[bool, typer.Option(
        "--sql", help="Print the SQL the upgrade would run (PostgreSQL), change nothing.")
                   ] = False,
) -> None:
    """Bring the database schema up to date (also done by `serve` at start). Migrations only
    go forward: to go back, restore the backup taken before the upgrade."""
    from sonobridge.store import migrate
    from sonobridge.store.db import make_engine

    settings = _settings(data_dir=data_dir, database_url=database_url)
    engine = make_engine(settings.resolved_database_url)
    if sql:
        try:
            print(migrate.upgrade_sql(engine), end="")
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        finally:
            engine.dispose()
        return
    before, after = migrate.upgrade(engine)
    if before == after:
        console.print(f"schema already current at revision {after}")
    else:
        console.print(f"migrated {_redact(settings.resolved_database_url)}: "
                      f"{before or 'empty'} -> {after}")
    engine.dispose()


@app.command()
def reindex(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    resource_type: Annotated[list[str] | None, typer.Option(
        "--type", help="Only these resource types (repeatable). Default: all.")] = None,
) -> None:
    """Rebuild the search index from the stored resources.

    Run after adding or changing a custom SearchParameter, or after an upgrade that changes how
    values are indexed. Resources stay readable and searchable while it runs.
    """
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.core.imaging.reindex import count_instances, reindex_dicom
    from sonobridge.core.search.reindex import count_resources
    from sonobridge.core.search.reindex import reindex as run_reindex

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_core(settings)
    types = list(resource_type or []) or None
    with _progress() as progress:
        if not types:
            task = progress.add_task("DICOM instances", total=count_instances(core.store))
            instances = reindex_dicom(core.store, core.blobs, core.studies, core.server,
                                      lambda n: progress.advance(task, n))
        task = progress.add_task("FHIR resources", total=count_resources(core.store, types))
        done = run_reindex(core.store, types, lambda n: progress.advance(task, n))
    if not types:
        console.print(f"rebuilt the index of {instances} DICOM instances")
    console.print(f"reindexed {done} FHIR resources")
    core.close()


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), console=console)


@app.command("import")
def import_command(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched "
                                                     "recursively).", exists=True)],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="List every failed file, not the first 20.")
                       ] = False,
) -> None:
    """Store DICOM files through the same path as STOW-RS and C-STORE (progress bar shown).

    A file that cannot be stored (not DICOM, truncated, attributes no viewer could use) is
    reported with its reason and skipped; the others are stored. Nothing is half-stored and
    no temporary file is left behind. Ends with "N imported, M failed"; the exit status is 1
    when any file failed.
    """
    from sonobridge.app.compose import open_app_core as open_core

    settings = _settings(data_dir=data_dir, database_url=database_url)
    from sonobridge import logs

    logs.quiet_pydicom()
    core = open_core(settings)
    ingest = core.ingest
    caller = core.caller(Policy.system("import", "sonobridge import"), "local")
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))
             if f.is_file()]
    counts: dict[str, int] = {}
    failures: list[str] = []
    warnings: list[str] = []  # stored, with something left out
    try:
        with _progress() as progress:
            task = progress.add_task("importing", total=len(files))
            for path in files:
                try:
                    outcome = ingest.ingest(ingest.receiver.from_file(path), caller,
                                            source=f"import {path}")
                except OSError as exc:  # unreadable file, full disk: say so and go on
                    failures.append(f"{path}: {exc.strerror or exc}")
                else:
                    counts[outcome.status] = counts.get(outcome.status, 0) + 1
                    if not outcome.ok:
                        failures.append(f"{path}: {outcome.message}")
                    warnings.extend(f"{path}: {text}" for text in outcome.warnings)
                progress.advance(task)
    finally:
        core.close()
    for warning in warnings if verbose else warnings[:20]:
        console.print(f"[yellow]warning[/yellow] {escape(warning)}", soft_wrap=True)
    shown = failures if verbose else failures[:20]
    for failure in shown:
        console.print(f"[red]failed[/red] {escape(failure)}", soft_wrap=True)  # grep-able
    if len(failures) > len(shown):
        console.print(f"… and {len(failures) - len(shown)} more (--verbose lists them all)")
    imported = sum(n for status, n in counts.items() if status != "failed")
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())
                       if status != "failed")
    console.print(f"{imported} imported{f' ({detail})' if detail else ''}, "
                  f"{len(failures)} failed")
    if failures:
        raise typer.Exit(1)


@app.command("delete")
def delete_command(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    series: Annotated[str | None, typer.Option("--series", help="Series Instance UID")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="SOP Instance UID")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a DICOM study, series or instance (files, index, and the ImagingStudy)."""
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.core.errors import CoreError

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_core(settings)
    try:
        count = core.archive.delete(core.caller(Policy.system("delete", "sonobridge delete"),
                                                "local"), study, series, instance)
    except CoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    console.print(f"deleted {count} instance{'s' if count != 1 else ''}")


MetricsPort = Annotated[int | None, typer.Option(
    help="Serve Prometheus /metrics on this port (same address as the listener); `serve` has "
         "them on its HTTP port.")]


def _serve_metrics(port: int | None, host: str) -> None:
    """/metrics for a listener run alone: prometheus_client's own small HTTP server."""
    if port is None:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        console.print(f"[red]cannot serve metrics on {host}:{port}: {exc.strerror}[/red]")
        raise typer.Exit(1) from None
    console.print(f"metrics on http://{host}:{port}/metrics")


mllp_app = typer.Typer(help="HL7 v2 over MLLP: run the listener alone, or see the message "
                       "log and the results queue.", invoke_without_command=True)
app.add_typer(mllp_app, name="mllp")


@mllp_app.callback()
def mllp(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Env: SONOBRIDGE_MLLP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Env: SONOBRIDGE_MLLP_PORT.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Run the HL7 v2 MLLP listener alone (``serve`` also runs it), with the results sender
    when SONOBRIDGE_HL7_DESTINATIONS is set."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from sonobridge import logs
    from sonobridge.app import warmup
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.hie.mllp.listener import MllpListener
    from sonobridge.hie.mllp.outbound import OutboxSender

    settings = _settings(data_dir=data_dir, database_url=database_url, mllp_host=host,
                         mllp_port=port)
    logs.configure(settings.log_format, settings.log_level)
    # Before anything starts: a port in use ends the command cleanly, with no thread (the
    # warm-up's, the database's) left running into the interpreter's exit.
    _serve_metrics(metrics_port, settings.mllp_host)
    core = open_core(settings)
    warmup.start(core)
    sender = OutboxSender(core) if settings.sends_results else None

    async def run() -> None:
        listener = MllpListener(core, settings.mllp_host, settings.mllp_port or 2575,
                                settings.hl7_max_message_size)
        await listener.start()
        if sender is not None:
            sender.start()
        console.print(f"HL7 v2 MLLP listener on {settings.mllp_host}:{listener.port}, "
                      f"database {_redact(settings.resolved_database_url)}")
        try:
            await asyncio.Event().wait()
        finally:
            await listener.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        if sender is not None:
            sender.stop()
        core.close()


@mllp_app.command("status")
def mllp_status(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Messages in and out by state, and the latest problems (errors, ACK failures, retries)."""
    import time

    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.hie.mllp.outbound import status

    core = open_core(_settings(data_dir=data_dir, database_url=database_url))
    report = status(core)
    core.close()
    table = Table("direction", "state", "messages")
    for direction, state, count in sorted(report["counts"]):
        table.add_row(direction, state, str(count))
    Console().print(table)
    if report["problems"]:
        problems = Table("when (UTC)", "dir", "type", "control id", "peer", "tries", "error")
        for row in report["problems"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["updated"] / 1e6))
            problems.add_row(when, row["direction"], row["message_type"], row["control_id"],
                             row["destination"] or row["peer"], str(row["attempts"]),
                             (row["error"] or "")[:80])
        Console().print(problems)


@app.command()
def dimse(
    host: Annotated[str | None, typer.Option(help="Env: SONOBRIDGE_DICOM_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Env: SONOBRIDGE_DICOM_PORT.")] = None,
    aet: Annotated[str | None, typer.Option(help="Env: SONOBRIDGE_DICOM_AET.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Run the DICOM DIMSE listener alone (``serve`` also runs it): C-ECHO, C-STORE, C-FIND,
    C-MOVE, C-GET, Modality Worklist, MPPS and Storage Commitment (its reports' queue), and
    the forwarding queue when SONOBRIDGE_DICOM_FORWARD is set."""
    import time

    from sonobridge import logs
    from sonobridge.app import warmup
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.hie.dimse.forward import ForwardSender
    from sonobridge.hie.dimse.scp import DimseServer

    settings = _settings(data_dir=data_dir, database_url=database_url, dicom_host=host,
                         dicom_port=port, dicom_aet=aet)
    logs.configure(settings.log_format, settings.log_level)
    _serve_metrics(metrics_port, settings.dicom_host)  # before anything starts (see mllp)
    core = open_core(settings)
    warmup.start(core)
    server = DimseServer(core)
    server.start()
    # What arrives here is queued for forwarding here: send it from here too.
    forwards = ForwardSender(core) if settings.dicom_forward else None
    if forwards is not None:
        forwards.start()
    console.print(f"DICOM listener {settings.dicom_aet} on {settings.dicom_host}:{server.port}"
                  f", known peers: {', '.join(sorted(server.peers)) or 'none'}"
                  f", forwarding: {'on' if forwards is not None else 'off'}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if forwards is not None:
            forwards.stop()
        core.close()


def _register_auth_commands() -> None:
    from sonobridge.app.cli import auth as cli_auth

    app.add_typer(cli_auth.users_app, name="user")
    app.add_typer(cli_auth.clients_app, name="client")
    app.add_typer(cli_auth.keys_app, name="keys")
    app.add_typer(cli_auth.audit_app, name="audit")
    app.command("launch")(cli_auth.launch_command)
    app.command("dev-setup")(cli_auth.dev_setup)
    from sonobridge.app.cli.bridges import dicom_app

    app.add_typer(dicom_app, name="dicom")
    from sonobridge.app.cli import conformance

    conformance.register(app)
    from sonobridge.app.cli.config_check import config_app

    app.add_typer(config_app, name="config")
    from sonobridge.app.cli import backup

    backup.register(app)
    from sonobridge.app.cli.view import view_app

    app.add_typer(view_app, name="view")
    from sonobridge.app.cli.qc import qc_app

    app.add_typer(qc_app, name="qc")
    from sonobridge.app.cli.hie import hie_app

    app.add_typer(hie_app, name="hie")
    from sonobridge.app.cli.teaching import teaching_app, training_app

    app.add_typer(teaching_app, name="teaching")
    app.add_typer(training_app, name="training")


_register_auth_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
