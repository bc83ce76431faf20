"""Backup, restore and verify: the database, the blobs and the keys, with a manifest that proves
what a backup holds.

A backup is a directory::

    manifest.json          what is here: every file with its size and SHA-256, counts, the
                           database kind; written last, so a backup without it is not one
    database.sqlite        SQLite's online backup API (a consistent copy while writes go on)
      or database.pgdump   ``pg_dump --format=custom`` (one snapshot: consistent)
    blobs/…                every blob of the file store, checked against the index's SHA-256
      or blobs.json        for an S3 store: the object keys, sizes and hashes (the objects stay
                           in the bucket: keep its versioning on)
    keys/…                 the token-signing keys and sealed secrets of the data directory

It is written into ``DEST.partial`` and renamed to ``DEST`` only when complete, so a full disk or
a crash leaves something that is plainly not a backup. Restore checks every file against the
manifest before it touches the target (a tampered or truncated backup is refused), and refuses a
target that holds data unless forced.

Written here rather than with a backup tool because the three parts must agree: the blobs
copied are the ones the database snapshot indexes, each checked against its recorded hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import create_engine, select, text

from sonobridge.store.blobs import BlobStore, FileBlobStore
from sonobridge.store.db import normalise_url
from sonobridge.store.tables import dicom_instances

FORMAT = 1
CHUNK = 8 * 1024 * 1024  # large reads: hashing and copying run near disk speed
Progress = Callable[[str, int, int], None]  # (step, done, total)


class BackupError(RuntimeError):
    """What went wrong, said so that an operator can act on it."""


@dataclass
class Summary:
    """What a backup, restore or verification found."""

    files: int = 0
    bytes: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(url: str) -> Path:
    return Path(url.split("///", 1)[1].split("?", 1)[0])


def _pg_conninfo(url: str) -> tuple[str, list[str]]:
    """A libpq URI for pg_dump/pg_restore, and ``--schema`` when the URL's options set a
    search_path (one schema of a shared database)."""
    parts = urlsplit(normalise_url(url).replace("postgresql+psycopg://", "postgresql://"))
    options = parse_qs(parts.query).get("options", [""])[0]
    schema = []
    for option in unquote(options).split():
        if option.startswith("-csearch_path="):
            schema = ["--schema", option.split("=", 1)[1]]
    return parts._replace(query="").geturl(), schema


def _run(args: list[str], what: str) -> None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BackupError(f"{args[0]} is not installed: install the PostgreSQL client "
                          f"(Debian: postgresql-client) to {what}") from None
    if result.returncode != 0:
        raise BackupError(f"{args[0]} failed ({what}): {result.stderr.strip()[:500]}")


def _instances(url: str) -> Iterator[tuple[str, int, str]]:
    """(blob key, size, SHA-256) of every indexed DICOM instance of the database at ``url``."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            t = dicom_instances
            yield from ((r.blob_key, r.size, r.sha256) for r in conn.execute(
                select(t.c.blob_key, t.c.size, t.c.sha256).order_by(t.c.id)))
    finally:
        engine.dispose()


