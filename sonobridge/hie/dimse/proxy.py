"""A legacy PACS behind DICOMweb: ``/dicomweb/peers/{AET}/…`` answers QIDO-RS with C-FIND
against that peer, and WADO-RS by first fetching the study (or series, or instance) into this
server through the one ingest path, then serving it as any local study (frames, metadata,
renderings, and the same access rules). A DICOMweb viewer can so read a PACS that only speaks
DIMSE. The fetch is a C-GET, or for a peer configured with ``retrieve=move`` a C-MOVE to our
own AE title: the PACS then sends to our C-STORE listener, as it would to any archive.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging.query import tag_of
from sonobridge.core.policy import Caller
from sonobridge.core.services import Core
from sonobridge.hie.dimse import scu
from sonobridge.hie.dimse.peers import Peer, load_peers

log = logging.getLogger("sonobridge.dimse.proxy")

LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
RETURN_KEYS = {
    "STUDY": ["StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
              "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
              "StudyDescription", "ModalitiesInStudy", "ReferringPhysicianName",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
               "SeriesDescription", "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
              "InstanceNumber", "Rows", "Columns", "NumberOfFrames"],
}


class Proxy:
    """A ``RemoteArchive`` (``core/imaging/remote.py``) over C-FIND and C-GET/C-MOVE."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.aet = core.settings.dicom_aet
        self.ingest = core.ingest

    def peer(self, aet: str) -> Peer:
        found = load_peers(self.core.settings).get(aet)
        if found is None:
            raise CoreError(404, "not-found", f"{aet} is not a known DICOM peer")
        return found

    def search(self, aet: str, level_name: str, params: Sequence[tuple[str, str]],
               study: str | None, series: str | None) -> list[dict[str, Any]]:
        """QIDO-RS through C-FIND: keyword or tag parameters become matching keys."""
        level = LEVELS[level_name]
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for keyword in RETURN_KEYS[level]:
            setattr(identifier, keyword, "")
        if study:
            identifier.StudyInstanceUID = study
        if series:
            identifier.SeriesInstanceUID = series
        for name, value in params:
            if name in ("limit", "offset", "fuzzymatching", "includefield"):
                continue
            tag = tag_of(name)
            if tag is None:
                raise CoreError(400, "invalid", f"unknown attribute {name!r}")
            from pydicom.datadict import dictionary_VR

            try:
                identifier.add_new(int(tag, 16), dictionary_VR(int(tag, 16)), value)
            except (KeyError, ValueError) as exc:
                raise CoreError(400, "invalid", f"{name}: {exc}") from None
        limit = dict(params).get("limit")
        try:
            found = []
            for ds in scu.find(self.aet, self.peer(aet), identifier):
                found.append(ds.to_json_dict())
                if limit and limit.isdecimal() and len(found) >= int(limit):
                    break
        except scu.ScuError as exc:
            raise CoreError(502, "transient", str(exc)) from None
        return found

    def fetch(self, caller: Caller, aet: str, study: str, series: str | None,
              sop: str | None) -> int:
        """C-GET (or C-MOVE) what is not here yet; returns how many instances arrived."""
        if sop and self.core.archive.has(study, series, sop):
            return 0  # one instance asked for, and it is here
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE" if sop else ("SERIES" if series else "STUDY")
        identifier.StudyInstanceUID = study
        if series:
            identifier.SeriesInstanceUID = series
        if sop:
            identifier.SOPInstanceUID = sop
        peer = self.peer(aet)
        if peer.retrieve == "move":
            return self._move(caller, peer, identifier, study)
        deferred: set[str] = set()
        arrived = [0]

        def receive(event: Any) -> int:
            try:
                path = event.dataset_path
                received = self.ingest.receiver.from_file(path)
                with contextlib.suppress(OSError):
                    path.unlink()
            except AttributeError:  # chunked receiving is off: the bytes are in memory
                received = self.ingest.receiver.receive([event.encoded_dataset()])
            outcome = self.ingest.ingest(received, caller, source=f"C-GET {aet}",
                                         deferred=deferred)
            if outcome.ok:
                arrived[0] += 1
                return 0x0000
            return outcome.failure or 0xA700

        try:
            status, _, failed = scu.get(self.aet, peer, identifier, receive)
        except scu.ScuError as exc:
            raise CoreError(502, "transient", str(exc)) from None
        finally:
            if deferred:
                self.ingest.sync_studies(deferred, caller)
        if status not in (0x0000, 0xB000) and not arrived[0]:
            raise _failed(status, f"{aet} answered the C-GET with status "
                                  f"0x{status & 0xFFFF:04X} ({failed} failed)")
        log.info("fetched %d instances of %s from %s", arrived[0], study, aet)
        return arrived[0]

    def _move(self, caller: Caller, peer: Peer, identifier: Dataset, study: str) -> int:
        """C-MOVE to our own AE title: the objects come in through the DIMSE listener's
        C-STORE (the one ingest path) before the PACS sends its final response."""
        try:
            status, completed, failed = scu.move(self.aet, peer, self.aet, identifier)
        except scu.ScuError as exc:
            raise CoreError(502, "transient", str(exc)) from None
        if completed:
            # The listener rebuilds the ImagingStudy when the PACS's association ends, which
            # may be just after its final response: rebuilt here too (no new version if equal).
            self.ingest.sync_studies({study}, caller)
        if status not in (0x0000, 0xB000) and not completed:
            reason = {0xA801: f"{peer.aet} does not know {self.aet} as a move destination",
                      0xA702: "nothing could be sent"}.get(status & 0xFFFF, f"{failed} failed")
            raise _failed(status, f"{peer.aet} answered the C-MOVE with status "
                                  f"0x{status & 0xFFFF:04X} ({reason})")
        log.info("moved %d instances of %s from %s", completed, study, peer.aet)
        return completed


def _failed(status: int, message: str) -> CoreError:
    """A failed retrieve: 404 when the peer had nothing to send (A702), else 502."""
    if status & 0xFFFF == 0xA702:
        return CoreError(404, "not-found", message)
    return CoreError(502, "transient", message)
