"""Bulk Data ``$export`` jobs for a caller: kick-off, status, cancel, files.

The async request pattern of FHIR Bulk Data Access v2: the kick-off (``Prefer: respond-async``
required) answers 202 with ``Content-Location``, the status URL; polling it answers 202 with
``X-Progress`` and ``Retry-After`` while the job runs, then 200 with the manifest (file URLs,
``requiresAccessToken: true``) or a 500 OperationOutcome for a failed job; DELETE cancels. The
edge (``fhir/bulk.py``) serves the status and file URLs; this module decides everything.

Only backend services export: a token with ``system/`` read scopes (or an unrestricted system
caller). Each type is exported only as far as the token's scopes allow, resolved again when
the job runs from the owner recorded with the job, and only the job's owner (same client and
subject) sees its status and files; anyone else gets the 404 an unknown job gets.

A job runs on a thread of the process that accepted it; its state and files are in the blob
store (``jobs.py``), so a poll, a cancel or a download may reach any worker of any node sharing
it. If that process dies, the job's heartbeat stops; the next status poll (on any worker) takes
it over and starts it again from the beginning with a new transaction time, so a manifest never
lists a half-written file. A job is gone for its owner ``SONOBRIDGE_EXPORT_RETENTION`` seconds
after it ends (the job asked for is checked at once); a sweep, at most every ``SWEEP_SECONDS``
per process, deletes the expired jobs and their files.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from sonobridge.core.access import require
from sonobridge.core.errors import CoreError, Issue, info_outcome, operation_outcome
from sonobridge.core.export.jobs import CANCELLED, ENDED, STATE, Job, JobStore, Output
from sonobridge.core.export.params import ExportRequest, parse_request
from sonobridge.core.export.runner import Cancelled, read_contents, write_type
from sonobridge.core.operations import OperationCall, OperationResult
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.validation import known_types
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.tables import resources as R
from sonobridge.store.timeutil import now_us, to_instant

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.core.export")

STATUS_PATH = "/$export-status/"  # + job id, under the FHIR base
FILES_PATH = "/$export-file/"  # + job id + "/" + file name
STALE_SECONDS = 30.0  # a running job's heartbeat older than this: its process is gone
HEARTBEAT_SECONDS = 2.0
MAX_GROUP_MEMBERS = 10_000
RUNNING_AT_ONCE = 2  # jobs writing at the same time per process (the rest wait, queued)
SWEEP_SECONDS = 60.0  # expired jobs are looked for (a listing of the store) at most this often


@dataclass
class Answer:
    """What the edge sends for a status poll or a cancel."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _owner(policy: Policy) -> dict[str, Any]:
    return {"subject": policy.subject, "client_id": policy.client_id,
            "scope": policy.raw_scope, "patient": policy.patient, "role": policy.role,
            "fhir_user": policy.fhir_user, "unrestricted": policy.unrestricted}


def _policy(owner: dict[str, Any]) -> Policy:
    return Policy(subject=owner["subject"], client_id=owner["client_id"],
                  scopes=tuple(resource_scopes(owner.get("scope"))),
                  patient=owner.get("patient"), role=owner.get("role"),
                  fhir_user=owner.get("fhir_user"), raw_scope=owner.get("scope") or "",
                  unrestricted=bool(owner.get("unrestricted")))


def may_export(policy: Policy) -> bool:
    """Backend services only: ``system/`` scopes that read, or an unrestricted caller."""
    return policy.unrestricted or any(s.context == "system" and "r" in s.permissions
                                      for s in policy.scopes)


