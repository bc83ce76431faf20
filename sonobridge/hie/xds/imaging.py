"""SonoBridge as XDS-I.b Imaging Document Source: RAD-69 Retrieve Imaging Document Set
(IHE RAD TF-3 4.69). Each DocumentRequest names a stored SOP instance (DocumentUniqueId = SOP
Instance UID) in a study and series; the answer carries the DICOM file as stored
(application/dicom) when its transfer syntax is one the requester lists, each other one an
error (``XDSRetrieveDocumentTransferSyntaxUnavailable``, or ``XDSDocumentUniqueIdError`` for
what is not here). Access is the DICOMweb rule: the caller's right to read the study's
ImagingStudy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller
from sonobridge.hie.xds.ebrim import MetadataError
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.registry import MAX_DOCUMENTS, Retrieved
from sonobridge.hie.xds.soap import Message
from sonobridge.hie.xds.xml import q, schema_errors

if TYPE_CHECKING:
    from sonobridge.core.services import Core

MAX_BYTES = 512 * 1024 * 1024  # of one RAD-69 answer (it is built in memory)


class ImagingSource:
    def __init__(self, core: Core, peers: Peers) -> None:
        self.core = core
        self.peers = peers

    def retrieve(self, caller: Caller, message: Message
                 ) -> tuple[list[Retrieved], list[MetadataError]]:
        request = message.body
        problems = schema_errors(request)
        if request.tag != q("xdsi", "RetrieveImagingDocumentSetRequest") or problems:
            return [], [MetadataError("XDSRepositoryError",
                                      "not a valid RetrieveImagingDocumentSetRequest: "
                                      + "; ".join(problems))]
        syntaxes = {(t.text or "").strip() for t in request.iter(q("xdsi", "TransferSyntaxUID"))}
        asked: list[tuple[str, str, str, str]] = []
        for study in request.findall(q("xdsi", "StudyRequest")):
            for series in study.findall(q("xdsi", "SeriesRequest")):
                for doc in series:
                    if doc.tag != q("xds", "DocumentRequest"):
                        return [], [MetadataError("XDSRepositoryError",
                                                  f"{doc.tag} is not a DocumentRequest")]
                    repository = doc.findtext(q("xds", "RepositoryUniqueId"))
                    sop = doc.findtext(q("xds", "DocumentUniqueId"))
                    if not repository or not sop:
                        return [], [MetadataError(
                            "XDSRepositoryError", "a DocumentRequest needs RepositoryUniqueId "
                            "and DocumentUniqueId")]
                    asked.append((study.get("studyInstanceUID", ""),
                                  series.get("seriesInstanceUID", ""), repository.strip(),
                                  sop.strip()))
        if len(asked) > MAX_DOCUMENTS:
            return [], [MetadataError("XDSRepositoryError",
                                      f"more than {MAX_DOCUMENTS} instances asked at once")]
        found: list[Retrieved] = []
        errors: list[MetadataError] = []
        total = 0
        archive = self.core.archive
        for study, series, repository, sop in asked:
            if repository != self.peers.repository_unique_id:
                errors.append(MetadataError("XDSUnknownRepositoryId",
                                            f"repository {repository} is not this one", sop))
                continue
            try:
                self.core.access.studies(caller, "r", study)
                row = archive.instance(study, series, sop)
            except CoreError:  # not stored, or not the caller's: the same answer
                errors.append(MetadataError("XDSDocumentUniqueIdError",
                                            f"no instance {sop} in series {series} of study "
                                            f"{study} here", sop))
                continue
            if row.transfer_syntax not in syntaxes:
                errors.append(MetadataError(
                    "XDSRetrieveDocumentTransferSyntaxUnavailable",
                    f"{sop} is stored as {row.transfer_syntax}, not in the requested list",
                    sop))
                continue
            total += row.size
            if total > MAX_BYTES:
                errors.append(MetadataError("XDSRepositoryError",
                                            f"the answer would pass {MAX_BYTES} bytes: ask for "
                                            "fewer instances at once", sop))
                continue
            found.append(Retrieved(sop, "application/dicom", b"".join(archive.stream(row))))
        return found, errors
