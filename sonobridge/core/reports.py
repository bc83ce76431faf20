"""Ultrasound reports: the Observations of stored DICOM SRs, and the rules of a
DiagnosticReport's life (STANDARDS.md §8, issue 14).

**SR -> Observations.** Whatever way an SR arrives (STOW-RS, C-STORE, ``import``, a C-MOVE
retrieve), the one ingest path tells ``InstanceStored`` inside the transaction that indexes it.
Here the SR's content tree is taken from the instance's DICOM JSON (as the ingest indexed it in
that same transaction, handed over with the event, or read back from the index row: no second
parse of the file, which is not in the blob store until the commit), mapped by
``mappings/sr.py`` (which walks DICOM JSON), and written through ``core.resources`` on the
same writer: the Observations commit or roll back with the instance.
Each Observation's id is derived from the SR's SOP Instance UID and the item's place in the
tree, so storing the SR again replaces them (and removes those the new version no longer
holds); deleting the SR (``InstanceDeleted``) deletes them; ``POST /fhir/$sr-observations``
maps every stored SR again (``sonobridge reindex`` rebuilds the index without telling
``InstanceStored``). An SR of another template keeps no Observation (a debug line says so);
ill-formed items are skipped with a warning in the log.

**Report status.** A ``ResourceWriting`` rule for DiagnosticReport, as R4 defines the status
codes: registered -> partial -> preliminary -> final, after which a report changes only by
amendment (``amended``, ``corrected``, ``appended``) or is withdrawn (``entered-in-error``);
going back, or changing a final report in place, is 409 (the earlier version stays in the
history). Making a report final, or amending it, is signing it: a user needs the
``remote-expert`` role (403). When a user (a token) writes it, its ``result`` Observations must
be about the report's subject (422, checked after the access checks so the answer reveals
nothing the caller may not read); trusted system callers are not held to it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import bindparam, select

from sonobridge.core.access import require
from sonobridge.core.audit import record_of
from sonobridge.core.errors import CoreError
from sonobridge.core.events import (
    InstanceDeleted,
    InstanceStored,
    ResourceChanged,
    ResourceWriting,
)
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.pdf.report import without_ours
from sonobridge.core.policy import Caller
from sonobridge.core.validation import validate
from sonobridge.mappings.sr import SR_CLASSES, SR_INSTANCE_SYSTEM, map_sr
from sonobridge.store.dicom import index
from sonobridge.store.resources import Writer
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import resources as R

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.reports")

# R4 DiagnosticReport.status, in the order a report moves through them.
RANK = {"registered": 0, "partial": 1, "preliminary": 2, "final": 3,
        "amended": 4, "corrected": 4, "appended": 4}
SIGNED = frozenset({"final", "amended", "corrected", "appended"})
AMENDMENTS = frozenset({"amended", "corrected", "appended", "entered-in-error"})
TERMINAL = frozenset({"cancelled", "entered-in-error"})
SIGNER_ROLE = "remote-expert"
MAX_RESULTS = 500  # result references checked per report write (bounded work)


def attach(core: Core) -> None:
    observations = SrObservations(core)
    observations.listen()
    core.operations.register(Operation(
        "sr-observations", frozenset({"system"}), observations.rebuild_operation,
        affects_state=True, definition="http://sonobridge.org/fhir/OperationDefinition/"
                                       "sr-observations",
        documentation="Map every stored DICOM SR (TID 1500/5000/5100/5200) to Observations "
                      "again, e.g. after sonobridge reindex"))
    ReportRules(core).listen()


# ---------------------------------------------------------------------- SR -> Observations

class SrObservations:
    """Keeps each stored SR's Observations in step with it."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.zone = core.settings.hl7_time_zone  # the site's zone, for DICOM local times
        # The shapes (sets of elements) of mapped Observations checked in full by this core:
        # their structure is the mapping's code, so one of each shows it (``_create_all``).
        self.checked_shapes: set[frozenset[str]] = set()

    def listen(self) -> None:
        self.core.events.listen(InstanceStored, self.stored)
        self.core.events.listen(InstanceDeleted, self.deleted)

    def stored(self, event: InstanceStored) -> None:
        if event.sop_class_uid not in SR_CLASSES:
            return
        writer, caller = event.writer, event.caller.derived()
        # The mapping walks DICOM JSON as the archive keeps it (no pydicom round trip): the
        # ingest's own, or the index row's read back (a rebuild).
        dataset = event.metadata
        if dataset is None:
            row = index.instance(writer.conn, event.sop_uid)
            if row is None:
                return
            try:
                dataset = orjson.loads(row.metadata)
            except orjson.JSONDecodeError as exc:  # made by the ingest path: unlikely
                log.warning("SR %s: its DICOM JSON could not be read back (%s); no "
                            "Observations", event.sop_uid, exc)
                return
        resources = self.core.resources
        if not resources.exists("ImagingStudy", event.study_uid, writer):
            # STOW-RS defers the study's ImagingStudy to the end of the request; the
            # Observations need its subject now.
            self.core.studies.sync(writer, caller, event.study_uid)
        study = resources.current(writer, "ImagingStudy", event.study_uid) or {}
        subject = (study.get("subject") or {}).get("reference")
        mapped = map_sr(dataset, sop_uid=event.sop_uid,
                        study_ref=f"ImagingStudy/{event.study_uid}",
                        subject_ref=subject if isinstance(subject, str) else None,
                        zone=self.zone)
        for warning in mapped.warnings:
            log.warning("SR %s from %s: %s", event.sop_uid, event.source or "?", warning)
        # and the sender hears of it: STOW-RS Warning Reason and header, C-STORE B006
        event.warnings.extend(f"SR content item not mapped: {w}" for w in mapped.warnings)
        if mapped.template is None:
            log.debug("SR %s: root template not TID 1500/5000/5100/5200: kept, no "
                      "Observations", event.sop_uid)
        if not event.new:  # an SR stored before, or a rebuild: what it made goes or is kept
            keep = {str(obs["id"]) for obs in mapped.observations}
            for old in self._derived(writer, caller, event.sop_uid):
                if old not in keep:
                    resources.delete(caller, "Observation", old, writer=writer)
        # (A new SR has made nothing yet: deleting an SR deletes its Observations. Should
        # one of the ids still be taken, _create_all says so and each is updated instead.)
        if not self._create_all(writer, caller, mapped.observations, event.sop_uid):
            for obs in mapped.observations:
                resources.update(caller, "Observation", str(obs["id"]), obs, writer=writer)
        if mapped.observations:
            log.info("SR %s (TID %s): %d Observations", event.sop_uid, mapped.template,
                     len(mapped.observations))

    def _create_all(self, writer: Writer, caller: Caller,
                    observations: list[dict[str, Any]], sop_uid: str = "") -> bool:
        """An SR stored for the first time: its Observations created in one batch (two
        statements: ``Writer.create_many`` with their ids) instead of one update each (a
        read of the current row, two inserts). Each is told to ``ResourceWriting`` and
        ``ResourceChanged`` (audit, subscriptions) as an update-as-create would be, and
        indexed alike; they commit with the instance. False, nothing written, when any of the
        ids is already taken (the SR stored again, or stored after being deleted): then one
        update each, which replaces.

        Not checked one by one: ``mappings/sr.py`` builds them valid R4 and conformant to the
        profile they claim (``tests/mappings/test_sr_valid.py`` holds it to that with
        arbitrary content), and building an R4 model of each and walking the profile for each
        was half of what an SR cost to store. The first Observation of each shape (group,
        measurement, with or without site, method, components) this core writes is still
        checked in full (R4 and profile), so a mapping that breaks its promise fails here,
        loudly, as before."""
        if not observations:
            return True
        ids = [str(obs["id"]) for obs in observations]
        for start in range(0, len(ids), 500):
            taken = writer.conn.execute(_TAKEN, {"ids": ids[start:start + 500]}).first()
            if taken is not None:
                return False
        events = self.core.events
        sampled = _new_shapes(observations, self.checked_shapes)
        for obs in sampled:
            validate(obs, "Observation")
        if events.wants(ResourceWriting):
            for obs in observations:
                events.emit(ResourceWriting(writer, caller, "update", "Observation",
                                            str(obs["id"]), obs, None,
                                            conformant=not any(o is obs for o in sampled)))
        if len(self.checked_shapes) < MAX_SHAPES:  # their checks passed: shown conformant
            self.checked_shapes.update(frozenset(obs) for obs in sampled)
        stored = writer.create_many("Observation", observations, ids)
        if events.wants(ResourceChanged):
            for one, obs in zip(stored, observations, strict=True):
                events.emit(ResourceChanged(writer, caller, "C", "update", one, obs, True,
                                            audited=False))
        # One AuditEvent for the batch, naming every Observation, rather than one each: the
        # SR's import is audited already, and 55 events (each built, indexed and chained)
        # cost more than mapping and storing the Observations themselves.
        audit = self.core.audit
        if audit is not None and caller.audited:
            subject = (observations[0].get("subject") or {}).get("reference")
            audit.in_transaction(writer, record_of(
                caller, "rest", "C", "update",
                patient=subject if isinstance(subject, str) and
                subject.startswith("Patient/") else None,
                detail=f"{len(ids)} Observations made from SR {sop_uid}",
                resources=tuple(f"Observation/{i}" for i in ids)))
        return True

    def rebuild(self, caller: Caller, batch: int = 200) -> int:
        """Map every stored SR again (after ``sonobridge reindex``, which rebuilds the index
        rows but tells no ``InstanceStored``, or after a mapping change); each SR in its own
        transaction. Returns how many SRs were read."""
        done, last = 0, ""
        while True:
            with self.core.store.reader.connect() as conn:
                rows = conn.execute(
                    select(I.c.sop_uid, I.c.study_uid, I.c.series_uid, I.c.sop_class_uid)
                    .where(I.c.sop_class_uid.in_(list(SR_CLASSES)), I.c.sop_uid > last)
                    .order_by(I.c.sop_uid).limit(batch)).all()
            if not rows:
                return done
            for row in rows:
                with self.core.store.write() as writer:
                    self.stored(InstanceStored(writer, caller, row.sop_class_uid, row.sop_uid,
                                               row.study_uid, row.series_uid, "SR", "rebuild"))
                done += 1
            last = rows[-1].sop_uid

    def rebuild_operation(self, call: OperationCall) -> OperationResult:
        """``POST /fhir/$sr-observations``: ``rebuild`` for a caller who may write
        Observations; answers how many SRs were mapped."""
        require(call.caller.policy, "Observation", "c")
        done = self.rebuild(call.caller)
        return OperationResult({"resourceType": "Parameters", "parameter": [
            {"name": "srs", "valueInteger": done}]})

    def deleted(self, event: InstanceDeleted) -> None:
        writer, caller = event.writer, event.caller.derived()
        stmt = select(I.c.sop_uid).where(I.c.study_uid == event.study_uid,
                                         I.c.sop_class_uid.in_(list(SR_CLASSES)))
        if event.series_uid:
            stmt = stmt.where(I.c.series_uid == event.series_uid)
        if event.sop_uid:
            stmt = stmt.where(I.c.sop_uid == event.sop_uid)
        for (sop_uid,) in writer.conn.execute(stmt).all():
            for old in self._derived(writer, caller, sop_uid):
                self.core.resources.delete(caller, "Observation", old, writer=writer)

    def _derived(self, writer: Writer, caller: Caller, sop_uid: str) -> list[str]:
        """The ids of the Observations made from SR ``sop_uid`` (bounded like the mapping):
        one prepared identifier lookup (those written earlier in the transaction included),
        not a search planned for each SR."""
        pair = (SR_INSTANCE_SYSTEM, f"urn:oid:{sop_uid}")
        found = self.core.resources.identifier_matches(writer, "Observation", [pair])
        return sorted(found.get(pair, []))[:5000]