class ExportService:
    def __init__(self, core: Core) -> None:
        self.core = core
        settings = core.settings
        self.jobs = JobStore(core.blobs, settings.data_dir / "export.lock")
        self.max_jobs = settings.export_max_jobs
        self.retention = settings.export_retention
        self.max_size = settings.export_file_max_size
        self._slots = threading.BoundedSemaphore(RUNNING_AT_ONCE)
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._swept = 0.0

    # ------------------------------------------------------------------ kick-off

    def kickoff(self, call: OperationCall) -> OperationResult:
        caller = call.caller
        policy = caller.policy
        if not may_export(policy):
            raise CoreError(403, "forbidden", "$export is for backend services: the token "
                            "needs system/ read scopes (SMART Backend Services)")
        prefer = call.headers.get("prefer", "")
        if "respond-async" not in prefer.replace(" ", "").lower().split(","):
            raise CoreError(400, "invalid", "$export runs asynchronously: send the header "
                            "Prefer: respond-async", expression=["Prefer"])
        url = f"{caller.base}/{'/'.join(p for p in (call.res_type, call.res_id) if p)}"
        url = url.rstrip("/") + "/$export"
        request = parse_request(call, url, self.core.search.compartment_types())
        for res_type in request.types:
            require(policy, res_type, "r")  # a type asked for by name: 403 if not allowed
        if request.level == "group":
            request.group = call.res_id
            members = self._members(caller, call.res_id or "")
            if request.patients is not None:
                members = [m for m in members if m in set(request.patients)]
            request.patients = members
        self._reap()
        job = Job(id=self.jobs.new_id(), owner=_owner(policy), request=request.to_json(),
                  base=caller.base)
        with self.jobs.locked():
            active = self._active()
            if active >= self.max_jobs:
                raise CoreError(429, "throttled", f"{active} exports are already running or "
                                "queued; try again later", headers={"Retry-After": "60"})
            self.jobs.save(job)
        self._start(job)
        location = f"{caller.base}{STATUS_PATH}{job.id}"
        return OperationResult(None, 202, {"Content-Location": location})

    def _members(self, caller: Caller, group_id: str) -> list[str]:
        """The Patient ids of a Group's active members (the caller must read the Group)."""
        stored = self.core.resources.read(caller, "Group", group_id)
        group = json_loads(stored.content) if stored.content else {}
        members = [m for m in group.get("member", []) if isinstance(m, dict)
                   and not m.get("inactive")]
        if len(members) > MAX_GROUP_MEMBERS:
            raise CoreError(413, "too-costly", f"Group/{group_id} has {len(members)} members; "
                            f"an export takes at most {MAX_GROUP_MEMBERS}")
        out = []
        for member in members:
            ref = str((member.get("entity") or {}).get("reference", ""))
            if ref.startswith("Patient/"):
                out.append(ref.removeprefix("Patient/"))
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ status

    def _active(self) -> int:
        """Jobs queued or running (one listing; the state read only of jobs not ended)."""
        count = 0
        for job_id, names in self.jobs.listing().items():
            if STATE in names and ENDED not in names and CANCELLED not in names:
                job = self.jobs.load(job_id)
                count += job is not None and job.state == "in-progress"
        return count

    def _own(self, caller: Caller, job_id: str) -> Job:
        job = self.jobs.load(job_id)
        policy = caller.policy
        if job is not None and self._expired(job):
            self.jobs.remove(job_id)
            job = None
        if job is None or self.jobs.cancelled(job_id) or \
                job.owner.get("subject") != policy.subject or \
                job.owner.get("client_id") != policy.client_id:
            raise CoreError(404, "not-found", f"no export job {job_id} (unknown, cancelled, "
                            "expired, or not yours)")
        return job

    def _expired(self, job: Job) -> bool:
        return job.finished is not None and time.time() - job.finished > self.retention

    def status(self, caller: Caller, job_id: str) -> Answer:
        self._reap()
        job = self._own(caller, job_id)
        if job.state == "in-progress":
            if time.time() - job.heartbeat > STALE_SECONDS:
                job = self._take_over(job)
            return Answer(202, {"X-Progress": f"{job.progress}: {job.done} resources written",
                                "Retry-After": "2"})
        if job.state == "failed":
            return Answer(500, {}, operation_outcome(
                [Issue("exception", f"the export failed: {job.error}")]))
        expires = (job.finished or time.time()) + self.retention
        return Answer(200, {"Expires": formatdate(expires, usegmt=True)}, self.manifest(job))

    def manifest(self, job: Job) -> dict[str, Any]:
        request = ExportRequest.from_json(job.request)
        return {
            "transactionTime": job.transaction_time,
            "request": request.url + _query(request),
            "requiresAccessToken": True,
            "output": [{"type": o.type, "url": f"{job.base}{FILES_PATH}{job.id}/{o.file}",
                        "count": o.count} for o in job.outputs],
            "error": [],
        }

    def cancel(self, caller: Caller, job_id: str) -> Answer:
        job = self._own(caller, job_id)
        self.jobs.cancel(job_id)
        if job.state != "in-progress" or time.time() - job.heartbeat > STALE_SECONDS:
            self.jobs.remove(job_id)
        return Answer(202, {}, info_outcome(f"export job {job_id} is cancelled"))

    def file(self, caller: Caller, job_id: str, name: str) -> tuple[Iterator[bytes], int]:
        """A completed job's file, for its owner only: its chunks (the read begun, so a
        missing file is a 404 now) and its size."""
        job = self._own(caller, job_id)
        if job.state != "completed" or name not in {o.file for o in job.outputs}:
            raise CoreError(404, "not-found", f"no file {name} in export job {job_id}")
        key = self.jobs.file(job_id, name)
        try:
            return self.core.blobs.stream(key), self.core.blobs.size(key)
        except FileNotFoundError:
            raise CoreError(404, "not-found", f"no file {name} in export job {job_id} (it "
                            "was removed)") from None

    # ------------------------------------------------------------------ running

    def _start(self, job: Job) -> None:
        with self._lock:
            if job.id in self._running:
                return
            self._running.add(job.id)
        threading.Thread(target=self._run, args=(job,), name=f"export-{job.id[:8]}",
                         daemon=True).start()

    def _take_over(self, job: Job) -> Job:
        """A job whose process stopped: start it again here, from the beginning."""
        with self.jobs.locked():
            current = self.jobs.load(job.id)
            if current is None or current.state != "in-progress" or \
                    time.time() - current.heartbeat <= STALE_SECONDS:
                return current or job
            self.jobs.delete_files(job.id)
            current.attempt += 1
            current.heartbeat = time.time()
            current.outputs, current.done, current.progress = [], 0, "restarted"
            self.jobs.save(current)
        log.warning("export job %s: its process stopped; started again (attempt %d)",
                    job.id, current.attempt)
        self._start(current)
        return current

    def _beat(self, job: Job) -> None:
        """Refresh the heartbeat; stop if the job was cancelled or another process took it."""
        if self.jobs.cancelled(job.id):
            raise Cancelled(job.id)
        current = self.jobs.load(job.id)
        if current is None or current.attempt != job.attempt:
            raise Cancelled(job.id)
        job.heartbeat = time.time()
        self.jobs.save(job)

    def _run(self, job: Job) -> None:
        try:
            while not self._slots.acquire(timeout=HEARTBEAT_SECONDS):
                self._beat(job)
            try:
                self._write(job)
            finally:
                self._slots.release()
        except Cancelled:
            if self.jobs.cancelled(job.id):
                self.jobs.remove(job.id)
        except Exception as exc:  # a job fails cleanly, told in its status, never half done
            log.exception("export job %s failed", job.id)
            if not self.jobs.cancelled(job.id):
                job.state, job.finished = "failed", time.time()
                job.error = exc.args[0] if isinstance(exc, CoreError) else type(exc).__name__
                job.outputs = []
                with contextlib.suppress(Exception):  # the store may be what failed
                    self.jobs.delete_files(job.id)
                    self.jobs.end(job)
        finally:
            with self._lock:
                self._running.discard(job.id)

    def _write(self, job: Job) -> None:
        request = ExportRequest.from_json(job.request)
        caller = Caller(_policy(job.owner), job.base, "export")
        until = now_us()
        job.transaction_time = to_instant(until)
        scratch = self.core.blobs.scratch
        last_beat = 0.0

        def check(count: int) -> None:
            nonlocal last_beat
            job.done += count
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                self._beat(job)

        outputs: list[Output] = []
        for res_type in self._types(caller, request):
            job.progress = f"exporting {res_type}"
            check(0)
            outputs += write_type(scratch, res_type, read_contents(
                self.core.store, self.core.search, caller, res_type, request, until),
                request, self.max_size, check,
                lambda name, path: self.jobs.put_file(job.id, name, path))
        self._beat(job)
        job.outputs, job.state, job.finished = outputs, "completed", time.time()
        job.progress = "completed"
        self.jobs.end(job)

    def _types(self, caller: Caller, request: ExportRequest) -> list[str]:
        """The types asked for, or every type held that the caller may read (and, below the
        system level, that belongs to a patient's compartment)."""
        if request.types:
            return request.types
        with self.core.store.reader.connect() as conn:
            held = sorted(conn.execute(select(R.c.res_type).distinct()
                                       .where(R.c.deleted.is_(False))).scalars())
        known = known_types()
        if request.level != "system":
            known = self.core.search.compartment_types() | {"Patient"}
        policy = caller.policy
        return [t for t in held if t in known and
                (policy.unrestricted or policy.grants(t, "r"))]

    def _reap(self, force: bool = False) -> None:
        """Delete jobs (and files) that ended more than the retention time ago, cancelled
        jobs no longer running, and what a removal cut short left (files without a state);
        at most every ``SWEEP_SECONDS`` (each sweep lists the store)."""
        now = time.time()
        with self._lock:
            if not force and now - self._swept < SWEEP_SECONDS:
                return
            self._swept = now
        for job_id, names in self.jobs.listing().items():
            job = self.jobs.load(job_id) if STATE in names else None
            if job is None:
                if STATE not in names:
                    self.jobs.remove(job_id)
                continue
            dropped = CANCELLED in names and now - job.heartbeat > STALE_SECONDS
            if self._expired(job) or dropped:
                self.jobs.remove(job_id)


def _query(request: ExportRequest) -> str:
    parts = []
    if request.types:
        parts.append("_type=" + ",".join(request.types))
    if request.since_text:
        parts.append(f"_since={request.since_text}")
    return ("?" + "&".join(parts)) if parts else ""
