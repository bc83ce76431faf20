"""Patients: one person, one Patient, whichever of the HIS and the modality spoke first.

A patient identifier is (issuer, value). The issuer is an identifier system: an assigning
authority ``HOSP`` (HL7 PID-3's CX.4, DICOM Issuer of Patient ID, a DICOM peer's ``issuer=``,
``SONOBRIDGE_PATIENT_ID_ISSUER``) is ``urn:sonobridge:hl7:id:HOSP``, one with an ISO OID is
``urn:oid:…`` (``issuer_system``). A DICOM Patient ID that came with no issuer at all is
*unqualified*: it is kept under ``SONOBRIDGE_DICOM_PATIENT_ID_SYSTEM``
(``urn:sonobridge:dicom:patient-id``).

Matching (``docs/bridges.md``, "One patient"):

- a qualified identifier matches the Patient with the same (issuer, value);
- an unqualified one matches the Patient holding that value, under any issuer, when exactly
  one does;
- a Patient made from an unqualified ID is *adopted* by the first qualified identifier with
  the same value: that identifier is added to it (and the HIS's demographics replace those
  of the DICOM header), no second Patient is made;
- ambiguity (an unqualified value several Patients hold, an adoption that could go two ways)
  never merges: a new Patient is made, tagged ``CONFLICT_TAG``, counted in
  ``sonobridge_patient_identity_conflicts_total`` and listed by ``sonobridge dicom status``,
  for a person to resolve (ADT^A40 merges).

The first identifier of a patient registered by the HIS is also the DICOM Patient ID
modalities will send back (IHE Scheduled Workflow); it is kept under the unqualified system
too (while no other Patient holds it), which the worklist gives to modalities.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy import and_, select

from sonobridge.core.errors import not_found
from sonobridge.core.policy import Caller
from sonobridge.core.references import rewrite_references
from sonobridge.core.resources import Resources
from sonobridge.mappings.hl7v2 import identifier_system
from sonobridge.store.resources import Writer, new_id
from sonobridge.store.tables import idx_reference as ref
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

log = logging.getLogger("sonobridge.patients")

# A Patient made because its identifier matched more than one (ambiguity never merges).
CONFLICT_SYSTEM = "urn:sonobridge:patient-identity"
CONFLICT_TAG = {"system": CONFLICT_SYSTEM, "code": "conflict",
                "display": "identifier matched more than one patient"}
CONFLICTS = Counter("sonobridge_patient_identity_conflicts_total",
                    "Patients made new because an identifier matched more than one, by source",
                    ["source"])
MAX_HOLDERS = 50  # patients looked at for one unqualified value


def issuer_system(issuer: str) -> str:
    """An issuer of patient IDs as an identifier system: a namespace ``HOSP`` is
    ``urn:sonobridge:hl7:id:HOSP`` (as HL7 PID-3's assigning authority ``HOSP``), an HD with
    an ISO OID (``HOSP&1.2.3&ISO``) is ``urn:oid:1.2.3``."""
    return identifier_system(issuer.strip())


def _token(value: str) -> str:
    """A value as a FHIR token search parameter (``\\``, ``|``, ``,``, ``$`` escaped)."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _replaced(body: dict[str, Any]) -> bool:
    return any(link.get("type") == "replaced-by" for link in body.get("link", []))


@dataclass(frozen=True, slots=True)
class Conflict:
    """A Patient made on an ambiguous identifier, for ``sonobridge dicom status``."""

    patient: str  # Patient id
    identifiers: str  # "system|value, …"
    updated: str  # its lastUpdated


@dataclass(frozen=True, slots=True)
class Merged:
    survivor: str  # Patient id
    prior: str | None  # the merged-away Patient id (None when it was the survivor already)


class Patients:
    def __init__(self, resources: Resources, dicom_system: str,
                 default_issuer: str | None = None,
                 sender_issuers: Mapping[str, str] | None = None) -> None:
        self.resources = resources
        self.dicom_system = dicom_system  # the unqualified DICOM Patient IDs' system
        self.default_issuer = default_issuer or None  # SONOBRIDGE_PATIENT_ID_ISSUER
        # calling AE title -> the issuer of the Patient IDs it sends (peers' ``issuer=``)
        self.sender_issuers: dict[str, str] = dict(sender_issuers or {})

    # ------------------------------------------------------------------ identity

    def dicom_issuers(self, header: list[str], sender: str | None) -> list[str]:
        """The issuer (identifier systems) of a DICOM Patient ID: the header's own (Issuer
        of Patient ID, its qualifiers), else the sending AE's configured one, else
        ``SONOBRIDGE_PATIENT_ID_ISSUER``; none (unqualified) without any of them."""
        if header:
            return header
        issuer = (self.sender_issuers.get(sender) if sender else None) or self.default_issuer
        return [issuer_system(issuer)] if issuer else []

    def _survivor(self, writer: Writer, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """The live Patient a merged-away one was merged into (itself when not merged)."""
        for _ in range(8):
            if body is None or not _replaced(body):
                return body
            other = next(link["other"].get("reference", "") for link in body["link"]
                         if link.get("type") == "replaced-by")
            body = self.resources.current(writer, "Patient", other.removeprefix("Patient/"))
        return None

    def _holders(self, writer: Writer, caller: Caller, value: str) -> list[dict[str, Any]]:
        """The live Patients holding ``value`` under any system, each with the value's
        systems as the holder had them (a merged-away holder stands for its survivor)."""
        found = self.resources.find(writer, "Patient", [("identifier", _token(value))],
                                    caller.base, limit=MAX_HOLDERS)
        out: dict[str, dict[str, Any]] = {}
        for res_id in found:
            body = self.resources.current(writer, "Patient", res_id)
            if body is None:
                continue
            held = [i for i in body.get("identifier", []) if i.get("value") == value]
            survivor = self._survivor(writer, body)
            if not held or survivor is None:
                continue
            entry = out.setdefault(str(survivor["id"]), {**survivor, "identifier": []})
            entry["identifier"] += held
        return list(out.values())

    def _qualified(self, body: dict[str, Any], value: str) -> set[str]:
        """The issuers under which a Patient holds ``value`` (the unqualified one aside)."""
        return {str(i.get("system", "")) for i in body.get("identifier", [])
                if i.get("value") == value and i.get("system") != self.dicom_system}

    def _adoption(self, writer: Writer, caller: Caller, pairs: list[tuple[str, str]]
                  ) -> tuple[str | None, bool]:
        """For qualified identifiers no Patient holds: the Patient made from an unqualified
        ID with the same value that they adopt, and whether that is ambiguous (several such
        Patients, or the value held under another issuer too: then none is adopted)."""
        targets: set[str] = set()
        for system, value in pairs:
            if system == self.dicom_system:
                continue
            holders = self._holders(writer, caller, value)
            unqualified = [h for h in holders if not self._qualified(h, value)]
            if not unqualified:
                continue  # another issuer's value, or nobody's: another person
            if len(unqualified) > 1 or len(holders) > len(unqualified):
                return None, True
            targets.add(str(unqualified[0]["id"]))
        if len(targets) > 1:
            return None, True
        return (targets.pop() if targets else None), False

    def _tags(self, writer: Writer, res_id: str) -> list[dict[str, Any]]:
        """The stored ``meta.tag`` of a resource (``current`` drops ``meta``)."""
        stored = writer.read("Patient", res_id)
        if stored is None or stored.content is None:
            return []
        tags: list[dict[str, Any]] = (orjson.loads(stored.content).get("meta") or {}).get(
            "tag", [])
        return tags

    @staticmethod
    def _conflict(body: dict[str, Any], source: str, value: str) -> dict[str, Any]:
        CONFLICTS.labels(source).inc()
        log.warning("patient identity conflict: %s Patient ID %s matches more than one "
                    "patient; a new patient is made (tagged %s|conflict) for a person to "
                    "resolve", source, value, CONFLICT_SYSTEM)
        return {**body, "meta": {"tag": [CONFLICT_TAG]}}

    def conflicts(self, limit: int = 20) -> tuple[int, list[Conflict]]:
        """The live Patients made on an ambiguous identifier: how many, and the newest."""
        with self.resources.store.reader.connect() as conn:
            found = self.resources.engine.matches(
                conn, "Patient", [("_tag", f"{CONFLICT_SYSTEM}|conflict")], "", 10_000)
            rids = [rid for rid, _ in found]
            rows = conn.execute(select(R.c.res_id, R.c.rid, V.c.content).select_from(
                R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id))).where(
                R.c.rid.in_(rids), R.c.deleted.is_(False)).order_by(R.c.rid.desc())).all() \
                if rids else []
        live = []
        for row in rows:
            body = orjson.loads(row.content)
            if body.get("active") is False or _replaced(body):
                continue  # resolved: merged away, or made inactive
            idents = ", ".join(f"{i.get('system', '')}|{i.get('value', '')}"
                               for i in body.get("identifier", []))
            live.append(Conflict(row.res_id, idents, body.get("meta", {}).get("lastUpdated", "")))
        return len(live), live[:limit]

    def _put(self, writer: Writer, caller: Caller, res_type: str, res_id: str,
             body: dict[str, Any], new: bool = False) -> None:
        """Write through the one write path. ``new``: the id was just made here, so the
        resource is created with it (no look for a current version)."""
        body = {**body, "id": res_id}
        if new:
            self.resources.create(caller, res_type, body, assigned_id=res_id, writer=writer)
        else:
            self.resources.update(caller, res_type, res_id, body, writer=writer)

    def find(self, writer: Writer, res_type: str, identifiers: list[dict[str, Any]]
             ) -> str | None:
        """The resource carrying any of the identifiers: one search, the identifiers OR-ed."""
        if not identifiers:
            return None
        pairs = [(str(i.get("system", "")), str(i.get("value", ""))) for i in identifiers]
        matched = self.resources.identifier_matches(writer, res_type, pairs)
        for pair in pairs:
            if matched.get(pair):
                return matched[pair][0]
        return None

    def upsert(self, writer: Writer, caller: Caller, incoming: dict[str, Any]) -> str:
        """The HIS's patient (HL7 PID): match on any of the incoming identifiers (each scoped
        by its issuer), else adopt the Patient a modality made from the same unqualified ID;
        update what the message carries (the HIS's demographics win), keep the rest (other
        identifiers, links, fields the HIS does not send). Returns the Patient id."""
        identifiers = list(incoming["identifier"])
        # The first identifier is also the DICOM Patient ID modalities will send back. Never
        # matched on; given only while no other Patient holds it.
        dicom = {"system": self.dicom_system, "value": identifiers[0]["value"]}
        pairs = [(str(i.get("system", "")), str(i.get("value", ""))) for i in identifiers]
        matched = self.resources.identifier_matches(
            writer, "Patient", [*pairs, (dicom["system"], dicom["value"])])
        res_id = next((found[0] for pair in pairs if (found := matched.get(pair))), None)
        conflict = False
        if res_id is None:
            res_id, conflict = self._adoption(writer, caller, pairs)
        holders = matched.get((dicom["system"], dicom["value"]))
        holder = holders[0] if holders else None
        if holder is None or holder == res_id:
            identifiers.append(dicom)
        elif not conflict:
            log.warning("DICOM Patient ID %s is already another patient's (Patient/%s): "
                        "images must carry Issuer of Patient ID to reach this one",
                        dicom["value"], holder)
        current = self.resources.current(writer, "Patient", res_id) if res_id else None
        if current is None:
            target = res_id or new_id()
            body = {**incoming, "identifier": identifiers}
            if conflict:
                body = self._conflict(body, "hl7", str(dicom["value"]))
            self._put(writer, caller, "Patient", target, body, new=res_id is None)
            return target
        merged = {**current, **{k: v for k, v in incoming.items() if k != "identifier"}}
        known = {(i.get("system"), i.get("value")) for i in current.get("identifier", [])}
        merged["identifier"] = current.get("identifier", []) + [
            i for i in identifiers if (i["system"], i["value"]) not in known]
        merged.pop("meta", None)
        if merged != current:  # most orders repeat what is known: no new version then
            tags = self._tags(writer, str(current["id"]))
            self._put(writer, caller, "Patient", current["id"],
                      {**merged, "meta": {"tag": tags}} if tags else merged)
        return str(current["id"])

    def merge(self, writer: Writer, caller: Caller, survivor: dict[str, Any],
              prior_identifiers: list[dict[str, Any]]) -> Merged:
        """The patient known by ``prior_identifiers`` is merged into ``survivor`` (upserted
        first). The survivor gets a ``replaces`` link, the old record becomes inactive with
        ``replaced-by``, and every resource that pointed at the old record points at the
        survivor. Rare and far-reaching: the caller should audit each write (``audited``)."""
        survivor_id = self.upsert(writer, caller, survivor)
        prior = self.find(writer, "Patient", prior_identifiers)
        if prior is None:
            raise not_found("the prior patient (the one to merge) is not known")
        if prior == survivor_id:
            return Merged(survivor_id, None)
        old, new = f"Patient/{prior}", f"Patient/{survivor_id}"
        for res_type, res_id in self._referrers(writer, prior):
            body = self.resources.current(writer, res_type, res_id)
            if body is None:
                continue
            self._put(writer, caller, res_type, res_id, rewrite_references(body, {old: new}))
        prior_body = self.resources.current(writer, "Patient", prior) or {}
        prior_body["active"] = False
        prior_body["link"] = [{"other": {"reference": new}, "type": "replaced-by"}]
        self._put(writer, caller, "Patient", prior, prior_body)
        survivor_body = self.resources.current(writer, "Patient", survivor_id) or {}
        links = [lk for lk in survivor_body.get("link", [])
                 if lk.get("other", {}).get("reference") != old]
        survivor_body["link"] = [*links, {"other": {"reference": old}, "type": "replaces"}]
        self._put(writer, caller, "Patient", survivor_id, survivor_body)
        return Merged(survivor_id, prior)

    def recent(self, limit: int = 50) -> list[tuple[str, str]]:
        """The newest patients, as (id, "Family Given (birth date)"), for a patient picker."""
        stmt = select(R.c.res_id, V.c.content).select_from(
            R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id))).where(
            R.c.res_type == "Patient", R.c.deleted.is_(False)).order_by(R.c.rid.desc()
                                                                         ).limit(limit)
        out = []
        with self.resources.store.reader.connect() as conn:
            for row in conn.execute(stmt):
                resource = orjson.loads(row.content)
                name = (resource.get("name") or [{}])[0]
                label = " ".join([name.get("family", ""), *name.get("given", [])]).strip()
                if resource.get("birthDate"):
                    label += f" ({resource['birthDate']})"
                out.append((row.res_id, label or row.res_id))
        return out

    @staticmethod
    def _referrers(writer: Writer, patient_id: str) -> list[tuple[str, str]]:
        """Every current resource that references the patient (its audit events aside)."""
        writer.flush()
        rows = writer.conn.execute(
            select(R.c.res_type, R.c.res_id).where(R.c.rid.in_(
                select(ref.c.rid).where(ref.c.target_type == "Patient",
                                        ref.c.target_id == patient_id)),
                R.c.deleted.is_(False), R.c.res_type != "AuditEvent")).all()
        return [(row.res_type, row.res_id) for row in rows
                if not (row.res_type == "Patient" and row.res_id == patient_id)]

    def for_dicom(self, writer: Writer, caller: Caller, patient_id: str | None,
                  issuers: list[str], patient: dict[str, Any], linked: str | None = None
                  ) -> str | None:
        """The Patient a DICOM study belongs to (a reference), created when none is known.

        ``issuers``: the identifier systems of the Patient ID's issuer (``dicom_issuers``),
        empty when unqualified. Qualified, the ID matches the Patient with the same (issuer,
        value), else adopts the Patient made from the same unqualified ID; unqualified, it
        matches the one Patient holding the value under any issuer. ``patient``: the
        Patient to create from the DICOM patient module when none is known (tagged as a
        conflict when the ID was ambiguous). ``linked``: the Patient the study is linked to
        already, kept while it holds the ID (a study does not move when a later patient
        makes its ID ambiguous)."""
        if not patient_id:
            return None
        value = str(patient_id)
        if linked:
            body = self._survivor(writer, self.resources.current(
                writer, "Patient", linked.removeprefix("Patient/")))
            if body is not None and any(i.get("value") == value
                                        for i in body.get("identifier", [])):
                return f"Patient/{body['id']}"
        conflict = False
        if issuers:
            pairs = [(system, value) for system in issuers]
            matched = self.resources.identifier_matches(
                writer, "Patient", [*pairs, (self.dicom_system, value)])
            for pair in pairs:
                if found := matched.get(pair):
                    survivor = self._survivor(
                        writer, self.resources.current(writer, "Patient", found[0]))
                    return f"Patient/{survivor['id'] if survivor else found[0]}"
            own = [{"system": system, "value": value} for system in issuers]
            adopted, conflict = self._adoption(writer, caller, pairs)
            if adopted is not None:
                body = self.resources.current(writer, "Patient", adopted) or {}
                body["identifier"] = [*body.get("identifier", []), *own]
                tags = self._tags(writer, adopted)
                self._put(writer, caller, "Patient", adopted,
                          {**body, "meta": {"tag": tags}} if tags else body)
                return f"Patient/{adopted}"
            patient["identifier"] = own + (patient["identifier"]
                                           if not matched.get((self.dicom_system, value))
                                           else [])
        else:
            holders = self._holders(writer, caller, value)
            if len(holders) == 1:
                return f"Patient/{holders[0]['id']}"
            conflict = len(holders) > 1
        if conflict:
            patient = self._conflict(patient, "dicom", value)
        written = self.resources.create(caller, "Patient", patient, writer=writer)
        return f"Patient/{written.stored.id}"