MAX_SHAPES = 256  # shapes remembered as checked (a handful exist)
# Whether any of a batch's Observation ids is taken: one statement, compiled once (an IN of
# literal values built for each SR cost more than the lookup).
_TAKEN = select(R.c.rid).where(R.c.res_type == "Observation",
                               R.c.res_id.in_(bindparam("ids", expanding=True))).limit(1)


def _new_shapes(observations: list[dict[str, Any]], checked: set[frozenset[str]]
                ) -> list[dict[str, Any]]:
    """The first Observation of each set of elements (a group; a measurement with or without
    site, method, components; a qualitative one) not ``checked`` before: what the full
    checks sample."""
    seen: set[frozenset[str]] = set()
    out = []
    for obs in observations:
        shape = frozenset(obs)
        if shape not in seen and shape not in checked:
            seen.add(shape)
            out.append(obs)
    return out


# ---------------------------------------------------------------------- report status

def _status(resource: dict[str, Any] | None) -> str | None:
    status = (resource or {}).get("status")
    return status if isinstance(status, str) else None


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same report, the server's own PDF attachment (``core/pdf``) aside: a client
    sending a signed report again need not echo it."""
    return without_ours(a) == without_ours(b)


def _reference(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


class ReportRules:
    def __init__(self, core: Core) -> None:
        self.core = core

    def listen(self) -> None:
        self.core.events.listen(ResourceWriting, self.writing)
        self.core.events.listen(ResourceChanged, self.changed)

    def writing(self, event: ResourceWriting) -> None:
        if event.res_type != "DiagnosticReport":
            return
        new, old = _status(event.resource), _status(event.previous)
        if event.previous is not None and _same_content(event.resource, event.previous):
            return  # the same report sent again: nothing changes
        if new in SIGNED and new != old:
            self.check_signer(event.caller, new)
        if old is None or event.previous is None:
            return
        where = ["DiagnosticReport.status"]
        if old in TERMINAL:
            raise CoreError(409, "business-rule", f"the report is {old}: it can no longer "
                            "change", expression=where)
        if old in SIGNED:
            if new == old and old == "final":
                raise CoreError(409, "business-rule", "a final report is changed by amendment "
                                "only: set status to amended, corrected or appended (the final "
                                "version stays in the history)", expression=where)
            if new not in AMENDMENTS and new != old:
                raise CoreError(409, "business-rule", f"a {old} report cannot go back to "
                                f"{new}: only amended, corrected, appended or "
                                "entered-in-error", expression=where)
            if new in SIGNED:
                self.check_signer(event.caller, new)
            return
        if new in RANK and old in RANK and RANK[new] < RANK[old]:
            raise CoreError(409, "business-rule", f"a report's status does not go back from "
                            f"{old} to {new}", expression=where)
        if new in AMENDMENTS - {"entered-in-error"}:
            raise CoreError(409, "business-rule", f"a {old} report was never final: it "
                            f"cannot be {new}; make it final first", expression=where)

    @staticmethod
    def check_signer(caller: Caller, status: str) -> None:
        """Only a remote expert signs (final) or amends a report. System callers (an HL7
        feed, the server, a backend service) and development mode have no role: allowed."""
        role = caller.policy.role
        if role is not None and role != SIGNER_ROLE:
            raise CoreError(403, "forbidden", f"setting a report {status} is signing it: "
                            f"that takes the {SIGNER_ROLE} role, not {role}",
                            expression=["DiagnosticReport.status"])

    def changed(self, event: ResourceChanged) -> None:
        stored = event.stored
        if stored.type != "DiagnosticReport" or event.resource is None:
            return
        if event.caller.policy.unrestricted:
            # Trusted system callers (an HL7 feed, a restore, the server, development mode)
            # are trusted with references as with everything else; a user's token is not.
            return
        report = event.resource
        subject = _reference(report.get("subject"))
        results = report.get("result")
        if subject is None or not isinstance(results, list):
            return
        if len(results) > MAX_RESULTS:
            raise CoreError(422, "too-costly", f"a report lists at most {MAX_RESULTS} results",
                            expression=["DiagnosticReport.result"])
        base = event.caller.base.rstrip("/") + "/" if event.caller.base else ""
        wanted = subject.removeprefix(base) if base else subject
        for i, item in enumerate(results):
            ref = _reference(item)
            if ref is None:
                continue
            if base:
                ref = ref.removeprefix(base)
            if not ref.startswith("Observation/"):
                continue
            obs = self.core.resources.current(event.writer, "Observation",
                                              ref.removeprefix("Observation/"))
            if obs is None:
                continue
            about = _reference(obs.get("subject"))
            if about is not None and base:
                about = about.removeprefix(base)
            if about is not None and about != wanted:
                raise CoreError(422, "business-rule", f"result {ref} is about {about}, not "
                                f"the report's subject {wanted}",
                                expression=[f"DiagnosticReport.result[{i}]"])
