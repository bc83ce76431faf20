"""What `sonobridge serve` runs beside HTTP, and which process runs it.

Per process (every worker): the warm-up and the watch that picks up custom SearchParameters
other processes write. Once per cluster (the process that holds ``app/leader.py``'s lock): the
MLLP and DIMSE listeners (plain and TLS), the send queues' senders (HL7 results, DICOM
forwarding, FHIR subscription rest-hooks, the ATNA audit feed) and the periodic domain checks
(overdue consultations, critical values to escalate). The first election is held before the app
answers, so a single process has its listeners up when ``/healthz`` first says ok; then every
``POLL`` seconds a follower tries again (taking over within seconds of a leader's death) and
a leader checks it still holds the lock, stopping everything if it lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio.to_thread

from sonobridge.app.leader import POLL, Leadership
from sonobridge.core.services import Core, SearchParamWatch

log = logging.getLogger("sonobridge.app.listeners")


class ClusterDuties:
    """The listeners and senders that run in the leader only."""

    def __init__(self, core: Core, subscriptions: Any) -> None:
        self.core = core
        self.subscriptions = subscriptions
        self.running = False
        self.mllp: Any = None
        self.mllp_tls: Any = None
        self.dimse: Any = None
        self._threads: list[Any] = []

    async def start(self) -> None:
        core, settings = self.core, self.core.settings
        if settings.mllp_port:
            from sonobridge.hie.mllp.listener import MllpListener

            self.mllp = MllpListener(core, settings.mllp_host, settings.mllp_port,
                                     settings.hl7_max_message_size)
            await self.mllp.start()
        if settings.mllp_tls_port:
            from sonobridge.hie.mllp.listener import MllpListener
            from sonobridge.tls import server_context

            self.mllp_tls = MllpListener(core, settings.mllp_host, settings.mllp_tls_port,
                                         settings.hl7_max_message_size,
                                         tls=server_context(settings, client_certificates=True))
            await self.mllp_tls.start()
        if settings.sends_results:
            from sonobridge.hie.mllp.outbound import OutboxSender

            self._threads.append(OutboxSender(core))
        if settings.dicom_port or settings.dicom_tls_port:
            from sonobridge.hie.dimse.scp import DimseServer

            self.dimse = DimseServer(core)
            self.dimse.start()
        if settings.dicom_forward:
            from sonobridge.hie.dimse.forward import ForwardSender

            self._threads.append(ForwardSender(core))
        if settings.audit_feed and settings.audit:
            from sonobridge.hie.syslog import AuditFeedSender

            # The ATNA feed (ITI-20): the trail sent to the collector, once per cluster.
            self._threads.append(AuditFeedSender(core))
        if settings.xds_repository_url:  # ITI-41 of final reports (hie/xds/outbound.py)
            from sonobridge.hie.xds.outbound import XdsSender

            self._threads.append(XdsSender(core))
        if self.subscriptions is not None:
            from sonobridge.fhir.resthook import RestHookSender

            self._threads.append(RestHookSender(self.subscriptions))
        # Consultation requests past their deadline get flagged (once, by one process).
        from sonobridge.core.consultation import OverdueCheck, workflow_of

        self._threads.append(OverdueCheck(workflow_of(core)))
        # Critical values not acknowledged in time are escalated (US-CV-01), once.
        from sonobridge.core.critical import EscalationCheck, critical_of

        self._threads.append(EscalationCheck(critical_of(core)))
        # Signed reports' PDFs, rendered off the request path (queued report-pdf Tasks), once.
        from sonobridge.core.pdf.report import PdfRenderer, report_pdf_of

        self._threads.append(PdfRenderer(report_pdf_of(core)))
        for thread in self._threads:
            thread.start()
        self.running = True

    async def stop(self) -> None:
        for listener in (self.mllp, self.mllp_tls):
            if listener is not None:
                await listener.stop()
        self.mllp = self.mllp_tls = None
        if self.dimse is not None:
            self.dimse.stop()
            self.dimse = None
        for thread in self._threads:
            thread.stop()
        self._threads = []
        self.running = False


@contextlib.asynccontextmanager
async def run(app: Any, core: Core, subscriptions: Any) -> Any:
    """The lifespan's part: per-process duties, the election, the cluster duties."""
    from sonobridge.app import warmup

    warmup.start(core)
    watch = SearchParamWatch(core)
    watch.start()
    leadership = Leadership(core.engine, core.settings.data_dir)
    duties = ClusterDuties(core, subscriptions)
    app.state.duties = duties

    async def elect_once() -> None:
        if not duties.running:
            if await anyio.to_thread.run_sync(leadership.try_acquire):
                log.info("this process runs the listeners and senders")
                try:
                    await duties.start()
                except BaseException:
                    await duties.stop()
                    leadership.release()
                    raise
        elif not await anyio.to_thread.run_sync(leadership.still_held):
            await duties.stop()

    async def elect_forever() -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                await elect_once()
            except Exception:  # the database away for a moment: try again next poll
                log.exception("listeners' election failed")

    await elect_once()
    task = asyncio.create_task(elect_forever())
    try:
        yield duties
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await duties.stop()
        leadership.release()
        watch.stop()
