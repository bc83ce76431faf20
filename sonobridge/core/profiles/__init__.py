"""Profiles the server holds, enforced on write and answered by ``$validate``.

``attach(core)`` (listed in ``core/domains.py``) gives the core a ``ProfileRegistry``, keeps it
fresh when definitions are written, listens to ``ResourceWriting`` and registers ``$validate``.

- **On write** (create, update, patch, transaction entries): a resource whose ``meta.profile``
  names a profile the server holds is checked against it; any error refuses the write with 422
  and an OperationOutcome whose issues carry FHIRPath ``expression``s. A profile the server
  does not hold is not an error (a resource may claim profiles of other guides).
- **``$validate``** (``[type]/$validate``, ``[type]/[id]/$validate``; GET or POST; the
  resource as the body or as ``Parameters.resource``; ``profile`` and ``mode``) answers 200
  with an OperationOutcome: the errors and warnings found, or one information issue when none
  (FHIR R4 Resource-validate: the operation succeeded even when the resource is invalid).

The registry is found from the core's ``SearchEngine`` (``registry_for``), because the
CapabilityStatement builder in ``conformance/`` is handed that engine and lists the held
profiles as ``supportedProfile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sonobridge import jsonio
from sonobridge.core.errors import CoreError, Issue, info_outcome, operation_outcome
from sonobridge.core.events import ResourceWriting
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.profiles.registry import ProfileRegistry
from sonobridge.core.validation import validate as validate_structure

if TYPE_CHECKING:
    from sonobridge.core.services import Core

__all__ = ["ProfileRegistry", "attach", "registry_for", "registry_of"]

VALIDATE_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = frozenset({"create", "update", "delete", "profile"})
_REGISTRIES: WeakKeyDictionary[object, ProfileRegistry] = WeakKeyDictionary()


def registry_for(key: object) -> ProfileRegistry | None:
    """The registry attached to the core whose ``search`` engine is ``key``."""
    try:
        return _REGISTRIES.get(key)
    except TypeError:  # not weak-referenceable: no registry for it
        return None


def registry_of(core: Core) -> ProfileRegistry:
    found = registry_for(core.search)
    if found is None:
        raise LookupError("the profiles domain is not attached to this core")
    return found


def attach(core: Core) -> None:
    registry = ProfileRegistry(core.store)
    _REGISTRIES[core.search] = registry
    core.store.after_commit.append(registry.after_commit)
    core.events.listen(ResourceWriting, lambda event: enforce(registry, event))
    core.operations.register(Operation(
        "validate", frozenset({"type", "instance"}),
        lambda call: validate_operation(core, registry, call),
        definition=VALIDATE_DEFINITION,
        documentation="Checks a resource against the R4 structure, the profiles it claims in "
                      "meta.profile and the `profile` parameter; modes create, update, delete, "
                      "profile. Answers 200 with an OperationOutcome."))


def check(registry: ProfileRegistry, resource: dict[str, Any],
          extra: list[str] | None = None) -> tuple[list[Issue], list[str]]:
    """The issues of ``resource`` against its claimed profiles (and ``extra``), and the
    canonicals the server does not hold."""
    issues: list[Issue] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for url in [*registry.claimed(resource), *(extra or [])]:
        if url in seen:
            continue
        seen.add(url)
        found = registry.validate(resource, url)
        if found is None:
            unknown.append(url)
        else:
            issues.extend(found)
    return issues, unknown


def enforce(registry: ProfileRegistry, event: ResourceWriting) -> None:
    """Refuse (422) a write that does not conform to a held profile it claims (not checked
    again: what the server's own mapping built conformant, ``event.conformant``)."""
    if event.conformant or not registry.claimed(event.resource):
        return
    issues, _ = check(registry, event.resource)
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CoreError(422, "processing", f"{event.res_type} does not conform to its "
                        f"profile: {errors[0].diagnostics}{more}", issues=errors)


def validate_operation(core: Core, registry: ProfileRegistry, call: OperationCall
                       ) -> OperationResult:
    mode = call.param("mode")
    if mode is not None and mode not in MODES:
        raise CoreError(400, "invalid", f"$validate: mode {mode!r} is not one of "
                        f"{', '.join(sorted(MODES))}", expression=["mode"])
    profile = call.param("profile")
    if profile is not None and not isinstance(profile, str):
        raise CoreError(400, "invalid", "$validate: profile is a canonical URL",
                        expression=["profile"])
    res_type = call.res_type or ""
    resource = call.resource_param()
    if call.level == "instance" and (resource is None or mode == "delete"):
        stored = core.resources.read(call.caller, res_type, call.res_id or "")
        if mode == "delete":
            return OperationResult(info_outcome(
                f"{res_type}/{call.res_id} may be deleted: this server keeps no referential "
                "integrity rules that would forbid it"))
        resource = jsonio.loads(stored.content or b"{}")
    if resource is None:
        raise CoreError(400, "required", "$validate needs the resource: as the body, or as "
                        "the 'resource' parameter of a Parameters body",
                        expression=["resource"])
    if mode == "delete":
        raise CoreError(400, "invalid", "$validate mode=delete is invoked on an instance "
                        "(Type/id/$validate)", expression=["mode"])
    issues: list[Issue] = []
    if resource.get("resourceType") != res_type:
        issues.append(Issue("invalid", f"resourceType {resource.get('resourceType')!r} is not "
                            f"the URL's {res_type!r}", expression=["resourceType"]))
        return OperationResult(operation_outcome(issues))
    if mode == "update":
        if call.level == "instance" and resource.get("id") != call.res_id:
            issues.append(Issue("invalid", f"mode=update: the resource's id "
                                f"{resource.get('id')!r} is not {call.res_id!r}",
                                expression=[f"{res_type}.id"]))
        elif not resource.get("id"):
            issues.append(Issue("required", "mode=update: the resource has no id",
                                expression=[f"{res_type}.id"]))
    try:
        validate_structure(resource, res_type, status=422)
    except CoreError as exc:
        issues.extend(exc.issues)
    extra = [profile] if profile else []
    found, unknown = check(registry, resource, extra)
    issues.extend(found)
    for url in unknown:
        if url == profile:
            issues.append(Issue("not-found", f"the profile {url} is not held by this server "
                                "(load it with `sonobridge ig load`)", expression=["profile"]))
        else:
            issues.append(Issue("informational", f"meta.profile {url} is not held by this "
                                "server: not checked", severity="information",
                                expression=[f"{res_type}.meta.profile"]))
    if not any(i.severity in ("error", "fatal", "warning") for i in issues):
        checked = _checked(resource, extra, unknown)
        issues.insert(0, Issue("informational", "no issues: the resource conforms to "
                               + (", ".join(checked) if checked else "the R4 structure"),
                               severity="information"))
    return OperationResult(operation_outcome(issues))


def _checked(resource: dict[str, Any], extra: list[str], unknown: list[str]) -> list[str]:
    claimed = resource.get("meta", {}).get("profile", []) if isinstance(
        resource.get("meta"), dict) else []
    return [u for u in dict.fromkeys([*claimed, *extra]) if u not in unknown]
