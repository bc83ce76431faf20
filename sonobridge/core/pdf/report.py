# ruff: noqa: RUF001  (the report is printed in Chinese: full-width punctuation is meant)
"""The printable ultrasound report (issue 14 item 3): a DiagnosticReport laid out as a Chinese
ultrasound report (超声检查报告单) in PDF, with WeasyPrint from an HTML template
(``report.html``, package data) and the Noto CJK fonts embedded (subset) in the file.

**When.** Making a report final, and each amendment (``amended``, ``corrected``,
``appended``), is the moment it is signed: then the version being written gets a PDF
attachment in ``presentedForm`` pointing at ``Binary/rpdf-…`` (``ResourceWriting``, so the
signed version itself names its PDF and no second version is written for it, which would
also send the HIS a second ORU^R01). The PDF is not made on the request path (≈0.5-1.5 s with
six images): a ``Task`` (code ``report-pdf``, ``focus`` the report's version) is queued in the
same transaction, and ``PdfRenderer`` (a cluster duty: one process renders) makes the PDF of
that exact version and stores it as the Binary, then completes the Task (``failed`` with the
reason when it cannot). Sending the same signed report again keeps its attachment (no new
version); an earlier version's Binary stays (the history keeps the report as it was signed).

**Reading it.** ``GET DiagnosticReport/{id}/$pdf`` (or the read with ``Accept:
application/pdf``) answers the stored PDF of the current version, or, before it is made (or
for a report not yet signed: a draft to proofread), renders it on the spot without storing.

**What it shows.** Institution (the performing Organization), patient line (name, sex, age
at the exam, medical record number), exam (``code``), time, key images, findings (the
``text/plain`` forms, else the string-valued results), the measurements table (numeric
results, a measurement group's members included), impression (``conclusion`` and the
``conclusionCode`` displays), the reporting doctor (the first ``resultsInterpreter``) and the
verifying doctors (the others, else the performing practitioners), issue time. Key images are
the report's ``media`` (a Media whose ``content.url`` is a WADO-RS frame or instance URL,
e.g. ``…/studies/S/series/R/instances/I/frames/1/rendered``); a report without ``media``
shows the first images of its ``imagingStudy``. At most ``MAX_IMAGES``, each rendered by the
archive like ``/rendered``; an image no longer stored is left out with a note on the page.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources as package_files
from typing import TYPE_CHECKING, Any

import jinja2

from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.pdf.engine import weasyprint
from sonobridge.jsonio import loads as json_loads
from sonobridge.mappings.sr import SR_CLASSES
from sonobridge.periodic import Periodic

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.reports.pdf")

PDF = "application/pdf"
SIGNED = frozenset({"final", "amended", "corrected", "appended"})
JOB_SYSTEM = "http://sonobridge.org/fhir/CodeSystem/sono-job"
JOB_CODE = "report-pdf"
BINARY_PREFIX = "rpdf-"
MAX_IMAGES = 6
MAX_MEASUREMENTS = 200  # table rows (bounded work; the rest counted in a note)
MAX_REFERENCES = 400  # resources read for one report, all kinds together
IMAGE_VIEWPORT = (640, 480)
DEFINITION = "http://sonobridge.org/fhir/OperationDefinition/DiagnosticReport-pdf"
_WADO = re.compile(r"studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)"
                   r"(?:/frames/([0-9]+))?")
_OURS = re.compile(rf"^Binary/{BINARY_PREFIX}[0-9a-f]{{32}}$")
STATUS_LABEL = {"amended": "（修订报告）", "corrected": "（更正报告）",
                "appended": "（补充报告）", "preliminary": "（初步报告，未审核）",
                "partial": "（部分报告，未审核）", "registered": "（未出报告）"}
SEX = {"male": "男", "female": "女", "other": "其他", "unknown": "未知"}


def ours(attachment: Any) -> bool:
    """An attachment this module put in ``presentedForm`` (the PDF of a signed version)."""
    return (isinstance(attachment, dict) and attachment.get("contentType") == PDF
            and isinstance(attachment.get("url"), str) and bool(_OURS.match(attachment["url"])))


def without_ours(report: dict[str, Any]) -> dict[str, Any]:
    """The report as its author wrote it: without ``meta``/``id``/``text`` and this module's
    PDF attachment (what decides whether a write changes a signed report)."""
    out = {k: v for k, v in report.items() if k not in ("meta", "id", "text")}
    forms = [f for f in out.get("presentedForm", []) or [] if not ours(f)]
    if forms:
        out["presentedForm"] = forms
    else:
        out.pop("presentedForm", None)
    return out


def is_ultrasound_report(report: dict[str, Any]) -> bool:
    """A report the Chinese ultrasound layout is for: one that claims the guide's report
    profile, reports a study, is categorised as imaging (US, RUS, RAD) or has no category (this
    gateway's reports are ultrasound unless they say otherwise). A report categorised only as
    something else (laboratory, pathology, genetics) gets no ultrasound PDF."""
    profiles = (report.get("meta") or {}).get("profile") or []
    if any(str(p).split("|")[0].endswith("/sono-ultrasound-report") for p in profiles):
        return True
    if report.get("imagingStudy"):
        return True
    codes = {c.get("code") for category in report.get("category") or []
             if isinstance(category, dict) for c in category.get("coding") or []
             if isinstance(c, dict)}
    return not report.get("category") or bool(codes & {"US", "RUS", "RAD"})


def pdf_attachment(report: dict[str, Any]) -> dict[str, Any] | None:
    for form in report.get("presentedForm", []) or []:
        if ours(form):
            return dict(form)
    return None


# ---------------------------------------------------------------------- the page's content

@dataclass
class Page:
    """What the template shows (all text already chosen; the template escapes it)."""

    title: str = "超声检查报告单"
    institution: str = ""
    status_label: str = ""
    patient: dict[str, str] = field(default_factory=dict)
    exam: str = ""
    effective: str = ""
    accession: str = ""
    issued: str = ""
    findings: list[str] = field(default_factory=list)
    impression: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    measurements: list[dict[str, str]] = field(default_factory=list)
    measurements_cut: int = 0
    images: list[dict[str, str]] = field(default_factory=list)
    image_notes: list[str] = field(default_factory=list)
    reporting: str = ""
    verifying: str = ""
    footer_id: str = ""


def _text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding", []) or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _when(value: Any) -> str:
    """A FHIR dateTime as the report prints it (the writer's own offset: local time)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M") if "T" in value else moment.strftime("%Y-%m-%d")


def _age(birth: Any, at: Any) -> str:
    try:
        born = date.fromisoformat(str(birth)[:10])
        then = datetime.fromisoformat(str(at).replace("Z", "+00:00")).date() if at \
            else date.today()
    except ValueError:
        return ""
    years = then.year - born.year - ((then.month, then.day) < (born.month, born.day))
    if years >= 1:
        return f"{years}岁"
    months = (then.year - born.year) * 12 + then.month - born.month - (then.day < born.day)
    return f"{max(months, 0)}月"


def _person_name(resource: dict[str, Any] | None) -> str:
    """A Chinese name as written (``text``, else family name then given names, no space);
    a Latin-script name with a space."""
    if not resource:
        return ""
    names = resource.get("name") or []
    if isinstance(names, list) and names:
        chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"),
                      names[0])
        if not isinstance(chosen, dict):
            return ""
        if chosen.get("text"):
            return str(chosen["text"])
        family = str(chosen.get("family", ""))
        given = [str(g) for g in chosen.get("given", []) or []]
        if _cjk(family + "".join(given)):
            return family + "".join(given)
        return " ".join([*given, family]).strip()
    if isinstance(names, str):  # Organization.name
        return names
    return ""


def _cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value) if value is not None else ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text