def backup(database_url: str, blobs: BlobStore, keys_dir: Path, dest: Path,
           progress: Progress | None = None) -> Summary:
    """Back up online into ``dest`` (which must not exist). See the module docstring."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty: back up into a new directory")
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, mode=0o700)
    try:
        summary = _write_backup(database_url, blobs, keys_dir, partial, progress)
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def _write_backup(database_url: str, blobs: BlobStore, keys_dir: Path, out: Path,
                  progress: Progress | None) -> Summary:
    say = progress or (lambda step, done, total: None)
    files: dict[str, dict[str, Any]] = {}
    url = normalise_url(database_url)
    say("database", 0, 1)
    if url.startswith("sqlite"):
        kind, target = "sqlite", out / "database.sqlite"
        source = sqlite3.connect(str(_sqlite_path(url)))
        copy = sqlite3.connect(str(target))
        try:
            source.backup(copy)  # online: a consistent copy while the gateway writes
        finally:
            copy.close()
            source.close()
        snapshot_url = f"sqlite:///{target}"
    else:
        kind, target = "postgresql", out / "database.pgdump"
        conninfo, schema = _pg_conninfo(url)
        _run(["pg_dump", "--format=custom", "--no-owner", *schema, "--file", str(target),
              conninfo], "dump the database")
        snapshot_url = url
    say("database", 1, 1)
    # The blobs the snapshot indexes (for PostgreSQL, the live index: rows added after the
    # dump only add blobs the backup does not need).
    instances = list(_instances(snapshot_url)) if kind == "sqlite" else \
        list(_instances(url))
    summary = Summary()
    file_store = isinstance(blobs, FileBlobStore)
    listing: list[dict[str, Any]] = []
    for done, (key, size, sha256) in enumerate(instances, 1):
        if file_store:
            copied = out / "blobs" / key
            copied.parent.mkdir(parents=True, exist_ok=True)
            digest, written = hashlib.sha256(), 0
            try:
                with copied.open("wb") as f:
                    for chunk in blobs.stream(key, chunk=CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
            except FileNotFoundError:
                copied.unlink(missing_ok=True)
                summary.problems.append(f"blob {key} is missing (deleted during the backup, "
                                        "or lost: run `sonobridge verify`)")
                continue
            if digest.hexdigest() != sha256 or written != size:
                raise BackupError(f"blob {key} does not match its recorded SHA-256: the store "
                                  "is damaged; run `sonobridge verify` before backing up")
            files[f"blobs/{key}"] = {"size": size, "sha256": sha256}  # hashed while copied
        else:
            listing.append({"key": key, "size": size, "sha256": sha256})
        summary.blobs += 1
        say("blobs", done, len(instances))
    if not file_store:
        (out / "blobs.json").write_text(json.dumps(listing))
    if keys_dir.is_dir():
        shutil.copytree(keys_dir, out / "keys")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = path.relative_to(out).as_posix()
        if name not in files:
            files[name] = {"size": path.stat().st_size, "sha256": _sha256_file(path)}
    summary.files = len(files)
    summary.bytes = sum(f["size"] for f in files.values())
    manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "database": kind, "blob_store": "files" if file_store else "s3",
                "counts": {"instances": len(instances), "blobs": summary.blobs,
                           "files": len(files)},
                "missing": summary.problems, "files": files}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    with tmp.open("rb") as manifest_file:
        os.fsync(manifest_file.fileno())
    tmp.rename(out / "manifest.json")
    return summary


def check_backup(src: Path, progress: Progress | None = None) -> dict[str, Any]:
    """The manifest, once every file it lists is there with its size and SHA-256 and no
    other file is; otherwise ``BackupError`` naming what differs."""
    say = progress or (lambda step, done, total: None)
    manifest_path = src / "manifest.json"
    if not manifest_path.is_file():
        raise BackupError(f"{src} has no manifest.json: it is not a complete backup")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise BackupError(f"{manifest_path} is not readable JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {FORMAT}")
    listed: dict[str, dict[str, Any]] = manifest["files"]
    present = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    present.discard("manifest.json")
    extra = sorted(present - set(listed))
    if extra:
        raise BackupError(f"files not in the manifest: {', '.join(extra[:5])}")
    for done, (name, meta) in enumerate(sorted(listed.items()), 1):
        path = src / name
        if not path.is_file():
            raise BackupError(f"{name} is listed in the manifest but missing")
        if path.stat().st_size != meta["size"] or _sha256_file(path) != meta["sha256"]:
            raise BackupError(f"{name} does not match its checksum: the backup was changed "
                              "or damaged; it is not restored")
        say("checking", done, len(listed))
    return manifest


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _target_holds_data(database_url: str) -> bool:
    url = normalise_url(database_url)
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        return path.exists() and path.stat().st_size > 0
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_name IN ('resources', 'alembic_version')"
            )).scalar_one())
    finally:
        engine.dispose()


def restore(src: Path, database_url: str, blobs: BlobStore, keys_dir: Path, *,
            force: bool = False, progress: Progress | None = None) -> Summary:
    """Restore a checked backup into an empty target (or, ``force``, over one)."""
    say = progress or (lambda step, done, total: None)
    manifest = check_backup(src, progress)
    url = normalise_url(database_url)
    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if kind != manifest["database"]:
        raise BackupError(f"the backup holds a {manifest['database']} database; the target is "
                          f"{kind} (restore into the same kind, then migrate data if needed)")
    if not force and (_target_holds_data(url) or next(iter(blobs.keys("")), None) is not None):
        raise BackupError("the target already holds data: restore into an empty data "
                          "directory and database, or pass --force to overwrite")
    summary = Summary()
    say("database", 0, 1)
    if kind == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copyfile(src / "database.sqlite", tmp)
        tmp.replace(target)
    else:
        conninfo, _ = _pg_conninfo(url)  # the dump holds only what it was made of
        _run(["pg_restore", "--no-owner", "--clean", "--if-exists", "--dbname",
              conninfo, str(src / "database.pgdump")], "restore the database")
    say("database", 1, 1)
    blob_files = sorted(name for name in manifest["files"] if name.startswith("blobs/"))
    for done, name in enumerate(blob_files, 1):
        key = name[len("blobs/"):]
        blobs.put(key, _chunks(src / name))
        summary.blobs += 1
        say("blobs", done, len(blob_files))
    if (src / "keys").is_dir():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (src / "keys").iterdir():
            shutil.copy2(path, keys_dir / path.name)
            (keys_dir / path.name).chmod(0o600)
    summary.files = len(manifest["files"])
    return summary


def orphan_rows(database_url: str) -> int:
    """Instances whose series or study row is missing (an index that is not whole)."""
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM dicom_instances i WHERE NOT EXISTS (SELECT 1 FROM "
                "dicom_series s WHERE s.series_uid = i.series_uid) OR NOT EXISTS (SELECT 1 "
                "FROM dicom_studies t WHERE t.study_uid = i.study_uid)")).scalar_one())
    finally:
        engine.dispose()


def verify_blobs(database_url: str, blobs: BlobStore, *, hashes: bool = True,
                 progress: Progress | None = None) -> Summary:
    """Every indexed instance's blob present with its size (and SHA-256 when ``hashes``)."""
    say = progress or (lambda step, done, total: None)
    summary = Summary()
    instances = list(_instances(database_url))
    for done, (key, size, sha256) in enumerate(instances, 1):
        say("blobs", done, len(instances))
        try:
            if hashes:
                digest, read = hashlib.sha256(), 0
                for chunk in blobs.stream(key, chunk=CHUNK):
                    digest.update(chunk)
                    read += len(chunk)
                ok = read == size and digest.hexdigest() == sha256
            else:
                ok = blobs.size(key) == size
        except FileNotFoundError:
            summary.problems.append(f"blob {key} is missing")
            continue
        if not ok:
            summary.problems.append(f"blob {key} does not match its recorded "
                                    f"{'SHA-256' if hashes else 'size'}")
        summary.blobs += 1
        summary.bytes += size
    return summary
