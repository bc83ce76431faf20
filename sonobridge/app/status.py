"""The read-only status page at ``/`` (状态页): what an operator checks first.

Version, uptime, which listeners run where, the send queues' depths and failures, the storage
in use, and links to the APIs and consoles — in Chinese and English. It is public like
``/healthz`` and ``/metrics``, so it shows counts and settings only: no patient data, no
error texts (those name patients; ``sonobridge mllp status`` and ``dicom status`` show them to
an operator on the host), no paths or credentials.
"""

from __future__ import annotations

import html
import platform
import shutil
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Info
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from sonobridge import __version__
from sonobridge.core.services import Core
from sonobridge.store import queues

STARTED = time.time()
# ``sonobridge_build_info{version=…,python=…} 1``: which version each scraped process runs.
Info("sonobridge_build", "The SonoBridge version this process runs").info(
    {"version": __version__, "python": platform.python_version()})


@dataclass(frozen=True)
class QueueState:
    name: str
    zh: str
    waiting: int
    failed: int


def _queue_states(core: Core) -> list[QueueState]:
    out = []
    for name, zh, queue in (
            ("HL7 results out", "HL7 结果外发", queues.hl7_outbox(core.engine)),
            ("DICOM forwarding", "DICOM 转发", queues.dicom_forwards(core.engine)),
            ("Storage Commitment reports", "存储确认回执", queues.dicom_commitments(core.engine))):
        table = queue.table
        try:
            with core.engine.connect() as conn:
                failed = conn.execute(select(func.count()).select_from(table).where(
                    *queue.scope, table.c.status == "failed")).scalar_one()
            out.append(QueueState(name, zh, queue.waiting(), int(failed)))
        except SQLAlchemyError:  # a table not there yet (old schema): unknown, not a 500
            out.append(QueueState(name, zh, -1, -1))
    return out


def snapshot(core: Core) -> dict[str, Any]:
    """Everything the page shows, as JSON (``/?format=json`` gives it to scripts)."""
    settings = core.settings
    listeners = []
    if settings.mllp_port:
        listeners.append({"name": "HL7 v2 MLLP", "address":
                          f"{settings.mllp_host}:{settings.mllp_port}"})
    if settings.dicom_port:
        listeners.append({"name": "DICOM DIMSE", "address":
                          f"{settings.dicom_aet}@{settings.dicom_host}:{settings.dicom_port}"})
    disk = shutil.disk_usage(settings.data_dir) if settings.data_dir.exists() else None
    database = "postgresql" if settings.resolved_database_url.startswith("postgresql") \
        else "sqlite"
    return {
        "version": __version__,
        "uptime_seconds": int(time.time() - STARTED),
        "database": database,
        "audit": settings.audit,
        "listeners": listeners,
        "queues": [{"name": q.name, "zh": q.zh, "waiting": q.waiting, "failed": q.failed}
                   for q in _queue_states(core)],
        "disk": {"total_bytes": disk.total, "free_bytes": disk.free} if disk else None,
    }


def _uptime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} d {hours} h {rest // 60} min"


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB"


LINKS = (
    ("/fhir/metadata", "FHIR CapabilityStatement", "FHIR 能力声明"),
    ("/fhir/.well-known/smart-configuration", "SMART configuration", "SMART 配置"),
    ("/auth/authorize", "Sign-in (SMART)", "登录"),
    ("/readyz", "Readiness", "就绪检查"),
    ("/metrics", "Prometheus metrics", "监控指标"),
)


def render(data: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(q['name'])}<br><small>{e(q['zh'])}</small></td>"
        f"<td>{'?' if q['waiting'] < 0 else q['waiting']}</td>"
        f"<td class=\"{'bad' if q['failed'] > 0 else ''}\">"
        f"{'?' if q['failed'] < 0 else q['failed']}</td></tr>"
        for q in data["queues"])
    listeners = "".join(f"<li>{e(item['name'])}: <code>{e(item['address'])}</code></li>"
                        for item in data["listeners"]) or "<li>none / 无</li>"
    links = "".join(f'<li><a href="{href}">{e(en)}</a> · {e(zh)}</li>'
                    for href, en, zh in LINKS)
    disk = data["disk"]
    disk_text = (f"{_gb(disk['free_bytes'])} free of {_gb(disk['total_bytes'])} / "
                 f"剩余 {_gb(disk['free_bytes'])}") if disk else "?"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SonoBridge {e(data['version'])} · 状态 Status</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.3em .8em;
text-align:left}}.bad{{color:#b00;font-weight:bold}}small{{color:#666}}</style></head>
<body><h1>SonoBridge <small>远程超声互联网关 · remote ultrasound gateway</small></h1>
<p>Version 版本 <b>{e(data['version'])}</b> · up 运行 {_uptime(data['uptime_seconds'])} ·
database 数据库 {e(data['database'])} · audit 审计 {'on 开启' if data['audit'] else 'OFF 关闭'}
· disk 磁盘 {e(disk_text)}</p>
<h2>Listeners 监听</h2><ul>{listeners}</ul>
<h2>Send queues 发送队列</h2>
<table><tr><th>queue 队列</th><th>waiting 待发</th><th>failed 失败</th></tr>{rows}</table>
<h2>APIs and consoles 接口与控制台</h2><ul>{links}</ul>
<p><small>FHIR R4 <code>/fhir</code> · DICOMweb <code>/dicomweb</code> · WADO-URI
<code>/wado</code>. Details of failures: <code>sonobridge mllp status</code>,
<code>sonobridge dicom status</code> on the host. 详细失败信息请在服务器上运行上述命令。</small></p>
</body></html>"""


def status_endpoint(core: Core) -> Any:
    async def status(request: Request) -> Response:
        data = await run_in_threadpool(snapshot, core)
        if request.query_params.get("format") == "json" or \
                "application/json" in request.headers.get("accept", ""):
            return JSONResponse(data, headers={"Cache-Control": "no-store"})
        return HTMLResponse(render(data), headers={"Cache-Control": "no-store"})

    return status
