"""The QC indicators as FHIR Measures and ``$evaluate-measure`` (STANDARDS.md §9).

``definitions`` holds the Measure resources (US-HR-01, US-EQ-01, US-TL-01, US-CV-01, report
qualified rate, positive rate), ``indicators`` the view filters their populations name,
``evaluate`` the MeasureReport. ``attach`` registers ``Measure/$evaluate-measure`` at the type
level (``measure`` = id or canonical) and the instance level; a Measure is looked up in the
store first (a site may store its own Measures over the same filters), then among the shipped
ones by id or canonical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sonobridge import jsonio
from sonobridge.core.errors import CoreError
from sonobridge.core.measures.definitions import MEASURES
from sonobridge.core.measures.evaluate import evaluate, period_of
from sonobridge.core.measures.indicators import Data
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller
from sonobridge.core.views.service import ViewService

if TYPE_CHECKING:
    from sonobridge.core.services import Core

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"
_PARAMS = frozenset({"periodStart", "periodEnd", "measure", "reportType", "subject",
                     "practitioner", "lastReceivedOn"})


def find_measure(core: Core, caller: Caller, ref: str) -> dict[str, Any]:
    """A Measure by id, ``Measure/id`` or canonical: stored first, then shipped; 404."""
    key = ref.split("|")[0].rstrip("/").rsplit("/", 1)[-1]
    if core.resources.exists("Measure", key):
        stored = core.resources.read(caller, "Measure", key)
        if stored.content is not None:
            found: dict[str, Any] = jsonio.loads(stored.content)
            return found
    for measure in MEASURES.values():
        if key == measure["id"] or ref.split("|")[0] == measure["url"]:
            return measure
    raise CoreError(404, "not-found", f"Measure {ref!r} is not known here")


def evaluate_operation(core: Core, service: ViewService, call: OperationCall
                       ) -> OperationResult:
    for name in {k for k, _ in call.query} | {p.get("name") for p in call.parameters}:
        if name not in _PARAMS:
            raise CoreError(400, "not-supported", f"$evaluate-measure does not take {name!r}",
                            expression=[str(name)])
    if call.level == "instance":
        measure = find_measure(core, call.caller, call.res_id or "")
    else:
        ref = call.param("measure")
        if not isinstance(ref, str) or not ref:
            raise CoreError(400, "required", "$evaluate-measure on Measure needs measure (an "
                            "id or canonical)", expression=["measure"])
        measure = find_measure(core, call.caller, ref)
    period = period_of(call.param("periodStart"), call.param("periodEnd"),
                       core.settings.hl7_time_zone)
    subject = call.param("subject")
    if isinstance(subject, dict):
        subject = subject.get("reference")
    practitioner = call.param("practitioner")
    if subject is None and isinstance(practitioner, str) and practitioner:
        subject = practitioner if "/" in practitioner else f"Practitioner/{practitioner}"
    report = evaluate(measure, Data(service, call.caller), period,
                      report_type=str(call.param("reportType", "summary")),
                      subject=str(subject) if subject is not None else None)
    return OperationResult(report)


def attach(core: Core) -> None:
    service = ViewService(core.store, core.search)
    core.operations.register(Operation(
        "evaluate-measure", frozenset({"type", "instance"}),
        lambda call: evaluate_operation(core, service, call), types=frozenset({"Measure"}),
        definition=DEFINITION,
        documentation="The QC indicators (US-HR-01, US-EQ-01, US-TL-01, US-CV-01, US-RQ-01, "
                      "US-PR-01) over a closed period → MeasureReport (summary or "
                      "subject-list), stratified by organization, practitioner and device; "
                      "counts only what the caller may read."))
