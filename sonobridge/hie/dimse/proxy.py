"""A legacy PACS behind DICOMweb: ``/dicomweb/peers/{AET}/…`` answers QIDO-RS with C-FIND
against that peer, and WADO-RS by first fetching the study (or series, or instance) with
C-GET into this server through the one ingest path, then serving it as any local study
(frames, metadata, renderings, and the same access rules). A DICOMweb viewer can so read a
PACS that only speaks DIMSE.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select

from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.qido import tag_of
from sonobridge.hie.dimse import scu
from sonobridge.hie.dimse.peers import Peer, load_peers
from sonobridge.store.dicom.ingest import DicomIngest
from sonobridge.store.tables import dicom_instances as I

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
    def __init__(self, core: Any) -> None:
        self.core = core
        self.aet = core.settings.dicom_aet
        self.ingest = DicomIngest(core)

    def peer(self, aet: str) -> Peer:
        found = load_peers(self.core.settings).get(aet)
        if found is None:
            raise DicomwebError(404, f"{aet} is not a known DICOM peer")
        return found

    def search(self, aet: str, level_name: str, params: list[tuple[str, str]],
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
                raise DicomwebError(400, f"unknown attribute {name!r}")
            from pydicom.datadict import dictionary_VR

            try:
                identifier.add_new(int(tag, 16), dictionary_VR(int(tag, 16)), value)
            except (KeyError, ValueError) as exc:
                raise DicomwebError(400, f"{name}: {exc}") from None
        limit = dict(params).get("limit")
        try:
            found = []
            for ds in scu.find(self.aet, self.peer(aet), identifier):
                found.append(ds.to_json_dict())
                if limit and limit.isdigit() and len(found) >= int(limit):
                    break
        except scu.ScuError as exc:
            raise DicomwebError(502, str(exc)) from None
        return found

    def fetch(self, aet: str, study: str, series: str | None, sop: str | None) -> int:
        """C-GET what is not here yet; returns how many instances arrived."""
        with self.core.store.reader.connect() as conn:
            query = select(I.c.sop_uid).where(I.c.study_uid == study)
            if series:
                query = query.where(I.c.series_uid == series)
            if sop:
                query = query.where(I.c.sop_uid == sop)
            if sop and conn.execute(query.limit(1)).first() is not None:
                return 0  # one instance asked for, and it is here
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE" if sop else ("SERIES" if series else "STUDY")
        identifier.StudyInstanceUID = study
        if series:
            identifier.SeriesInstanceUID = series
        if sop:
            identifier.SOPInstanceUID = sop
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
            outcome = self.ingest.ingest(received, source=f"C-GET {aet}", deferred=deferred)
            if outcome.ok:
                arrived[0] += 1
                return 0x0000
            return outcome.failure or 0xA700

        try:
            status, _, failed = scu.get(self.aet, self.peer(aet), identifier, receive)
        except scu.ScuError as exc:
            raise DicomwebError(502, str(exc)) from None
        finally:
            if deferred:
                self.ingest.sync_studies(deferred)
        if status not in (0x0000, 0xB000) and not arrived[0]:
            raise DicomwebError(502 if status != 0xA702 else 404,
                                f"{aet} answered the C-GET with status 0x{status & 0xFFFF:04X}"
                                f" ({failed} failed)")
        log.info("fetched %d instances of %s from %s", arrived[0], study, aet)
        return arrived[0]
