"""IHE PIXm ITI-83 Mobile Patient Identifier Cross-reference Query: ``Patient/$ihe-pix``.

A regional platform knows a resident by one identifier (身份证号, 居民健康卡号, a hospital's
门诊号/住院号 with its issuer) and asks for the others this gateway holds for the same person.
The cross-reference is the Patient itself: ``core/patients.py`` already keeps one Patient per
person, carrying every (issuer, value) the HIS, the modalities and received documents gave it
(a merged Patient points at its survivor, which is followed). So the query is a token search
on ``Patient.identifier`` with the caller's rights, and the answer lists that Patient's other
identifiers.

Answers, as ITI-83 (PIXm 3.0, §2:3.83.4.2.3) has them:

- found: 200, a ``Parameters`` with ``targetIdentifier`` per identifier (restricted to the
  ``targetSystem`` values when given; the source identifier itself is not repeated) and
  ``targetId`` (the Patient);
- the source identifier's domain (its ``system``) is held by no Patient and is none of the
  national ones: 400 ``code-invalid`` "sourceIdentifier Assigning Authority not found";
- the domain is known but no Patient the caller may read holds the value: 404 ``not-found``
  (the same answer whether it does not exist or the caller may not see it);
- a ``targetSystem`` no Patient uses: 403 ``code-invalid`` "targetSystem not found".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from sonobridge.core.errors import CoreError
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.resources import SearchSpec
from sonobridge.jsonio import loads as json_loads

if TYPE_CHECKING:
    from sonobridge.core.services import Core

DEFINITION = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"
# Domains every deployment in China recognizes even before a patient carries one.
NATIONAL_DOMAINS = frozenset({
    "urn:oid:2.16.156.10011.1.3",  # 身份证号 (resident ID card)
    "urn:oid:2.16.156.10011.1.19",  # 居民健康卡号 (resident health card)
})
MAX_TARGET_SYSTEMS = 20  # bounded work: one search per target system at most


def as_dict(resource: Any) -> dict[str, Any]:
    """A search entry's resource (stored bytes, as the engine serves them) as a dict."""
    if isinstance(resource, orjson.Fragment):
        loaded: dict[str, Any] = json_loads(orjson.dumps(resource))
        return loaded
    return dict(resource)


def _token(value: str) -> str:
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _source(call: OperationCall) -> tuple[str, str]:
    """(system, value) of ``sourceIdentifier``: a token ``system|value`` in the query or a
    Parameters ``valueString``/``valueToken``, or a ``valueIdentifier``."""
    raw = call.param("sourceIdentifier")
    if raw is None:
        raise CoreError(400, "required", "$ihe-pix needs sourceIdentifier=system|value",
                        expression=["sourceIdentifier"])
    if isinstance(raw, dict):
        system, value = str(raw.get("system") or ""), str(raw.get("value") or "")
    else:
        system, bar, value = str(raw).partition("|")
        if not bar:
            system, value = "", system
    if not system or not value:
        raise CoreError(400, "invalid", "sourceIdentifier must name both the assigning "
                        "authority and the value (system|value)",
                        expression=["sourceIdentifier"])
    return system, value


class Pixm:
    def __init__(self, core: Core) -> None:
        self.core = core

    def attach(self) -> None:
        self.core.operations.register(Operation(
            "ihe-pix", frozenset({"type"}), self.pix, types=frozenset({"Patient"}),
            definition=DEFINITION,
            documentation="IHE PIXm ITI-83: the other identifiers of the patient a "
                          "sourceIdentifier (system|value) names, optionally only those of "
                          "the targetSystem domains."))

    def _domain_known(self, system: str) -> bool:
        """A domain is recognized when it is a national one or some Patient carries an
        identifier of it (asked on the server's account: it says nothing about a person)."""
        if system in NATIONAL_DOMAINS:
            return True
        result = self.core.resources.search(self.core.server, SearchSpec(
            "Patient", [("identifier", f"{_token(system)}|"), ("_summary", "count")]))
        return int(result.bundle.get("total") or 0) > 0

    def pix(self, call: OperationCall) -> OperationResult:
        system, value = _source(call)
        targets = [str(t.get("value") if isinstance(t, dict) else t)
                   for t in call.params("targetSystem")]
        targets = [t for part in targets for t in part.split(",") if t]
        if len(targets) > MAX_TARGET_SYSTEMS:
            raise CoreError(400, "too-costly", f"at most {MAX_TARGET_SYSTEMS} targetSystem "
                            "values", expression=["targetSystem"])
        if not self._domain_known(system):
            raise CoreError(400, "code-invalid", "sourceIdentifier Assigning Authority not "
                            "found", expression=["sourceIdentifier"])
        for target in targets:
            if not self._domain_known(target):
                raise CoreError(403, "code-invalid", f"targetSystem not found: {target}",
                                expression=["targetSystem"])
        patient = self._patient(call, system, value)
        if patient is None:
            raise CoreError(404, "not-found", "sourceIdentifier Patient Identifier not found",
                            expression=["sourceIdentifier"])
        parameters: list[dict[str, Any]] = []
        for ident in patient.get("identifier") or []:
            isys, ival = ident.get("system"), ident.get("value")
            if not isys or not ival or (isys, ival) == (system, value):
                continue
            if targets and isys not in targets:
                continue
            found = {k: ident[k] for k in ("use", "type", "system", "value", "assigner")
                     if k in ident}
            parameters.append({"name": "targetIdentifier", "valueIdentifier": found})
        parameters.append({"name": "targetId",
                           "valueReference": {"reference": f"Patient/{patient['id']}"}})
        return OperationResult({"resourceType": "Parameters", "parameter": parameters})

    def _patient(self, call: OperationCall, system: str, value: str
                 ) -> dict[str, Any] | None:
        """The Patient holding (system, value) that the caller may read; a merged one's
        survivor (``link`` replaced-by) instead of the merged record."""
        result = self.core.resources.search(call.caller, SearchSpec(
            "Patient", [("identifier", f"{_token(system)}|{_token(value)}"),
                        ("_count", "2")]))
        found = [e["resource"] for e in result.bundle.get("entry") or []
                 if (e.get("search") or {}).get("mode", "match") == "match"]
        if not found:
            return None
        patient: dict[str, Any] = as_dict(found[0])
        for _hop in range(5):  # a merge chain, bounded
            survivor = next((str((link.get("other") or {}).get("reference") or "")
                             for link in patient.get("link") or []
                             if link.get("type") == "replaced-by"), "")
            if not survivor.startswith("Patient/"):
                break
            try:
                stored = self.core.resources.read(call.caller, "Patient",
                                                  survivor.removeprefix("Patient/"))
            except CoreError:
                break
            assert stored.content is not None
            patient = json_loads(stored.content)
        return patient


def attach(core: Core) -> None:
    Pixm(core).attach()
