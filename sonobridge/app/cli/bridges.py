"""``sonobridge dicom echo|find|move``: SonoBridge as an SCU towards a remote AE; ``status``: its
DICOM queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from pydicom.dataset import Dataset
from rich.console import Console
from rich.table import Table

from sonobridge.app.cli.options import DatabaseUrl, DataDir

if TYPE_CHECKING:
    from sonobridge.config import Settings
    from sonobridge.hie.dimse.peers import Peer as RemotePeer

dicom_app = typer.Typer(help="Talk to a remote DICOM AE (a PACS, a modality) as an SCU; see the "
                        "DICOM queues (status).",
                        no_args_is_help=True)

Peer = Annotated[str, typer.Argument(help="A known peer's AE title (SONOBRIDGE_DICOM_PEERS) or "
                                          "AET@host:port.")]
Keys = Annotated[list[str] | None, typer.Option(
    "--key", "-k", help="Keyword=value (repeatable), e.g. -k PatientID=123 -k StudyDate=2026*")]


def _peer(text: str) -> tuple[Settings, RemotePeer]:
    from sonobridge.app.cli.main import _settings
    from sonobridge.config import ConfigError
    from sonobridge.hie.dimse.peers import load_peers, parse_peer

    settings = _settings()
    try:
        peers = load_peers(settings)
        peer = peers.get(text) or parse_peer(text)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return settings, peer


def _identifier(level: str, keys: list[str] | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for item in keys or []:
        keyword, _, value = item.partition("=")
        setattr(ds, keyword.strip(), value)
    return ds


@dicom_app.command("echo")
def echo(peer: Peer) -> None:
    """C-ECHO: is the remote AE there and does it talk to us?"""
    from sonobridge.hie.dimse import scu

    settings, target = _peer(peer)
    try:
        status = scu.echo(settings.dicom_aet, target)
    except scu.ScuError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    print(f"C-ECHO {target.aet}@{target.host}:{target.port}: status 0x{status:04X}")
    if status != 0:
        raise typer.Exit(1)


@dicom_app.command("find")
def find(peer: Peer, level: Annotated[str, typer.Option(
        help="PATIENT, STUDY, SERIES or IMAGE")] = "STUDY", keys: Keys = None,
         patient_root: Annotated[bool, typer.Option("--patient-root")] = False) -> None:
    """C-FIND: list what the remote AE has (keys with no value are returned)."""
    from sonobridge.hie.dimse import scu

    settings, target = _peer(peer)
    identifier = _identifier(level, keys)
    try:
        results = list(scu.find(settings.dicom_aet, target, identifier, patient_root))
    except scu.ScuError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    columns = [e.keyword for e in identifier if e.keyword != "QueryRetrieveLevel"]
    table = Table(*columns)
    for ds in results:
        table.add_row(*(str(ds.get(c, "")) for c in columns))
    Console().print(table)
    Console(stderr=True).print(f"{len(results)} matches")


@dicom_app.command("move")
def move(peer: Peer, destination: Annotated[str | None, typer.Option(
        "--to", help="The AE title the remote AE should send to (default: ours).")] = None,
         level: Annotated[str, typer.Option(help="PATIENT, STUDY, SERIES or IMAGE")] = "STUDY",
         keys: Keys = None) -> None:
    """C-MOVE: ask the remote AE to send the matching objects to an AE (this one by
    default: they then arrive through the same ingest path as any C-STORE)."""
    from sonobridge.hie.dimse import scu

    settings, target = _peer(peer)
    destination = destination or settings.dicom_aet
    try:
        status, done, failed = scu.move(settings.dicom_aet, target, destination,
                                        _identifier(level, keys))
    except scu.ScuError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    print(f"C-MOVE to {destination}: status 0x{status & 0xFFFF:04X}, {done} sent, "
          f"{failed} failed")
    if status != 0:
        raise typer.Exit(1)


@dicom_app.command("status")
def status(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """The DICOM queues: objects waiting to be forwarded (routing rules) and Storage
    Commitment reports waiting to be delivered, by state, and the latest problems; and the
    patient identity conflicts (a new Patient made because a Patient ID matched several)."""
    import time

    from sonobridge.app.cli.main import _settings
    from sonobridge.core.patients import CONFLICT_SYSTEM
    from sonobridge.core.services import open_core
    from sonobridge.store import queues

    core = open_core(_settings(data_dir=data_dir, database_url=database_url),
                     run_migrations=False)
    try:
        engine = core.engine
        forwards = queues.dicom_forwards(engine).report(["destination"],
                                                        ["destination", "sop_uid"])
        commitments = queues.dicom_commitments(engine).report(
            ["requester"], ["requester", "transaction_uid"])
        conflicts, latest_conflicts = core.patients.conflicts()
    finally:
        core.close()
    console = Console()
    print(f"patient identity conflicts: {conflicts} (Patients made new because a Patient ID "
          f"matched more than one; FHIR: Patient?_tag={CONFLICT_SYSTEM}|conflict)")
    if latest_conflicts:
        table = Table("patient", "identifiers", "last updated",
                      title="patient identity conflicts: the newest")
        for conflict in latest_conflicts:
            table.add_row(conflict.patient, conflict.identifiers, conflict.updated)
        console.print(table)
    for title, peer, (counts, problems), key in (
            ("forwarding", "destination", forwards, "sop_uid"),
            ("storage commitment", "requester", commitments, "transaction_uid")):
        table = Table(peer, "state", "count", title=title)
        for name, state, count in sorted(counts):
            table.add_row(name, state, str(count))
        console.print(table if counts else f"{title}: nothing queued")
        if problems:
            latest = Table("when (UTC)", peer, key.replace("_", " "), "state", "tries", "error",
                           title=f"{title}: latest problems")
            for row in problems:
                latest.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(
                    row["updated"] / 1e6)), row[peer], row[key], row["status"],
                    str(row["attempts"]), (row["error"] or "")[:80])
            console.print(latest)
