"""Export jobs kept in the blob store: ``export/<job id>/`` beside the DICOM blobs.

A job is a key prefix holding ``job.json`` (its state, request, owner and outputs), the NDJSON
files it wrote, and two markers: ``cancelled`` (DELETE) and ``ended`` (completed or failed).
Blobs, not table rows nor local files: a job survives a restart without a migration, and every
worker of every node that shares the blob store (``SONOBRIDGE_BLOB_URL``: a directory, or an
S3 bucket for several nodes) sees the same jobs and serves the same files, whichever process
ran the job. A blob is replaced whole (file store: write + rename; S3: a put is atomic), so a
reader never sees half of ``job.json`` or of a file.

States: ``in-progress`` (running; ``heartbeat`` is refreshed while it runs, and a job whose
heartbeat has stopped is taken over and started again), ``completed``, ``failed``. The
``ended`` marker lets a listing alone tell the jobs still running (counted against the limit)
from the ended ones, without reading every ``job.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sonobridge.store.blobs import BlobKeyError, BlobStore

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
FILE_NAME = re.compile(r"^[A-Za-z]{1,64}-[0-9]{1,6}\.ndjson$")
PREFIX = "export/"
STATE = "job.json"
CANCELLED = "cancelled"
ENDED = "ended"


@dataclass
class Output:
    type: str
    file: str
    count: int = 0


@dataclass
class Job:
    id: str
    owner: dict[str, Any]  # the policy's fields (to run as the caller after a restart)
    request: dict[str, Any]
    base: str
    state: str = "in-progress"
    created: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.time)
    finished: float | None = None
    transaction_time: str | None = None
    attempt: int = 1
    done: int = 0  # resources written so far
    progress: str = "queued"
    outputs: list[Output] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "request": self.request, "base": self.base,
                "state": self.state, "created": self.created, "heartbeat": self.heartbeat,
                "finished": self.finished, "transaction_time": self.transaction_time,
                "attempt": self.attempt, "done": self.done, "progress": self.progress,
                "outputs": [o.__dict__ for o in self.outputs], "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        outputs = [Output(**o) for o in data.pop("outputs", [])]
        return cls(**data, outputs=outputs)


class JobStore:
    """The jobs in one blob store; ``lock`` is a local file that serialises, on this node,
    counting and creating jobs and claiming a stale one (an object store has no lock: across
    nodes the job limit is approximate, and two nodes taking over the same stale job settle
    on one at the next heartbeat, since each checks the attempt it runs is still the job's)."""

    def __init__(self, blobs: BlobStore, lock: Path) -> None:
        self.blobs = blobs
        self.lock = lock

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)

    def key(self, job_id: str, name: str = "") -> str:
        """The blob key of a job's ``name`` (its prefix when empty); ``KeyError`` for an id
        that is not a job id."""
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return f"{PREFIX}{job_id}/{name}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One process and thread of this node at a time counts and creates jobs, or claims
        a stale one."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save(self, job: Job) -> None:
        self.blobs.put(self.key(job.id, STATE), [orjson.dumps(job.to_json())])

    def load(self, job_id: str) -> Job | None:
        try:
            data = orjson.loads(b"".join(self.blobs.stream(self.key(job_id, STATE))))
        except (KeyError, BlobKeyError, FileNotFoundError, orjson.JSONDecodeError):
            return None
        return Job.from_json(data)

    def cancelled(self, job_id: str) -> bool:
        return self.blobs.exists(self.key(job_id, CANCELLED))

    def cancel(self, job_id: str) -> None:
        self.blobs.put(self.key(job_id, CANCELLED), [b""])

    def end(self, job: Job) -> None:
        """Save an ended (completed or failed) job, then mark it ended."""
        self.save(job)
        self.blobs.put(self.key(job.id, ENDED), [b""])

    def exists(self, job_id: str) -> bool:
        """Whether anything of the job is left (its state, files or markers)."""
        return next(iter(self.blobs.keys(self.key(job_id))), None) is not None

    def remove(self, job_id: str) -> None:
        """The state first (the job is gone for every reader at once), then the rest."""
        self.blobs.delete(self.key(job_id, STATE))
        for key in list(self.blobs.keys(self.key(job_id))):
            self.blobs.delete(key)

    def delete_files(self, job_id: str) -> None:
        """The job's NDJSON files (a job started again, or failed)."""
        for key in list(self.blobs.keys(self.key(job_id))):
            if FILE_NAME.match(key.rsplit("/", 1)[-1]):
                self.blobs.delete(key)

    def listing(self) -> dict[str, set[str]]:
        """Every job id present, with the names under it (one listing of the store)."""
        found: dict[str, set[str]] = {}
        for key in self.blobs.keys(PREFIX):
            parts = key[len(PREFIX):].split("/")
            if len(parts) == 2 and JOB_ID.match(parts[0]):
                found.setdefault(parts[0], set()).add(parts[1])
        return found

    def all(self) -> Iterator[Job]:
        for job_id, names in self.listing().items():
            if STATE in names:
                job = self.load(job_id)
                if job is not None:
                    yield job

    def file(self, job_id: str, name: str) -> str:
        """The blob key of one of the job's NDJSON files."""
        if not FILE_NAME.match(name):
            raise KeyError(name)
        return self.key(job_id, name)

    def put_file(self, job_id: str, name: str, path: Path) -> None:
        """Take a finished file (in the blob store's scratch folder) in as the job's
        ``name``; the local file is consumed."""
        self.blobs.put_file(path, self.file(job_id, name))
