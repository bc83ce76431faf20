"""The guide as a static HTML site (Chinese and English): an index page, one page per profile
(its elements, bindings and examples), one page per value set and code system."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonobridge import __version__
from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.domains import canonical_of

if TYPE_CHECKING:
    from sonobridge.conformance.ig.build import Guide

STYLE = """body{font-family:system-ui,'Noto Sans SC',sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222}table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f2f4f7}tr.diff{background:#fff8e1}pre{background:#f6f8fa;padding:1em;
overflow:auto;font-size:.85em}.en{color:#555}code{font-size:.95em}"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<p><a href=\"index.html\">首页 Home</a> · SonoBridge IG {escape(__version__)}</p>"
            f"{body}</body></html>\n")


def _type_text(element: dict[str, Any]) -> str:
    parts = []
    for t in element.get("type", []):
        targets = [p.rsplit("/", 1)[-1] for p in t.get("targetProfile", [])]
        parts.append(f"{t['code']}({' | '.join(targets)})" if targets else t["code"])
    return " | ".join(parts)


def _binding_text(binding: dict[str, Any]) -> str:
    if not binding:
        return ""
    vs = binding.get("valueSet", "")
    if vs.startswith(content.CANONICAL):
        rid = vs.rsplit("/", 1)[-1]
        target = f"<a href=\"ValueSet-{escape(rid)}.html\">{escape(rid)}</a>"
    else:
        target = escape(vs or binding.get("description", ""))
    return f"{escape(binding.get('strength', ''))}: {target}"


def _constraint_text(element: dict[str, Any]) -> str:
    out = [f"{k} = <code>{escape(json.dumps(v, ensure_ascii=False))}</code>"
           for k, v in element.items() if k.startswith(("pattern", "fixed"))]
    if element.get("mustSupport"):
        out.append("must support 必须支持")
    if element.get("slicing"):
        rules = element["slicing"]
        on = ", ".join(f"{d['type']} {d['path']}" for d in rules.get("discriminator", []))
        out.append(f"sliced 切片 by {escape(on)} ({escape(rules.get('rules', 'open'))})")
    out.extend(f"<b>{escape(c['key'])}</b> ({escape(c['severity'])}): {escape(c['human'])}"
               f"<br><code>{escape(c['expression'])}</code>"
               for c in element.get("constraint", []) if "expression" in c)
    return "<br>".join(out)


