"""Teaching cases (培训): a de-identified copy of a study, a KOS "For Teaching", the report
de-identified alike, and a DocumentReference that describes the case.

``POST /fhir/ImagingStudy/{id}/$teaching-case`` and ``sonobridge teaching add STUDY`` both
call ``Teaching.add``:

1. every instance of the study is de-identified (``core/deid``: Table E.1-1 with the
   ``TEACHING`` options, Clean Pixel Data on every frame) into temporary files; one object
   that cannot be cleaned safely fails the whole case with its 422 and nothing is stored;
2. a Key Object Selection document titled (113004, DCM, "For Teaching") references the key
   images (``keyImage`` = original SOP Instance UIDs; default: every image);
3. the copies and the KOS enter through the one DICOM ingest path (``core/imaging/ingest``),
   so the copy has its own StudyInstanceUID (keyed HMAC of the original), its own pseudo
   Patient and its own ImagingStudy;
4. the study's DiagnosticReport(s) are copied de-identified (``mappings/deid/fhir.py``) and a
   DocumentReference (type 113004, categories for diagnosis codes, keywords, body site,
   difficulty; author; attachment = the copy's DICOMweb study URL) is written — a profiled
   DocumentReference rather than a List because it has the searchable fields a case needs
   (category, type, subject, related, author, description) and an attachment;
5. the publication is audited (an Export AuditEvent naming the original study, which only
   the audit trail keeps: nothing in the case points back to it).

A second case of the same study (same keyed UIDs) or a case made from a de-identified study
is refused with 409 unless ``force``. ``withdraw`` deletes the copy, its report and the case.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from sonobridge.core.access import require
from sonobridge.core.audit import record_of
from sonobridge.core.deid import Cleaned, Deidentifier, load_key
from sonobridge.core.deid.pixels import load_masks
from sonobridge.core.errors import CoreError
from sonobridge.core.limits import limits_of
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller
from sonobridge.mappings.deid import TEACHING, Context, hmac_uid
from sonobridge.mappings.deid.fhir import deidentify_report
from sonobridge.mappings.deid.text import identifying_strings
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.teaching")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
FOR_TEACHING = {"system": DCM, "code": "113004", "display": "For Teaching"}
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
KEYWORD_SYSTEM = "urn:sonobridge:teaching-keyword"
DIFFICULTY_SYSTEM = "urn:sonobridge:teaching-difficulty"
DIFFICULTIES = ("basic", "intermediate", "advanced")
TEACHING_TAG = {"system": "urn:sonobridge:teaching", "code": "teaching-case",
                "display": "teaching case"}
PSEUDED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
           "code": "PSEUDED", "display": "pseudonymized"}
OPERATION_URL = "http://sonobridge.org/fhir/OperationDefinition/teaching-case"
WITHDRAW_URL = "http://sonobridge.org/fhir/OperationDefinition/teaching-case-withdraw"
MAX_INSTANCES = 2000  # one case; a study larger than this is not a teaching case
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1455.1"


@dataclass
class CaseRequest:
    """What a case is published with (besides the study)."""

    key_images: list[str] = field(default_factory=list)  # original SOP Instance UIDs
    keywords: list[str] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)  # Codings
    body_site: dict[str, Any] | None = None  # a Coding
    difficulty: str | None = None
    title: str | None = None
    force: bool = False


@dataclass
class Case:
    document_reference: dict[str, Any]
    study_uid: str
    patient: str | None
    instances: int
    frames: int
    reports: list[str]


class Teaching:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._deid: Deidentifier | None = None

    @property
    def deidentifier(self) -> Deidentifier:
        if self._deid is None:
            settings = self.core.settings
            self._deid = Deidentifier(load_key(settings.deid_key, settings.data_dir / "keys"),
                                      load_masks(settings.deid_masks_file),
                                      limits_of(settings))
        return self._deid

    # ------------------------------------------------------------------ operations

    def operation(self, call: OperationCall) -> OperationResult:
        request = CaseRequest(
            key_images=[str(v) for v in call.params("keyImage")],
            keywords=[str(v) for v in call.params("keyword")],
            diagnoses=[parse_coding(v, "diagnosis") for v in call.params("diagnosis")],
            body_site=parse_coding(call.param("bodySite"), "bodySite")
            if call.param("bodySite") is not None else None,
            difficulty=call.param("difficulty"),
            title=call.param("title"),
            force=str(call.param("force", "false")).lower() == "true")
        case = self.add(call.caller, str(call.res_id), request)
        return OperationResult(case.document_reference, 201, {
            "Location": f"{call.caller.base}/DocumentReference/"
                        f"{case.document_reference['id']}"})

    def withdraw_operation(self, call: OperationCall) -> OperationResult:
        removed = self.withdraw(call.caller, str(call.res_id))
        return OperationResult({"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"teaching case withdrawn: {removed} instance(s) of its "
                           "de-identified copy deleted with its report"}]})

    # ------------------------------------------------------------------ publishing

    def add(self, caller: Caller, study_uid: str, request: CaseRequest) -> Case:
        core = self.core
        require(caller.policy, "DocumentReference", "c")
        if request.difficulty is not None and request.difficulty not in DIFFICULTIES:
            raise CoreError(400, "invalid", f"difficulty must be one of {', '.join(DIFFICULTIES)}",
                            expression=["Parameters.parameter[difficulty]"])
        study = core.resources.read(caller, "ImagingStudy", study_uid)  # the caller may read it
        study_json = _loads(study.content)
        rows = core.archive.instances(study_uid)
        if len(rows) > MAX_INSTANCES:
            raise CoreError(413, "too-costly", f"a teaching case holds at most {MAX_INSTANCES} "
                            f"instances; this study has {len(rows)}")
        deid = self.deidentifier
        new_study = hmac_uid(deid.key, study_uid)
        existed = core.resources.exists("ImagingStudy", new_study)
        if existed and not request.force:
            raise CoreError(409, "duplicate", "this study is a teaching case already (its "
                            "de-identified copy is stored); pass force=true to publish it again")
        with self._scratch() as scratch:
            headers = [self._header(row.blob_key) for row in rows]
            if not request.force and any(str(h.get("PatientIdentityRemoved", "")) == "YES"
                                         for h in headers):
                raise CoreError(409, "duplicate", "this study is de-identified already (Patient "
                                "Identity Removed YES); pass force=true to make a case of it")
            patient = self._patient(caller, study_json)
            ctx = deid.context(headers, TEACHING, _identifying_of_patient(patient))
            try:
                cleaned = self._clean(rows, ctx, scratch)
            except CoreError as exc:
                if core.audit is not None:  # a refused de-identification is audited too
                    core.audit.later(record_of(
                        caller, "hl7-out", "E", "teaching-case", outcome="4", study=study_uid,
                        detail=f"not published: {exc}"[:1000]))
                raise
            keys = self._key_images(cleaned, request.key_images)
            kos = self._kos(scratch, headers, cleaned, keys, ctx, study_uid, request.title)
            stored = self._ingest(caller, [c.path for c in cleaned] + [kos], new_study)
        frames = sum(c.frames for c in cleaned)
        try:
            document, reports, subject = self._publish(
                caller, request, study_uid, study_json, new_study, ctx, cleaned, stored, frames)
        except BaseException:
            # A new copy without its case would block a retry (409): it goes with the failure
            # (a copy that an earlier case holds stays).
            if not existed:
                with contextlib.suppress(CoreError):
                    core.archive.delete(caller.derived(), new_study)
            raise
        log.info("teaching case %s published from a study of %d instances", document["id"],
                 len(rows))
        return Case(document, new_study, subject, stored, frames, reports)

    def _label(self, caller: Caller, writer: Writer, reference: str) -> None:
        """Security label PSEUDED on the copy's ImagingStudy and pseudo Patient (written by
        the ingest path), so that access rules can tell teaching material from identified
        data. A later rebuild of the ImagingStudy (``reindex``) drops the label: a rule
        that grants by the label then grants less, never more."""
        res_type, _, res_id = reference.partition("/")
        stored = writer.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return
        body = _loads(stored.content)
        labels = body.setdefault("meta", {}).setdefault("security", [])
        if any(label.get("code") == PSEUDED["code"] for label in labels):
            return
        labels.append(dict(PSEUDED))
        self.core.resources.update(caller.derived(), res_type, res_id, body, writer=writer)

    def _publish(self, caller: Caller, request: CaseRequest, study_uid: str,
                 study_json: dict[str, Any], new_study: str, ctx: Context,
                 cleaned: list[Cleaned], stored: int, frames: int
                 ) -> tuple[dict[str, Any], list[str], str | None]:
        """The FHIR side of a case, in one transaction: the reports copied, the
        DocumentReference, the audit record."""
        core = self.core
        originals = self._reports(caller, study_uid, study_json)
        with core.store.write() as writer:
            copy = core.resources.current(writer, "ImagingStudy", new_study) or {}
            subject = (copy.get("subject") or {}).get("reference")
            self._label(caller, writer, f"ImagingStudy/{new_study}")
            if isinstance(subject, str):
                self._label(caller, writer, subject)
            reports = []
            for report in originals:
                body = deidentify_report(report, days=ctx.date_shift_days,
                                         identifying=ctx.identifying, subject=subject,
                                         imaging_study=f"ImagingStudy/{new_study}")
                written = core.resources.create(caller.derived(), "DiagnosticReport", body,
                                                writer=writer)
                reports.append(f"DiagnosticReport/{written.stored.id}")
            document = self._document(caller, request, new_study, subject, reports, copy)
            written = core.resources.create(caller, "DocumentReference", document,
                                            writer=writer)
            document = _loads(written.stored.content)
            if core.audit is not None:
                core.audit.in_transaction(writer, record_of(
                    caller, "hl7-out", "E", "teaching-case",  # DCM 110106 Export
                    resource=f"DocumentReference/{document['id']}", study=study_uid,
                    detail=f"de-identified copy {new_study}: {stored} instance(s), "
                           f"{frames} frame(s), options {', '.join(TEACHING.chosen())}",
                    instances=tuple(c.original_sop_instance_uid for c in cleaned)))
        return document, reports, subject

    def withdraw(self, caller: Caller, case_id: str) -> int:
        """Delete the case, its de-identified copy and the copied reports."""
        core = self.core
        require(caller.policy, "DocumentReference", "d")
        stored = core.resources.read(caller, "DocumentReference", case_id)
        case = _loads(stored.content)
        if not any(t.get("code") == TEACHING_TAG["code"] for t in
                   (case.get("meta") or {}).get("tag", [])):
            raise CoreError(400, "invalid", f"DocumentReference/{case_id} is not a teaching case")
        related = [r.get("reference", "") for r in
                   (case.get("context") or {}).get("related", [])]
        removed = 0
        for ref in related:
            if ref.startswith("ImagingStudy/"):
                try:
                    removed += core.archive.delete(caller.derived(), ref.split("/", 1)[1])
                except CoreError as exc:
                    if exc.status != 404:
                        raise
        with core.store.write() as writer:
            for ref in related:
                if ref.startswith("DiagnosticReport/") and core.resources.exists(
                        "DiagnosticReport", ref.split("/", 1)[1], writer):
                    core.resources.delete(caller.derived(), "DiagnosticReport",
                                          ref.split("/", 1)[1], writer=writer)
            core.resources.delete(caller, "DocumentReference", case_id, writer=writer)
        return removed

    # ------------------------------------------------------------------ steps

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="teaching-", dir=self.core.blobs.scratch))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _header(self, key: str) -> Dataset:
        with self.core.blobs.local_copy(key) as path:
            return dcmread(path, stop_before_pixels=True)

    def _clean(self, rows: list[Any], ctx: Context, scratch: Path) -> list[Cleaned]:
        out = []
        for number, row in enumerate(rows):
            with self.core.blobs.local_copy(row.blob_key) as path:
                try:
                    out.append(self.deidentifier.clean_file(path, ctx,
                                                            scratch / f"{number}.dcm"))
                except CoreError as exc:
                    # Named by position and SOP class only: the original UID is identifying.
                    raise CoreError(exc.status, exc.code, f"instance {number + 1} of "
                                    f"{len(rows)} ({UID(row.sop_class_uid).name}): {exc}; "
                                    "nothing was published",
                                    expression=exc.issues[0].expression) from None
        return out

    @staticmethod
    def _key_images(cleaned: list[Cleaned], wanted: list[str]) -> list[Cleaned]:
        images = [c for c in cleaned if c.frames > 0]
        if not wanted:
            return images
        by_original = {c.original_sop_instance_uid: c for c in images}
        unknown = [uid for uid in wanted if uid not in by_original]
        if unknown:
            raise CoreError(400, "invalid", f"keyImage {unknown[0]} is not an image of this "
                            "study", expression=["Parameters.parameter[keyImage]"])
        return [by_original[uid] for uid in wanted]

    def _kos(self, scratch: Path, headers: list[Dataset], cleaned: list[Cleaned],
             keys: list[Cleaned], ctx: Context, study_uid: str, title: str | None) -> Path:
        """A Key Object Selection document (TID 2010) titled 113004 "For Teaching", written
        with pydicom (highdicom's builder wants every referenced object loaded in full)."""
        if not keys:
            raise CoreError(422, "processing", "the study has no image to teach from")
        first = dcmread(cleaned[0].path, stop_before_pixels=True)
        ds = Dataset()
        for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate",
                        "PatientSex", "PatientAge", "PatientIdentityRemoved",
                        "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                        "ReferringPhysicianName", "StudyID",
                        "LongitudinalTemporalInformationModified"):
            if keyword in first:
                setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                        "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                        "StudyID"):
            if keyword not in ds:
                setattr(ds, keyword, "")
        ds.SOPClassUID = KOS_CLASS
        ds.SOPInstanceUID = hmac_uid(ctx.key, "teaching-kos:" + study_uid)
        ds.SeriesInstanceUID = hmac_uid(ctx.key, "teaching-kos-series:" + study_uid)
        ds.Modality = "KO"
        ds.SeriesNumber = 999
        ds.InstanceNumber = 1
        ds.ReferencedPerformedProcedureStepSequence = Sequence()
        ds.Manufacturer = "SonoBridge"
        ds.ContentDate = str(ds.get("StudyDate", "") or "") or "19000101"
        ds.ContentTime = str(ds.get("StudyTime", "") or "") or "000000"
        ds.ValueType = "CONTAINER"
        ds.ConceptNameCodeSequence = Sequence([_code("113004", "DCM", "For Teaching")])
        ds.ContinuityOfContent = "SEPARATE"
        template = Dataset()
        template.MappingResource = "DCMR"
        template.TemplateIdentifier = "2010"
        ds.ContentTemplateSequence = Sequence([template])
        items = []
        if title:
            text = Dataset()
            text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
            text.ConceptNameCodeSequence = Sequence([_code("113012", "DCM",
                                                           "Key Object Description")])
            text.TextValue = title[:1024]
            items.append(text)
        for key in keys:
            item = Dataset()
            item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
            ref = Dataset()
            ref.ReferencedSOPClassUID = key.sop_class_uid
            ref.ReferencedSOPInstanceUID = key.sop_instance_uid
            item.ReferencedSOPSequence = Sequence([ref])
            items.append(item)
        ds.ContentSequence = Sequence(items)
        series: dict[str, list[Cleaned]] = {}
        for key in keys:
            series.setdefault(key.series_uid, []).append(key)
        evidence = Dataset()
        evidence.StudyInstanceUID = ds.StudyInstanceUID
        evidence.ReferencedSeriesSequence = Sequence([
            _series_item(uid, members) for uid, members in series.items()])
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(KOS_CLASS)
        meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
        meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        ds.file_meta = meta
        path = scratch / "kos.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path

    def _ingest(self, caller: Caller, paths: list[Path], new_study: str) -> int:
        """Store every object through the one ingest path; a failure removes what was stored."""
        core = self.core
        deferred: set[str] = set()
        writer_caller = caller.derived()
        stored = 0
        for path in paths:
            outcome = core.ingest.ingest(core.ingest.receiver.from_file(path), writer_caller,
                                         deferred=deferred, source="teaching")
            if not outcome.ok:
                if stored:
                    core.ingest.sync_studies(deferred, writer_caller)
                    core.archive.delete(writer_caller, new_study)
                raise CoreError(422, "processing", "a de-identified object was refused by "
                                f"the archive: {outcome.message}")
            stored += 1
        core.ingest.sync_studies(deferred, writer_caller)
        return stored

    def _patient(self, caller: Caller, study: dict[str, Any]) -> dict[str, Any] | None:
        ref = (study.get("subject") or {}).get("reference", "")
        if not isinstance(ref, str) or not ref.startswith("Patient/"):
            return None
        try:
            return _loads(self.core.resources.read(caller.derived(), "Patient",
                                                   ref.split("/", 1)[1]).content)
        except CoreError:
            return None

    def _reports(self, caller: Caller, study_uid: str, study: dict[str, Any]
                 ) -> list[dict[str, Any]]:
        """The DiagnosticReports that name this ImagingStudy (found through the subject)."""
        core = self.core
        subject = (study.get("subject") or {}).get("reference")
        if not subject:
            return []
        target = f"ImagingStudy/{study_uid}"
        out = []
        with core.store.write() as writer:
            ids = core.resources.find(writer, "DiagnosticReport", [("subject", subject)],
                                      caller.base, limit=200, caller=caller)
            for res_id in ids:
                report = core.resources.current(writer, "DiagnosticReport", res_id)
                if report and any(r.get("reference", "").endswith(target)
                                  for r in report.get("imagingStudy", [])):
                    out.append(report)
        return out

    def _document(self, caller: Caller, request: CaseRequest, new_study: str,
                  subject: str | None, reports: list[str], copy: dict[str, Any]
                  ) -> dict[str, Any]:
        categories: list[dict[str, Any]] = [
            {"coding": [coding], "text": coding.get("display") or coding.get("code")}
            for coding in request.diagnoses]
        if request.body_site:
            categories.append({"coding": [request.body_site]})
        categories += [{"coding": [{"system": KEYWORD_SYSTEM, "code": kw.strip().lower()}],
                        "text": kw.strip()} for kw in request.keywords if kw.strip()]
        if request.difficulty:
            categories.append({"coding": [{"system": DIFFICULTY_SYSTEM,
                                           "code": request.difficulty}]})
        modalities = sorted({m.get("code") for m in copy.get("modality", []) if m.get("code")})
        document: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "meta": {"tag": [dict(TEACHING_TAG)], "security": [dict(PSEUDED)]},
            "status": "current",
            "type": {"coding": [dict(FOR_TEACHING)], "text": "Teaching case"},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "description": (request.title or "Ultrasound teaching case")[:1000],
            "content": [{"attachment": {
                "contentType": "application/dicom",
                "url": f"{self.core.settings.public_root}/dicomweb/studies/{new_study}",
                "title": f"De-identified study ({', '.join(modalities) or 'US'})"}}],
            "context": {"related": [{"reference": f"ImagingStudy/{new_study}"}]
                        + [{"reference": r} for r in reports]},
        }
        if categories:
            document["category"] = categories
        if subject:
            document["subject"] = {"reference": subject}
        author = caller.policy.fhir_user
        if author:
            document["author"] = [{"reference": author}]
        return document


