"""The run's results as JUnit XML (for CI), JSON, and one self-contained HTML page."""

from __future__ import annotations

import html
import json
import platform
import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sonobridge.conformance.kit.model import ERROR, FAIL, PASS, SKIP, Result
from sonobridge.conformance.kit.runner import Options, counts


def _by_suite(results: list[Result]) -> OrderedDict[str, list[Result]]:
    out: OrderedDict[str, list[Result]] = OrderedDict()
    for r in results:
        out.setdefault(r.suite, []).append(r)
    return out


def _evidence_text(r: Result) -> str:
    parts = []
    for e in r.evidence:
        parts.append(f"## {e.summary}")
        if e.request:
            parts.append(e.request)
        if e.response:
            parts.append(e.response)
    return "\n".join(parts)[:20000]


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    """XML 1.0 has no place for control characters (an MLLP frame's <VT> and <FS>, a server's
    stray bytes): shown as \\xNN instead."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def junit(results: list[Result]) -> str:
    root = ET.Element("testsuites", name="sonobridge-conformance")
    total = counts(results)
    root.set("tests", str(len(results)))
    root.set("failures", str(total[FAIL]))
    root.set("errors", str(total[ERROR]))
    root.set("skipped", str(total[SKIP]))
    for suite, items in _by_suite(results).items():
        c = counts(items)
        el = ET.SubElement(root, "testsuite", name=suite, tests=str(len(items)),
                           failures=str(c[FAIL]), errors=str(c[ERROR]), skipped=str(c[SKIP]),
                           time=f"{sum(r.duration for r in items):.3f}")
        for r in items:
            case = ET.SubElement(el, "testcase", classname=f"{suite}.{r.group}",
                                 name=_xml_safe(f"{r.test.id}: {r.test.title}"),
                                 time=f"{r.duration:.3f}")
            message = _xml_safe(r.message)
            if r.outcome == FAIL:
                ET.SubElement(case, "failure", message=message).text = message
            elif r.outcome == ERROR:
                ET.SubElement(case, "error", message=message).text = message
            elif r.outcome == SKIP:
                ET.SubElement(case, "skipped", message=message)
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="requirement", value=r.test.requirement.text)
            ET.SubElement(props, "property", name="specification", value=r.test.requirement.url)
            ET.SubElement(case, "system-out").text = _xml_safe(_evidence_text(r))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def as_json(results: list[Result], options: Options) -> dict[str, Any]:
    return {
        "kit": "sonobridge-conformance",
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": {"fhir": options.target, "dicomweb": options.dicomweb,
                   "dicom": options.dicom, "mllp": options.mllp},
        "suites": list(options.suites),
        "summary": counts(results),
        "results": [r.to_json() for r in results],
    }


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
header{background:#123a5a;color:#fff;padding:16px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;opacity:.85}
main{padding:16px 24px;max-width:1200px}
.summary span{display:inline-block;margin-right:10px;padding:3px 10px;border-radius:12px;
font-weight:600}
.pass{background:#d8f3dc;color:#1b5e20}.fail{background:#ffd6d6;color:#8b0000}
.skip{background:#eceff1;color:#455a64}.error{background:#ffe0b2;color:#8a4b00}
h2{margin-top:28px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d0d7de;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#eef1f4} td.o{font-weight:700;text-transform:uppercase;width:60px}
details{margin-top:4px} summary{cursor:pointer;color:#0b5cad}
pre{white-space:pre-wrap;word-break:break-all;background:#f3f4f6;padding:6px;margin:4px 0;
font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;max-height:360px;overflow:auto}
.msg{color:#8b0000} a{color:#0b5cad}
"""


def html_report(results: list[Result], options: Options) -> str:
    e = html.escape
    c = counts(results)
    target = ", ".join(f"{k}: {v}" for k, v in (
        ("FHIR", options.target), ("DICOMweb", options.dicomweb), ("DIMSE", options.dicom),
        ("MLLP", options.mllp)) if v)
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
           f"<title>SonoBridge conformance report</title><style>{_CSS}</style></head><body>"
           f"<header><h1>SonoBridge conformance kit — report</h1>"
           f"<p>{e(target or 'no target')} · suites {e(', '.join(options.suites))} · "
           f"{e(datetime.now(UTC).isoformat(timespec='seconds'))} · "
           f"Python {e(platform.python_version())}</p></header><main>"
           f"<p class=summary>" + "".join(
               f"<span class={k}>{c[k]} {k}</span>" for k in (PASS, FAIL, ERROR, SKIP))
           + "</p>"]
    for suite, items in _by_suite(results).items():
        sc = counts(items)
        out.append(f"<h2>{e(suite)} <small>({sc[PASS]} pass, {sc[FAIL]} fail, "
                   f"{sc[ERROR]} error, {sc[SKIP]} skip)</small></h2><table>"
                   "<tr><th>result</th><th>test</th><th>requirement</th></tr>")
        for r in items:
            req = e(r.test.requirement.text)
            if r.test.requirement.url:
                req = (f"{req} <a href='{e(r.test.requirement.url)}'>"
                       f"{e(_short(r.test.requirement.url))}</a>")
            body = f"<b>{e(r.test.id)}</b> {e(r.test.title)}"
            if r.message:
                body += f"<div class=msg>{e(r.message)}</div>"
            if r.evidence:
                body += f"<details><summary>evidence ({len(r.evidence)})</summary>"
                for ev in r.evidence:
                    body += f"<div><b>{e(ev.summary)}</b>"
                    if ev.elapsed_ms:
                        body += f" <small>{ev.elapsed_ms:.0f} ms</small>"
                    if ev.request:
                        body += f"<pre>{e(ev.request)}</pre>"
                    if ev.response:
                        body += f"<pre>{e(ev.response)}</pre>"
                    body += "</div>"
                body += "</details>"
            out.append(f"<tr><td class='o {r.outcome}'>{r.outcome}</td><td>{body}</td>"
                       f"<td>{req}</td></tr>")
        out.append("</table>")
    out.append("</main></body></html>")
    return "".join(out)


def _short(url: str) -> str:
    return url.split("//", 1)[-1][:70]


def write_json(results: list[Result], options: Options) -> str:
    return json.dumps(as_json(results, options), indent=2, ensure_ascii=False)