def profile_page(sd: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    diff_ids = {e["id"] for e in sd["differential"]["element"][1:]}
    rows = []
    for el in sd["snapshot"]["element"]:
        depth = el["path"].count(".")
        cls = " class=\"diff\"" if el["id"] in diff_ids else ""
        slice_name = f" : <b>{escape(el['sliceName'])}</b>" if el.get("sliceName") else ""
        rows.append(
            f"<tr{cls}><td style=\"padding-left:{0.5 + depth}em\"><code>{escape(el['path'])}"
            f"</code>{slice_name}</td>"
            f"<td>{el.get('min', 0)}..{escape(str(el.get('max', '*')))}</td>"
            f"<td>{escape(_type_text(el))}</td><td>{_binding_text(el.get('binding', {}))}</td>"
            f"<td>{escape(el.get('short', ''))}</td><td>{_constraint_text(el)}</td></tr>")
    bindings = [el for el in sd["snapshot"]["element"]
                if el["id"] in diff_ids and el.get("binding")]
    binding_rows = "".join(
        f"<tr><td><code>{escape(el['path'])}</code></td><td>{_binding_text(el['binding'])}</td>"
        "</tr>" for el in bindings) or "<tr><td colspan=\"2\">—</td></tr>"
    ex_html = "".join(
        f"<h3>{escape(ex['resourceType'])}/{escape(ex['id'])}</h3>"
        f"<pre>{escape(json.dumps(ex, ensure_ascii=False, indent=2))}</pre>"
        for ex in examples) or "<p>—</p>"
    body = (
        f"<h1>{escape(sd['title'])}</h1>"
        f"<p>{escape(sd['description'])}</p>"
        f"<table><tr><th>名称 Name</th><td>{escape(sd['name'])}</td></tr>"
        f"<tr><th>Canonical URL</th><td><code>{escape(sd['url'])}</code></td></tr>"
        f"<tr><th>基础资源 Base</th><td><code>{escape(sd['baseDefinition'])}</code></td></tr>"
        f"<tr><th>版本 Version</th><td>{escape(sd['version'])}</td></tr></table>"
        "<h2>元素 Elements</h2><p>高亮行为本配置文件的约束 Highlighted rows are constrained "
        "by this profile.</p>"
        "<table><tr><th>路径 Path</th><th>基数 Card.</th><th>类型 Type</th>"
        "<th>绑定 Binding</th><th>说明 Short</th><th>约束 Constraints</th></tr>"
        f"{''.join(rows)}</table>"
        "<h2>术语绑定 Bindings</h2><table><tr><th>路径 Path</th><th>值集 Value set</th></tr>"
        f"{binding_rows}</table>"
        f"<h2>示例 Examples</h2>{ex_html}")
    return _page(sd["title"], body)


def terminology_page(res: dict[str, Any], g: Guide) -> str:
    if res["resourceType"] == "ValueSet":
        includes = res.get("compose", {}).get("include", [])
        systems = [i.get("system", "") for i in includes]
        # listed codes of another system (English in the designation), else a whole system
        concepts = [{**c, "definition": next(iter(d["value"] for d in c.get("designation", [])),
                                             "")} for i in includes for c in i.get("concept", [])]
        concepts += [c for i in includes if not i.get("concept")
                     for c in g.by_url().get(i.get("system", ""), {}).get("concept", [])]
        intro = "".join(
            f"<p>包含代码系统 Includes <a href=\"CodeSystem-{escape(s.rsplit('/', 1)[-1])}"
            f".html\"><code>{escape(s)}</code></a></p>" if s.startswith(content.CANONICAL)
            else f"<p>包含 Includes <code>{escape(s)}</code></p>" for s in systems)
    else:
        concepts, intro = res.get("concept", []), ""
    rows = "".join(
        f"<tr><td><code>{escape(c['code'])}</code></td><td>{escape(c.get('display', ''))}</td>"
        f"<td class=\"en\">{escape(c.get('definition', ''))}</td></tr>" for c in concepts)
    body = (f"<h1>{escape(res['title'])}</h1><p>{escape(res.get('description', ''))}</p>"
            f"<p><code>{escape(res['url'])}</code></p>{intro}"
            "<table><tr><th>代码 Code</th><th>中文</th><th>English</th></tr>"
            f"{rows}</table>")
    return _page(res["title"], body)


def index_page(g: Guide) -> str:
    def items(kind: str) -> str:
        found = [r for r in g.conformance if r["resourceType"] == kind]
        if kind in ("StructureDefinition", "ValueSet", "CodeSystem"):
            links = [f"<li><a href=\"{kind}-{escape(r['id'])}.html\">{escape(r['title'])}</a>"
                     f" <code>{escape(r['url'])}</code></li>" for r in found]
        else:
            links = [f"<li>{escape(r.get('title') or r.get('name') or r['id'])} <code>"
                     f"{escape(' '.join(canonical_of(r)))}</code></li>" for r in found]
        return "".join(links) or "<li>—</li>"

    body = (
        "<h1>SonoBridge 远程超声实施指南<br><span class=\"en\">SonoBridge remote ultrasound "
        "implementation guide</span></h1>"
        "<p>本指南描述 SonoBridge 网关的 FHIR R4 配置文件、术语、搜索参数与示例：远程会诊、超声报告"  # noqa: RUF001
        "与测量、危急值通知、质控、教学病例、WS/T 500 文档与订阅。</p>"
        "<p class=\"en\">This guide describes the FHIR R4 profiles, "
        "terminology, search parameters and examples of the SonoBridge gateway: remote "
        "consultation, ultrasound reports and measurements, critical value notification, quality "
        "control, teaching cases, WS/T 500 documents and subscriptions.</p>"
        f"<p>FHIR NPM 包 Package: <code>{escape(content.PACKAGE_NAME)}#{escape(__version__)}"
        f"</code> · canonical <code>{escape(content.CANONICAL)}</code> · FHIR 4.0.1</p>"
        f"<h2>配置文件 Profiles</h2><ul>{items('StructureDefinition')}</ul>"
        f"<h2>值集 Value sets</h2><ul>{items('ValueSet')}</ul>"
        f"<h2>代码系统 Code systems</h2><ul>{items('CodeSystem')}</ul>"
        f"<h2>搜索参数 Search parameters</h2><ul>{items('SearchParameter')}</ul>"
        f"<h2>操作 Operations</h2><ul>{items('OperationDefinition')}</ul>"
        f"<h2>标识符系统 Identifier systems</h2><ul>{items('NamingSystem')}</ul>"
        f"<h2>质控 Quality control</h2><ul>{items('Questionnaire')}{items('Measure')}"
        f"{items('Library')}{items('ViewDefinition')}</ul>"
        f"<h2>订阅主题 Subscription topics</h2><ul>{items('Basic')}</ul>"
        f"<h2>能力声明 CapabilityStatement</h2><ul>{items('CapabilityStatement')}</ul>"
        "<h2>示例 Examples</h2><ul>" + "".join(
            f"<li>{escape(e['resourceType'])}/{escape(e['id'])}</li>" for e in g.examples)
        + "</ul>")
    return _page("SonoBridge IG", body)


def write_site(g: Guide, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, html: str) -> None:
        path = out / name
        path.write_text(html, "utf-8")
        written.append(path)

    put("index.html", index_page(g))
    for sd in g.profiles():
        mine = [e for e in g.examples if sd["url"] in e.get("meta", {}).get("profile", [])]
        put(f"StructureDefinition-{sd['id']}.html", profile_page(sd, mine))
    for res in g.conformance:
        if res["resourceType"] in ("ValueSet", "CodeSystem"):
            put(f"{res['resourceType']}-{res['id']}.html", terminology_page(res, g))
    return written
