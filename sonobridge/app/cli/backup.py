"""``sonobridge backup``, ``restore`` and ``verify``: the data an operator must be able to get
back (``store/backup.py`` does the work; this is progress bars and messages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sonobridge.app.cli.options import DatabaseUrl, DataDir

console = Console()


def _open(data_dir: Path | None, database_url: str | None) -> Any:
    from sonobridge.app.cli.main import _settings
    from sonobridge.store.blobs import open_blob_store

    settings = _settings(data_dir=data_dir, database_url=database_url)
    blobs = open_blob_store(settings.resolved_blob_url, settings.data_dir / "incoming")
    return settings, blobs


def _bar() -> tuple[Any, Any]:
    from sonobridge.app.cli.main import _progress

    progress = _progress()
    tasks: dict[str, Any] = {}

    def advance(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = progress.add_task(step, total=total)
        progress.update(tasks[step], completed=done, total=total)

    return progress, advance


def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new directory for the backup.")],
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Back up while the gateway runs: the database (SQLite online backup, or pg_dump), every
    blob checked against its recorded SHA-256 (an S3 store: a list of its objects and hashes),
    and the signing keys, with a manifest of every file's checksum, written last. 在线备份。"""
    from sonobridge.store.backup import BackupError, backup

    settings, blobs = _open(data_dir, database_url)
    progress, advance = _bar()
    try:
        with progress:
            summary = backup(settings.resolved_database_url, blobs,
                             settings.data_dir / "keys", dest, advance)
    except (BackupError, OSError) as exc:
        console.print(f"[red]backup failed:[/red] {exc}\nNothing was left at {dest} (a "
                      f"partial backup is removed).")
        raise typer.Exit(1) from None
    for problem in summary.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}", soft_wrap=True)
    console.print(f"backup complete: {dest} — {summary.files} files, "
                  f"{summary.bytes / 1e6:.1f} MB, {summary.blobs} DICOM objects")


def restore_command(
    src: Annotated[Path, typer.Argument(help="A backup directory made by `sonobridge backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Restore over a target that already "
                                        "holds data (it is overwritten).")] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Restore a backup into an empty data directory and database, after checking every file
    against the manifest (a changed or damaged backup is refused). Stop the gateway first;
    `sonobridge serve` migrates the restored database if it is older. 恢复备份。"""
    from sonobridge.store.backup import BackupError, restore

    settings, blobs = _open(data_dir, database_url)
    progress, advance = _bar()
    try:
        with progress:
            summary = restore(src, settings.resolved_database_url, blobs,
                              settings.data_dir / "keys", force=force, progress=advance)
    except (BackupError, OSError) as exc:
        console.print(f"[red]restore refused:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"restored {src}: {summary.files} files checked, {summary.blobs} DICOM "
                  "objects. Run `sonobridge verify` to check the result.")


def verify_command(
    hashes: Annotated[bool, typer.Option("--hashes/--sizes", help="Read every blob and check "
                                         "its SHA-256 (default), or only its size.")] = True,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Check the stored data: every indexed DICOM object's blob present with its SHA-256,
    every instance's series and study indexed, and the audit trail's hash chain intact. Exit
    status 1 when anything is wrong. 数据完整性校验。"""
    from sonobridge.core.audit import count, verify
    from sonobridge.store.backup import orphan_rows, verify_blobs
    from sonobridge.store.db import make_engine
    from sonobridge.store.resources import ResourceStore

    settings, blobs = _open(data_dir, database_url)
    url = settings.resolved_database_url
    progress, advance = _bar()
    problems: list[str] = []
    engine = make_engine(url)
    try:
        with progress:
            result = verify_blobs(url, blobs, hashes=hashes, progress=advance)
            problems += result.problems
            orphans = orphan_rows(url)
            if orphans:
                problems.append(f"{orphans} DICOM instances lack their series or study row "
                                "(run `sonobridge reindex`)")
            store = ResourceStore(engine)
            task = progress.add_task("audit events", total=count(store))
            audit = verify(store, lambda n: progress.advance(task, n))
            problems += audit.problems
    finally:
        engine.dispose()
    for problem in problems[:50]:  # whole, not wrapped: a blob key is copied from here
        console.print(f"[red]{problem}[/red]", soft_wrap=True)
    if problems:
        console.print(f"[red]verify found {len(problems)} problems[/red]")
        raise typer.Exit(1)
    console.print(f"all good: {result.blobs} DICOM objects ({result.bytes / 1e6:.1f} MB) "
                  f"{'hashed' if hashes else 'sized'}, index whole, audit chain intact "
                  f"({audit.events} events)")


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("verify")(verify_command)
