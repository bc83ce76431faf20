"""``_summary`` and ``_elements``: a reduced copy of a resource, tagged SUBSETTED."""

from __future__ import annotations

from typing import Any

from sonobridge.core.schema import TypeInfo, resource_info, type_info

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
_ALWAYS = ("resourceType", "id", "meta")


def _tagged(out: dict[str, Any]) -> dict[str, Any]:
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    out["meta"] = meta
    return out


def _summary_of(obj: dict[str, Any], info: TypeInfo | None) -> dict[str, Any]:
    if info is None:
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key[1:] if key.startswith("_") else key
        spec = info.elements.get(name)
        if key in _ALWAYS or (spec is not None and (spec.summary or spec.required)):
            if spec is not None and spec.kind == "complex" and key == name:
                sub = type_info(spec.model)
                value = [_summary_of(v, sub) if isinstance(v, dict) else v for v in value] \
                    if isinstance(value, list) else \
                    (_summary_of(value, sub) if isinstance(value, dict) else value)
            out[key] = value
    return out


def summarize(resource: dict[str, Any], mode: str | None, elements: list[str]) -> dict[str, Any]:
    """Apply ``_summary`` (true, text, data) or ``_elements`` to one resource."""
    res_type = resource.get("resourceType", "")
    info = resource_info(res_type)
    if mode == "true":
        return _tagged(_summary_of(resource, info))
    if mode == "text":
        keep = {"text"} | {n for n, e in (info.elements.items() if info else []) if e.required}
        return _tagged({k: v for k, v in resource.items()
                        if k in _ALWAYS or k.lstrip("_") in keep})
    if mode == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    if elements:
        wanted = {e.split(".")[0].removeprefix(f"{res_type}.") for e in elements}
        out = {}
        for key, value in resource.items():
            if key in _ALWAYS or key.lstrip("_") in wanted:
                out[key] = value
                continue
            # a choice element asked for by its base name: value -> valueQuantity
            if any(key.startswith(w) and key[len(w):][:1].isupper() for w in wanted):
                out[key] = value
        return _tagged(out)
    return resource
