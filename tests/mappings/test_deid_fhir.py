"""A DiagnosticReport de-identified like its images (mappings/deid/fhir.py, pure)."""

from __future__ import annotations

from sonobridge.mappings.deid.fhir import clean_div, deidentify_report
from sonobridge.mappings.deid.text import identifying_strings

IDS = identifying_strings(["Wang^Fang", "Fang Wang"], ["PID-778899"], ["19850304"])


def report() -> dict:
    return {
        "resourceType": "DiagnosticReport", "id": "r1", "meta": {"versionId": "3"},
        "status": "final", "identifier": [{"value": "RPT-1"}],
        "category": [{"coding": [{"code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9"}]},
        "subject": {"reference": "Patient/original"},
        "encounter": {"reference": "Encounter/e1"},
        "basedOn": [{"reference": "ServiceRequest/s1"}],
        "performer": [{"display": "Dr. Li"}], "resultsInterpreter": [{"display": "Dr. Li"}],
        "result": [{"reference": "Observation/o1"}],
        "imagingStudy": [{"reference": "ImagingStudy/1.2.3"}],
        "presentedForm": [{"contentType": "application/pdf", "data": "JVBERi0="}],
        "extension": [{"url": "urn:x", "valueString": "Wang Fang"}],
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "effectivePeriod": {"start": "2023-04-15T10:00:00+08:00",
                            "end": "2023-04-15T10:30:00+08:00"},
        "issued": "2023-04-16T09:00:00Z",
        "conclusion": "Wang Fang (PID-778899): cyst, seen 2023-04-15",
        "conclusionCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}],
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                 '<p class="x" title="Wang Fang">Patient: <b>Wang Fang</b></p>'
                 "<p>born 1985-03-04 &lt;script&gt;</p></div>"},
    }


def test_allow_list_shift_and_clean() -> None:
    out = deidentify_report(report(), days=-100, identifying=IDS, subject="Patient/pseudo",
                            imaging_study="ImagingStudy/2.25.1")
    assert set(out) == {"resourceType", "meta", "status", "category", "code",
                        "conclusionCode", "subject", "imagingStudy", "effectivePeriod",
                        "issued", "conclusion", "text"}
    assert out["subject"] == {"reference": "Patient/pseudo"}
    assert out["imagingStudy"] == [{"reference": "ImagingStudy/2.25.1"}]
    assert out["effectivePeriod"] == {"start": "2023-01-05T10:00:00+08:00",
                                      "end": "2023-01-05T10:30:00+08:00"}
    assert out["issued"] == "2023-01-06T09:00:00Z"
    assert out["conclusion"] == "*** (***): cyst, seen ***"
    assert out["meta"]["security"][0]["code"] == "PSEUDED"
    assert "Wang" not in out["text"]["div"] and "1985" not in out["text"]["div"]
    assert "title=" not in out["text"]["div"]  # attributes dropped with the markup
    assert "&lt;script&gt;" in out["text"]["div"] and "<script>" not in out["text"]["div"]


def test_minimal_report_and_empty_div() -> None:
    out = deidentify_report({"resourceType": "DiagnosticReport"}, days=1, identifying=(),
                            subject=None, imaging_study=None)
    assert out["status"] == "final" and "subject" not in out
    assert clean_div("<div></div>", ()) == \
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>de-identified</p></div>'
    bad = deidentify_report({"resourceType": "DiagnosticReport",
                             "effectiveDateTime": "not a date"}, days=1, identifying=(),
                            subject=None, imaging_study=None)
    assert "effectiveDateTime" not in bad  # cannot be shifted, so not kept
