"""What every part of the guide's content shares: the canonical base, the publication
metadata and the small builders of a definition's common elements. Split out so that
``content.py`` (the consultation and report definitions) can take in ``domains.py`` (what
the other domains emit) without an import cycle."""

from __future__ import annotations

from typing import Any

from sonobridge import __version__

CANONICAL = "http://sonobridge.org/fhir"
PUBLISHER = "SonoBridge"
DATE = "2026-12-03"


def url(kind: str, rid: str) -> str:
    return f"{CANONICAL}/{kind}/{rid}"


def common(kind: str, rid: str, name: str, title: str, description: str) -> dict[str, Any]:
    return {"resourceType": kind, "id": rid, "url": url(kind, rid), "version": __version__,
            "name": name, "title": title, "status": "active", "experimental": False,
            "date": DATE, "publisher": PUBLISHER, "description": description}


def invariant(key: str, human: str, expression: str, severity: str = "error"
              ) -> dict[str, Any]:
    return {"key": key, "severity": severity, "human": human, "expression": expression,
            "source": url("StructureDefinition", "sonobridge")}
