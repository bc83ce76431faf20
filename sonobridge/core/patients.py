"""Patients: matching by identifier, the patient of a DICOM study, and merges.

Identifiers are matched only within their system (their assigning authority): "123" of one
hospital is not "123" of another. The first identifier of a patient registered by the HIS is
also the DICOM Patient ID modalities will send back (IHE Scheduled Workflow), kept under
``SONOBRIDGE_DICOM_PATIENT_ID_SYSTEM`` so that their images find this patient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, select

from sonobridge.core.errors import not_found
from sonobridge.core.policy import Caller
from sonobridge.core.references import rewrite_references
from sonobridge.core.resources import Resources
from sonobridge.store.resources import Writer, new_id
from sonobridge.store.tables import idx_reference as ref
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

log = logging.getLogger("sonobridge.patients")


@dataclass(frozen=True, slots=True)
class Merged:
    survivor: str  # Patient id
    prior: str | None  # the merged-away Patient id (None when it was the survivor already)


class Patients:
    def __init__(self, resources: Resources, dicom_system: str) -> None:
        self.resources = resources
        self.dicom_system = dicom_system

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
        """Match on any of the incoming identifiers (each scoped by its system); update what
        the message carries, keep the rest (other identifiers, links, fields the HIS does not
        send). Returns the Patient id."""
        identifiers = list(incoming["identifier"])
        # The first identifier is also the DICOM Patient ID modalities will send back. Never
        # matched on; given only while no other Patient holds it.
        dicom = {"system": self.dicom_system, "value": identifiers[0]["value"]}
        pairs = [(str(i.get("system", "")), str(i.get("value", ""))) for i in identifiers]
        matched = self.resources.identifier_matches(
            writer, "Patient", [*pairs, (dicom["system"], dicom["value"])])
        res_id = next((found[0] for pair in pairs if (found := matched.get(pair))), None)
        holders = matched.get((dicom["system"], dicom["value"]))
        holder = holders[0] if holders else None
        if holder is None or holder == res_id:
            identifiers.append(dicom)
        else:
            log.warning("DICOM Patient ID %s is already another patient's (Patient/%s): "
                        "images must carry Issuer of Patient ID to reach this one",
                        dicom["value"], holder)
        current = self.resources.current(writer, "Patient", res_id) if res_id else None
        if current is None:
            target = res_id or new_id()
            self._put(writer, caller, "Patient", target,
                      {**incoming, "identifier": identifiers}, new=res_id is None)
            return target
        merged = {**current, **{k: v for k, v in incoming.items() if k != "identifier"}}
        known = {(i.get("system"), i.get("value")) for i in current.get("identifier", [])}
        merged["identifier"] = current.get("identifier", []) + [
            i for i in identifiers if (i["system"], i["value"]) not in known]
        merged.pop("meta", None)
        if merged != current:  # most orders repeat what is known: no new version then
            self._put(writer, caller, "Patient", current["id"], merged)
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
                  issuers: list[str], patient: dict[str, Any]) -> str | None:
        """The Patient a DICOM study belongs to, created when none is known.

        With an Issuer of Patient ID the ID is the HIS's own, under that authority (the one
        the worklist gave the modality), and matched only there: "123" of another authority
        is another patient. Without one, the DICOM Patient ID domain. ``issuers``: the
        identifier systems of the issuer; ``patient``: the Patient to create from the DICOM
        patient module when none is known."""
        if not patient_id:
            return None

        def holder(system: str) -> str | None:
            found = self.resources.find(writer, "Patient",
                                        [("identifier", f"{system}|{patient_id}")],
                                        caller.base, limit=2)
            return found[0] if found else None

        for system in issuers or [self.dicom_system]:
            found = holder(system)
            if found:
                return f"Patient/{found}"
        if issuers:
            own = [{"system": system, "value": str(patient_id)} for system in issuers]
            patient["identifier"] = own + (patient["identifier"]
                                           if holder(self.dicom_system) is None else [])
        written = self.resources.create(caller, "Patient", patient, writer=writer)
        return f"Patient/{written.stored.id}"
