"""Every resource type can be indexed, whatever its search parameters' expressions: a
parameter the compiler does not take is left unindexed, never a failed write."""

from __future__ import annotations

import pytest

from sonobridge.core.search.registry import Registry, searchable_types


def test_a_minimal_resource_of_every_type_indexes():
    registry = Registry()
    for res_type in searchable_types():
        registry.index_rows(res_type, {"resourceType": res_type, "id": "x"})


@pytest.mark.parametrize("with_variant", [False, True])
def test_a_molecular_sequence_indexes_without_its_percent_resource_composites(with_variant):
    resource = {"resourceType": "MolecularSequence", "id": "m", "coordinateSystem": 0,
                "referenceSeq": {"chromosome": {"coding": [{"code": "1"}]},
                                 "windowStart": 1, "windowEnd": 9},
                "patient": {"reference": "Patient/p"}}
    if with_variant:
        resource["variant"] = [{"start": 2, "end": 3}]
    rows = Registry().index_rows("MolecularSequence", resource)
    refs = {(r["param"], r["target_id"]) for r in rows["idx_reference"]}
    assert ("patient", "p") in refs
