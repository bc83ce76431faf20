"""What an inbound HL7 v2 message does to the FHIR store, inside the caller's transaction.

ADT^A01/A04/A08/A28/A31 create or update the Patient (matched on any of its identifiers);
ADT^A40 merges two Patients; ORM^O01 and OMI^O23 create, change or cancel a ServiceRequest
(the worklist entry a modality sees). Every write goes through the FHIR service, so it is
validated, indexed and audited like a REST write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import hl7

from sonobridge.core.errors import FhirError
from sonobridge.core.policy import Policy
from sonobridge.core.resources import FhirRequest
from sonobridge.fhir.bundles import rewrite_references
from sonobridge.jsonio import loads
from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error
from sonobridge.store.resources import Writer, new_id

log = logging.getLogger("sonobridge.hl7")

ADT_UPDATES = {"A01", "A04", "A05", "A08", "A28", "A31"}


@dataclass
class Applied:
    """What a message did: a short text for the ACK and the log, and the patient and the
    resource it concerns, for its audit event."""

    text: str
    patient: str | None = None
    resource: str | None = None


class Applier:
    def __init__(self, core: Any) -> None:
        self.core = core
        self.base = core.settings.public_base

    def apply(self, writer: Writer, message: hl7.Message, sender: str) -> Applied:
        """Apply the message."""
        code, event = hl7v2.message_type(message)
        policy = Policy(subject=f"hl7:{sender}", client_id="mllp", unrestricted=True)
        if code == "ADT" and event in ADT_UPDATES:
            pid = self.upsert_patient(writer, hl7v2.patient(message), policy)
            return Applied(f"Patient/{pid}", f"Patient/{pid}")
        if code == "ADT" and event == "A40":
            return self.merge(writer, message, policy)
        if (code, event) in (("ORM", "O01"), ("OMI", "O23")):
            return self.order(writer, message, policy)
        raise HL7Error(f"message type {code}^{event} is not supported", "200" if code not in (
            "ADT", "ORM", "OMI") else "201", ("MSH", 1, 9), reject=True)

    # ------------------------------------------------------------------ helpers

    def _find(self, writer: Writer, res_type: str, identifiers: list[dict[str, Any]]
              ) -> str | None:
        """The resource carrying any of the identifiers: one search, the identifiers OR-ed."""
        if not identifiers:
            return None
        writer.flush()  # resources written earlier in this transaction are matched too
        found = self.core.search.by_identifier(
            writer.conn, res_type, [(str(i.get("system", "")), str(i.get("value", "")))
                                    for i in identifiers])
        return found[0] if found else None

    def _put(self, writer: Writer, res_type: str, res_id: str, body: dict[str, Any],
             policy: Policy, audited: bool = False, new: bool = False) -> None:
        """Write through the FHIR service; audited by the message's own event unless asked.
        ``new``: the id was just made here, so the resource is created with it (no look for
        a current version)."""
        if new:
            req = FhirRequest("POST", res_type, body={**body, "id": res_id}, base=self.base,
                              policy=policy, source="mllp", audited=audited,
                              assigned_id=res_id)
        else:
            req = FhirRequest("PUT", res_type, res_id, body={**body, "id": res_id},
                              base=self.base, policy=policy, source="mllp", audited=audited)
        try:
            self.core.fhir.handle(req, writer)
        except FhirError as exc:
            raise HL7Error(f"the {res_type} cannot be stored: {exc}", "207") from None

    def _read(self, writer: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
        stored = writer.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return None
        return loads(stored.content)

    # ------------------------------------------------------------------ patients

    def upsert_patient(self, writer: Writer, incoming: dict[str, Any], policy: Policy,
                       audited: bool = False) -> str:
        """Match on any of the message's identifiers (each scoped by its assigning authority);
        update what the message carries, keep the rest (other identifiers, links, fields the
        HIS does not send)."""
        identifiers = list(incoming["identifier"])
        # The first identifier is also the DICOM Patient ID modalities will send back (IHE
        # SWF), so that their images find this Patient. Never matched on: "123" of one
        # authority is not "123" of another. Given only while no other Patient holds it.
        dicom = {"system": self.core.settings.dicom_patient_id_system,
                 "value": identifiers[0]["value"]}
        pairs = [(str(i.get("system", "")), str(i.get("value", ""))) for i in identifiers]
        writer.flush()  # resources written earlier in this transaction are matched too
        matched = self.core.search.identifier_matches(
            writer.conn, "Patient", [*pairs, (dicom["system"], dicom["value"])])
        res_id = next((found[0] for pair in pairs if (found := matched.get(pair))), None)
        holder = (matched.get((dicom["system"], dicom["value"])) or [None])[0]
        if holder is None or holder == res_id:
            identifiers.append(dicom)
        else:
            log.warning("DICOM Patient ID %s is already another patient's (Patient/%s): "
                        "images must carry Issuer of Patient ID to reach this one",
                        dicom["value"], holder)
        current = self._read(writer, "Patient", res_id) if res_id else None
        if current is None:
            target = res_id or new_id()
            self._put(writer, "Patient", target, {**incoming, "identifier": identifiers},
                      policy, audited, new=res_id is None)
            return target
        merged = {**current, **{k: v for k, v in incoming.items() if k != "identifier"}}
        known = {(i.get("system"), i.get("value")) for i in current.get("identifier", [])}
        merged["identifier"] = current.get("identifier", []) + [
            i for i in identifiers if (i["system"], i["value"]) not in known]
        current.pop("meta", None)
        merged.pop("meta", None)
        if merged != current:  # most orders repeat what is known: no new version then
            self._put(writer, "Patient", current["id"], merged, policy, audited)
        return current["id"]

    def merge(self, writer: Writer, message: hl7.Message, policy: Policy) -> Applied:
        """ADT^A40: the patient in MRG-1 is merged into the one in PID-3. The survivor gets a
        ``replaces`` link, the old record becomes inactive with ``replaced-by``, and every
        resource that pointed at the old record points at the survivor. Rare and far-reaching:
        each write is audited on its own."""
        prior_ids = hl7v2.patient_identifiers(message, "MRG", 1)
        if not prior_ids:
            raise HL7Error("MRG-1 (prior patient identifier) is required", "101",
                           ("MRG", 1, 1))
        survivor = self.upsert_patient(writer, hl7v2.patient(message), policy, audited=True)
        prior = self._find(writer, "Patient", prior_ids)
        if prior is None:
            raise HL7Error("the patient in MRG-1 is not known", "204", ("MRG", 1, 1))
        if prior == survivor:
            return Applied(f"Patient/{survivor}", f"Patient/{survivor}")
        old, new = f"Patient/{prior}", f"Patient/{survivor}"
        for res_type, res_id in self._referrers(writer, prior):
            body = self._read(writer, res_type, res_id)
            if body is None:
                continue
            body = rewrite_references(body, {old: new})
            body.pop("meta", None)
            self._put(writer, res_type, res_id, body, policy, audited=True)
        prior_body = self._read(writer, "Patient", prior) or {}
        prior_body.pop("meta", None)
        prior_body["active"] = False
        prior_body["link"] = [{"other": {"reference": new}, "type": "replaced-by"}]
        self._put(writer, "Patient", prior, prior_body, policy, audited=True)
        survivor_body = self._read(writer, "Patient", survivor) or {}
        survivor_body.pop("meta", None)
        links = [lk for lk in survivor_body.get("link", [])
                 if lk.get("other", {}).get("reference") != old]
        survivor_body["link"] = [*links, {"other": {"reference": old}, "type": "replaces"}]
        self._put(writer, "Patient", survivor, survivor_body, policy, audited=True)
        return Applied(f"{old} merged into {new}", new, old)

    def _referrers(self, writer: Writer, patient_id: str) -> list[tuple[str, str]]:
        from sqlalchemy import select

        from sonobridge.store.tables import idx_reference as ref
        from sonobridge.store.tables import resources as R

        writer.flush()
        rows = writer.conn.execute(
            select(R.c.res_type, R.c.res_id).where(R.c.rid.in_(
                select(ref.c.rid).where(ref.c.target_type == "Patient",
                                        ref.c.target_id == patient_id)),
                R.c.deleted.is_(False), R.c.res_type != "AuditEvent")).all()
        return [(row.res_type, row.res_id) for row in rows
                if not (row.res_type == "Patient" and row.res_id == patient_id)]

    # ------------------------------------------------------------------ orders

    def order(self, writer: Writer, message: hl7.Message, policy: Policy) -> Applied:
        parsed = hl7v2.order(message, self.core.settings.hl7_time_zone)
        res_id = self._find(writer, "ServiceRequest", parsed.identifiers)
        if res_id is None and parsed.status == "revoked":
            raise HL7Error("the order to cancel is not known", "204", ("ORC", 1, 2))
        patient_id = self.upsert_patient(writer, parsed.patient, policy)
        resource = dict(parsed.resource)
        resource["subject"] = {"reference": f"Patient/{patient_id}"}
        if parsed.study_uid:
            resource["identifier"] = [*resource["identifier"], {
                "system": "urn:dicom:uid", "value": f"urn:oid:{parsed.study_uid}"}]
        station = parsed.extra.get("station")
        if station is not None:  # OMI IPC-9: the order is performed by that station
            device = self._find(writer, "Device", station["identifier"])
            if device is None:
                device = new_id()
                self._put(writer, "Device", device, station, policy, new=True)
            resource["performer"] = [{"reference": f"Device/{device}"},
                                     *resource.get("performer", [])]
        for key, system in (("requested_procedure_id", hl7v2.REQUESTED_PROCEDURE_SYSTEM),
                            ("scheduled_step_id", hl7v2.SCHEDULED_STEP_SYSTEM)):
            if parsed.extra.get(key):
                resource["identifier"] = [*resource["identifier"],
                                          {"system": system, "value": parsed.extra[key]}]
        if res_id is not None:
            current = self._read(writer, "ServiceRequest", res_id) or {}
            if parsed.control in ("CA", "OC", "DC", "OD", "CR", "SC") and \
                    parsed.status in ("revoked", "completed", "on-hold", "active") and current:
                # a cancel or status change keeps what the order said
                current.pop("meta", None)
                resource = {**current, "status": parsed.status}
            else:
                known = {(i["system"], i["value"]) for i in resource["identifier"]}
                resource["identifier"] += [i for i in current.get("identifier", [])
                                           if (i.get("system"), i.get("value")) not in known]
        target = res_id or new_id()
        self._put(writer, "ServiceRequest", target, resource, policy, new=res_id is None)
        return Applied(f"ServiceRequest/{target} {parsed.status}", f"Patient/{patient_id}",
                       f"ServiceRequest/{target}")