def _decode(form: dict[str, Any]) -> list[str]:
    try:
        text = base64.b64decode(str(form.get("data", "")), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return []
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------- the domain

class ReportPdf:
    """Attaches the PDF to signed report versions, renders it, and answers ``$pdf``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        source = package_files.files("sonobridge.core.pdf").joinpath("report.html")
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        self.template = env.from_string(source.read_text("utf-8"))
        self._fonts: Any = None
        self._lock = threading.Lock()

    def listen(self) -> None:
        self.core.events.listen(ResourceWriting, self.writing)
        self.core.events.listen(ResourceChanged, self.changed)

    # ------------------------------------------------------------------ on write

    def writing(self, event: ResourceWriting) -> None:
        """A signed version names its PDF; a version sent again unchanged keeps the one it
        has; a report not signed carries none of ours."""
        if event.res_type != "DiagnosticReport":
            return
        report = event.resource
        status = report.get("status")
        forms = [f for f in report.get("presentedForm", []) or [] if not ours(f)]
        kept = pdf_attachment(event.previous) if event.previous else None
        if status in SIGNED and is_ultrasound_report(report):
            same = event.previous is not None and \
                without_ours(report) == without_ours(event.previous)
            attachment = kept if same and kept else {
                "contentType": PDF, "language": "zh-CN",
                "url": f"Binary/{BINARY_PREFIX}{uuid.uuid4().hex}",
                "title": "超声检查报告单 (PDF)",
                "creation": datetime.now(UTC).isoformat(timespec="seconds")}
            forms.append(attachment)
        if forms:
            report["presentedForm"] = forms
        else:
            report.pop("presentedForm", None)

    def changed(self, event: ResourceChanged) -> None:
        """Queue the rendering of a signed version's PDF, in the write's transaction."""
        stored = event.stored
        if stored.type != "DiagnosticReport" or event.resource is None or not event.changed:
            return
        attachment = pdf_attachment(event.resource)
        if attachment is None:
            return
        binary_id = str(attachment["url"]).removeprefix("Binary/")
        writer = event.writer
        if writer.read("Binary", binary_id) is not None or \
                writer.read("Task", binary_id) is not None:
            return  # made (or queued) for an earlier version with the same content
        task: dict[str, Any] = {
            "resourceType": "Task", "id": binary_id, "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": JOB_SYSTEM, "code": JOB_CODE,
                                 "display": "Render the report's PDF"}]},
            "focus": {"reference": f"DiagnosticReport/{stored.id}/_history/"
                                   f"{stored.version_id}"},
            "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        subject = event.resource.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
            task["for"] = {"reference": subject["reference"]}
        self.core.resources.update(event.caller.derived(), "Task", binary_id, task,
                                   writer=writer)

    # ------------------------------------------------------------------ the queue

    def pending(self, limit: int = 20) -> list[str]:
        """The queued jobs' ids, read on a reader connection: the renderer asks every second,
        and on SQLite a write transaction would take the database's write lock each time."""
        query = [("code", f"{JOB_SYSTEM}|{JOB_CODE}"), ("status", "requested")]
        with self.core.store.reader.connect() as conn:
            return [res_id for _, res_id in self.core.resources.engine.matches(
                conn, "Task", query, "", limit)]

    def run_job(self, task_id: str) -> str:
        """Render the PDF a Task asks for and store it; the Task's resulting status."""
        stored = self.core.store.read("Task", task_id)
        if stored is None or stored.deleted or stored.content is None:
            return "gone"
        task = json_loads(stored.content)
        if task.get("status") != "requested":
            return str(task.get("status"))
        focus = str((task.get("focus") or {}).get("reference", ""))
        match = re.fullmatch(r"DiagnosticReport/([A-Za-z0-9\-.]{1,64})/_history/([0-9]{1,18})",
                             focus)
        pdf: bytes | None = None
        reason = ""
        version = None if match is None else \
            self.core.store.vread("DiagnosticReport", match[1], int(match[2]))
        if version is None or version.deleted or version.content is None:
            reason = f"{focus or 'the focus'} is not stored"
        else:
            try:
                pdf = self.render(json_loads(version.content), f"{match[1]} v{match[2]}"
                                  if match else "")
            except Exception as exc:  # a report that cannot be laid out: told on the Task
                log.exception("report PDF for %s failed", focus)
                reason = f"the PDF could not be made: {type(exc).__name__}: {exc}"[:500]
        server = self.core.server
        with self.core.store.write() as writer:
            current = self.core.resources.current(writer, "Task", task_id)
            if current is None or current.get("status") != "requested":
                return "taken"
            current["id"] = task_id
            if pdf is not None:
                self.core.resources.update(server, "Binary", task_id, {
                    "resourceType": "Binary", "id": task_id, "contentType": PDF,
                    "securityContext": {"reference": focus.split("/_history/")[0]},
                    "data": base64.b64encode(pdf).decode("ascii")}, writer=writer)
                current["status"] = "completed"
                current["output"] = [{"type": {"text": "report PDF"},
                                      "valueReference": {"reference": f"Binary/{task_id}"}}]
            else:
                current["status"] = "failed"
                current["statusReason"] = {"text": reason}
            current["lastModified"] = datetime.now(UTC).isoformat(timespec="seconds")
            self.core.resources.update(server, "Task", task_id, current, writer=writer)
        return str(current["status"])

    def drain(self, limit: int = 100) -> int:
        """Run the queued jobs now (the renderer's round; also the sample loader and tests)."""
        done = 0
        while done < limit:
            ids = self.pending(min(20, limit - done))
            if not ids:
                break
            for task_id in ids:
                self.run_job(task_id)
                done += 1
        return done

    # ------------------------------------------------------------------ $pdf

    def operation(self, call: OperationCall) -> OperationResult:
        """``GET DiagnosticReport/{id}/$pdf``: the stored PDF of the current version, else
        one made now (not stored: a GET changes nothing)."""
        if call.res_id is None:
            raise CoreError(400, "invalid", "$pdf is asked of one DiagnosticReport")
        stored = self.core.resources.read(call.caller, "DiagnosticReport", call.res_id)
        assert stored.content is not None
        report = json_loads(stored.content)
        attachment = pdf_attachment(report)
        headers = {"Content-Disposition":
                   f'inline; filename="report-{call.res_id}-v{stored.version_id}.pdf"'}
        if attachment is not None:
            binary = self.core.store.read("Binary", str(attachment["url"]).split("/", 1)[1])
            if binary is not None and not binary.deleted and binary.content is not None:
                data = json_loads(binary.content).get("data", "")
                return OperationResult(base64.b64decode(data), headers=headers,
                                       content_type=PDF)
        pdf = self.render(report, f"{call.res_id} v{stored.version_id}")
        return OperationResult(pdf, headers=headers, content_type=PDF)

    # ------------------------------------------------------------------ rendering

    def render(self, report: dict[str, Any], label: str = "") -> bytes:
        """The PDF of ``report`` (a DiagnosticReport as stored)."""
        weasy = weasyprint()  # imported when first used: it loads Pango
        HTML = weasy.HTML
        FontConfiguration = weasy.text.fonts.FontConfiguration
        URLFetcher = weasy.urls.URLFetcher

        page = self.page(report, label)
        html = self.template.render(**page.__dict__)
        with self._lock:  # one FontConfiguration (fontconfig) reused, one layout at a time
            if self._fonts is None:
                self._fonts = FontConfiguration()
            # Only the data: images the template embeds are fetched: a report's text can
            # never make the renderer fetch a URL or read a file.
            document = HTML(string=html,
                            url_fetcher=URLFetcher(allowed_protocols=frozenset({"data"})))
            out: bytes = document.write_pdf(font_config=self._fonts)
        return out

    def page(self, report: dict[str, Any], label: str = "") -> Page:
        reads = _Reads(self.core)
        page = Page(footer_id=f"DiagnosticReport/{label}" if label else "")
        status = str(report.get("status", ""))
        page.status_label = STATUS_LABEL.get(status, "")
        subject = reads.get(report.get("subject"), "Patient")
        page.patient = {
            "name": _person_name(subject) or "—",
            "sex": SEX.get(str((subject or {}).get("gender", "")), "—"),
            "age": _age((subject or {}).get("birthDate"), report.get("effectiveDateTime"))
            or "—",
            "mrn": _identifier(subject, "MR") or "—"}
        page.exam = _text(report.get("code")) or "超声检查"
        page.effective = _when(report.get("effectiveDateTime")) or "—"
        page.issued = _when(report.get("issued")) or "—"
        page.accession = _identifier(report, "ACSN") or "—"
        for based in report.get("basedOn", []) or []:
            order = reads.get(based, "ServiceRequest")
            page.accession = page.accession if page.accession != "—" else \
                (_identifier(order, "ACSN") or _identifier(order, "PLAC") or "—")
        page.institution = self._institution(reads, report)
        # findings: the author's text forms; the impression: conclusion and coded diagnoses
        for form in report.get("presentedForm", []) or []:
            if isinstance(form, dict) and str(form.get("contentType", "")).startswith(
                    "text/plain"):
                page.findings += _decode(form)
        if report.get("conclusion"):
            page.impression = [line for line in str(report["conclusion"]).splitlines()
                               if line.strip()]
        for concept in report.get("conclusionCode", []) or []:
            coding: Any = next(iter((concept or {}).get("coding") or []), {})
            shown = _text(concept)
            code = coding.get("code") if isinstance(coding, dict) else None
            if shown:
                page.diagnoses.append(f"诊断：{shown}" + (f"（{code}）" if code and
                                                        code != shown else ""))
        self._results(reads, report, page)
        self._doctors(reads, report, page)
        self._images(reads, report, page)
        return page

    def _institution(self, reads: _Reads, report: dict[str, Any]) -> str:
        """The performing organisation's Chinese name (an ``alias`` in Chinese, else its
        ``name``), the first named Organization of ``performer`` (directly or through a
        PractitionerRole)."""
        for performer in report.get("performer", []) or []:
            ref = str((performer or {}).get("reference", ""))
            org = None
            if "Organization/" in ref:
                org = reads.get(performer, "Organization")
            elif "PractitionerRole/" in ref:
                role = reads.get(performer, "PractitionerRole")
                org = reads.get((role or {}).get("organization"), "Organization")
            if not org:
                continue
            chinese = [str(a) for a in org.get("alias", []) or [] if _cjk(str(a))]
            if chinese or org.get("name"):
                return chinese[0] if chinese else str(org["name"])
        return "超声远程会诊中心"

    def _results(self, reads: _Reads, report: dict[str, Any], page: Page) -> None:
        queue = list(report.get("result", []) or [])
        seen: set[str] = set()
        rows = 0
        while queue:
            ref = queue.pop(0)
            key = str((ref or {}).get("reference", "")) if isinstance(ref, dict) else ""
            if not key or key in seen:
                continue
            seen.add(key)
            obs = reads.get(ref, "Observation")
            if obs is None or obs.get("status") == "entered-in-error":
                continue
            members = obs.get("hasMember") or []
            queue[0:0] = [m for m in members if isinstance(m, dict)]
            quantity = obs.get("valueQuantity")
            if isinstance(quantity, dict) and "value" in quantity:
                rows += 1
                if rows > MAX_MEASUREMENTS:
                    continue
                where = [_text(obs.get("bodySite")), _text(obs.get("method"))]
                page.measurements.append({
                    "name": _text(obs.get("code")) or "—",
                    "value": _number(quantity.get("value")),
                    "unit": str(quantity.get("unit") or quantity.get("code") or ""),
                    "where": "，".join(w for w in where if w)})
            elif isinstance(obs.get("valueString"), str) and not any(
                    str(f.get("contentType", "")).startswith("text/plain")
                    for f in report.get("presentedForm", []) or [] if isinstance(f, dict)):
                page.findings += [line for line in obs["valueString"].splitlines()
                                  if line.strip()]
        page.measurements_cut = max(0, rows - MAX_MEASUREMENTS)

    def _doctors(self, reads: _Reads, report: dict[str, Any], page: Page) -> None:
        interpreters = [_person_name(reads.practitioner(ref))
                        for ref in report.get("resultsInterpreter", []) or []]
        interpreters = [name for name in interpreters if name]
        performers = [_person_name(reads.practitioner(ref))
                      for ref in report.get("performer", []) or []
                      if "Practitioner" in str((ref or {}).get("reference", ""))]
        page.reporting = interpreters[0] if interpreters else (performers[0] if performers
                                                               else "—")
        others = interpreters[1:] or [p for p in performers if p and p != page.reporting]
        page.verifying = "、".join(dict.fromkeys(others)) or page.reporting

    def _images(self, reads: _Reads, report: dict[str, Any], page: Page) -> None:
        wanted: list[tuple[str, str, str, int | None, str]] = []
        for item in report.get("media", []) or []:
            if not isinstance(item, dict):
                continue
            media = reads.get(item.get("link"), "Media")
            url = str(((media or {}).get("content") or {}).get("url", ""))
            found = _WADO.search(url)
            if found is None:
                shown = url or "无链接"
                page.image_notes.append(f"关键图像 {len(wanted) + 1} 无法定位（{shown}）")
                continue
            frame = int(found[4]) if found[4] else None
            caption = str(item.get("comment") or _text((media or {}).get("view")) or "")
            wanted.append((found[1], found[2], found[3], frame, caption))
        if not report.get("media"):
            wanted = self._study_images(reads, report)
        archive = self.core.archive
        missing = 0
        for study, series, sop, frame, caption in wanted[:MAX_IMAGES]:
            try:
                row = archive.instance(study, series, sop)
                count = row.number_of_frames or 1
                number = frame if frame and 1 <= frame <= count else (count + 1) // 2
                jpeg = archive.render(row, "image/jpeg", number, 85, IMAGE_VIEWPORT, None)
            except CoreError as exc:
                missing += 1
                log.info("report image %s unavailable: %s", sop, exc)
                continue
            src = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            page.images.append({"src": src,
                                "caption": caption or f"图 {len(page.images) + 1}"})
        if missing:
            page.image_notes.append(f"{missing} 幅关键图像已不在影像存档中，未能打印")
        if len(wanted) > MAX_IMAGES:
            page.image_notes.append(f"另有 {len(wanted) - MAX_IMAGES} 幅关键图像未打印")

    def _study_images(self, reads: _Reads, report: dict[str, Any]
                      ) -> list[tuple[str, str, str, int | None, str]]:
        out: list[tuple[str, str, str, int | None, str]] = []
        for ref in report.get("imagingStudy", []) or []:
            study = reads.get(ref, "ImagingStudy")
            uid = next((str(i.get("value", "")).removeprefix("urn:oid:")
                        for i in (study or {}).get("identifier", []) or []
                        if isinstance(i, dict) and i.get("system") == "urn:dicom:uid"), None)
            if not uid:
                continue
            try:
                rows = self.core.archive.instances(uid)
            except CoreError:
                continue
            for row in rows:
                if row.sop_class_uid in SR_CLASSES or not row.sop_class_uid.startswith(
                        "1.2.840.10008.5.1.4.1.1."):
                    continue
                if row.sop_class_uid.startswith(("1.2.840.10008.5.1.4.1.1.11.",
                                                 "1.2.840.10008.5.1.4.1.1.88.",
                                                 "1.2.840.10008.5.1.4.1.1.104.")):
                    continue  # presentation states, SR/KOS, encapsulated documents
                out.append((row.study_uid, row.series_uid, row.sop_uid, None, ""))
                if len(out) >= MAX_IMAGES:
                    return out
        return out


class _Reads:
    """The resources one report names, read without a transaction (bounded)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.count = 0
        self.cache: dict[str, dict[str, Any] | None] = {}

    def get(self, ref: Any, res_type: str) -> dict[str, Any] | None:
        text = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(text, str):
            return None
        base = self.core.settings.public_base.rstrip("/") + "/" \
            if self.core.settings.public_base else ""
        local = text.removeprefix(base) if base else text
        parts = local.split("/")
        if len(parts) < 2 or (parts[-2] != res_type and parts[0] != res_type):
            return None
        res_id = parts[1] if parts[0] == res_type else parts[-1]
        key = f"{res_type}/{res_id}"
        if key in self.cache:
            return self.cache[key]
        self.count += 1
        if self.count > MAX_REFERENCES:
            raise CoreError(422, "too-costly", f"the report names more than {MAX_REFERENCES} "
                            "resources to print", expression=["DiagnosticReport"])
        stored = self.core.store.read(res_type, res_id)
        found = json_loads(stored.content) if stored is not None and not stored.deleted \
            and stored.content is not None else None
        self.cache[key] = found
        return found

    def practitioner(self, ref: Any) -> dict[str, Any] | None:
        text = str((ref or {}).get("reference", "")) if isinstance(ref, dict) else ""
        if "PractitionerRole/" in text:
            role = self.get(ref, "PractitionerRole")
            return self.get((role or {}).get("practitioner"), "Practitioner")
        return self.get(ref, "Practitioner")


def _identifier(resource: dict[str, Any] | None, type_code: str) -> str:
    for ident in (resource or {}).get("identifier", []) or []:
        if not isinstance(ident, dict):
            continue
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding", []) or []
                 if isinstance(c, dict)}
        if type_code in codes:
            return str(ident.get("value", ""))
    return ""


class PdfRenderer(Periodic):
    """The queued report PDFs, rendered by one process (``serve`` starts it with the
    cluster's duties)."""

    name = "report-pdf"

    def __init__(self, pdf: ReportPdf, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.pdf = pdf

    def round(self) -> int:
        done = 0
        for task_id in self.pdf.pending():
            if self.stopping:
                break
            self.pdf.run_job(task_id)
            done += 1
        return done


def attach(core: Core) -> None:
    pdf = ReportPdf(core)
    pdf.listen()
    core.operations.register(Operation(
        "pdf", frozenset({"instance"}), pdf.operation, types=frozenset({"DiagnosticReport"}),
        affects_state=False, definition=DEFINITION,
        documentation="The report as a printable PDF (Chinese ultrasound report layout, CJK "
                      "fonts embedded): the stored PDF of a signed version, else made now"))
    core.report_pdf = pdf  # type: ignore[attr-defined]


def report_pdf_of(core: Core) -> ReportPdf:
    found: ReportPdf | None = getattr(core, "report_pdf", None)
    if found is None:
        raise LookupError("the report PDF domain is not attached to this core")
    return found


__all__ = ["PDF", "PdfRenderer", "ReportPdf", "attach", "ours", "report_pdf_of",
           "without_ours"]