def _series_item(uid: str, members: list[Cleaned]) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = uid
    refs = []
    for member in members:
        ref = Dataset()
        ref.ReferencedSOPClassUID = member.sop_class_uid
        ref.ReferencedSOPInstanceUID = member.sop_instance_uid
        refs.append(ref)
    item.ReferencedSOPSequence = Sequence(refs)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def parse_coding(value: Any, name: str) -> dict[str, Any]:
    """A Coding parameter: a Coding, or ``system|code`` text."""
    if isinstance(value, dict) and value.get("code"):
        return {k: v for k, v in value.items() if k in ("system", "code", "display")}
    if isinstance(value, str) and value.strip():
        system, _, code = value.rpartition("|")
        return {"system": system, "code": code} if system else {"code": code}
    raise CoreError(400, "invalid", f"{name} must be a Coding or system|code",
                    expression=[f"Parameters.parameter[{name}]"])


def _identifying_of_patient(patient: dict[str, Any] | None) -> tuple[str, ...]:
    """The FHIR Patient's names, identifiers and birth date, as text to clean away."""
    if not patient:
        return ()
    names = []
    for name in patient.get("name", []):
        if name.get("text"):
            names.append(str(name["text"]))
        parts = [*name.get("given", []), name.get("family", "")]
        names.append(" ".join(p for p in parts if p))
        if name.get("family"):
            names.append(str(name["family"]))
    ids = [str(i.get("value", "")) for i in patient.get("identifier", [])]
    dates = [str(patient.get("birthDate", ""))]
    return identifying_strings(names, ids, dates)


def _loads(content: Any) -> dict[str, Any]:
    from sonobridge.jsonio import loads
    value: dict[str, Any] = loads(content)
    return value


def attach(core: Core) -> None:
    service = Teaching(core)
    core.teaching = service  # type: ignore[attr-defined]
    core.operations.register(Operation(
        "teaching-case", frozenset({"instance"}), service.operation,
        types=frozenset({"ImagingStudy"}), affects_state=True, definition=OPERATION_URL,
        documentation="Publish a de-identified copy of this study as a teaching case "
                      "(PS3.15 Basic Profile with Clean Pixel Data; KOS For Teaching)"))
    core.operations.register(Operation(
        "teaching-case-withdraw", frozenset({"instance"}), service.withdraw_operation,
        types=frozenset({"DocumentReference"}), affects_state=True, definition=WITHDRAW_URL,
        documentation="Withdraw a teaching case: its de-identified copy and report are "
                      "deleted"))


def teaching_of(core: Core) -> Teaching:
    service = getattr(core, "teaching", None)
    if isinstance(service, Teaching):
        return service
    return Teaching(core)
