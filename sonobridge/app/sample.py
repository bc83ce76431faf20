"""A small sample for newcomers, loaded into an empty database: a township clinic, its doctor, a
patient and an abdominal ultrasound order (``sample_bundle.json``), and one complete written
consultation (图文会诊) with a city hospital's expert (``sample_consultation.json``).

The consultation is not loaded as a finished snapshot: its Task is written once per step, as
the user of that step (the clinic's doctor, its medical-affairs office, the consulting side's
dispatcher, the expert: each a role and a ``fhirUser``), through the same rules every client
meets (the workflow table, the roles, the preconditions, the profiles). So its ``_history``
walks 草稿 → … → 已完成 with a Provenance per step, and the resources can be copied as templates
that are known to pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sonobridge import jsonio
from sonobridge.core.consultation import STATE_SYSTEM, STATES
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.services import SERVER, Core
from sonobridge.fhir.bundles import process_bundle
from sonobridge.fhir.interactions import Interactions

SAMPLE = Path(__file__).with_name("sample_bundle.json")
CONSULTATION = Path(__file__).with_name("sample_consultation.json")


def load_sample(core: Core, base: str) -> int:
    """Load the sample through the ordinary write paths; returns the number of writes."""
    bundle = jsonio.loads(SAMPLE.read_bytes())
    process_bundle(Interactions(core.resources), bundle, base, {"prefer": "return=minimal"},
                   max_entries=100, policy=SERVER)
    return len(bundle["entry"]) + walk_consultation(core, base)


def _user(name: str, actor: dict[str, str], base: str) -> Caller:
    """A caller as a user's token makes it: ``user/*.cruds`` bounded by the role."""
    policy = Policy(subject=f"sample-{name}", client_id="sonobridge-sample",
                    scopes=tuple(resource_scopes("user/*.cruds")), role=actor["role"],
                    fhir_user=actor["fhirUser"], raw_scope="user/*.cruds")
    return Caller(policy, base, "sample")


def walk_consultation(core: Core, base: str) -> int:
    """Write the sample consultation step by step; returns the number of writes."""
    walk: dict[str, Any] = jsonio.loads(CONSULTATION.read_bytes())
    task: dict[str, Any] = dict(walk["task"])
    writes = 0
    for step in walk["steps"]:
        caller = _user(step["as"], walk["actors"][step["as"]], base)
        with core.store.write() as writer:  # the step and what it needs: all or nothing
            for resource in step.get("write", []):
                core.resources.update(caller, resource["resourceType"], resource["id"],
                                      resource, writer=writer)
                writes += 1
            task.update(step.get("task", {}))
            state = step["state"]
            task["status"] = STATES[state][0]
            task["businessStatus"] = {"coding": [{"system": STATE_SYSTEM, "code": state,
                                                  "display": STATES[state][1]}]}
            core.resources.update(caller, "Task", task["id"], task, writer=writer)
            writes += 1
    return writes
