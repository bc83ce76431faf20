"""The DICOM Conformance Statement (PS3.2) as a list of blocks (headings, paragraphs, lists,
tables), written from ``DicomFacts``; ``render.py`` turns the blocks into Markdown, HTML or PDF.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.uid import UID

from sonobridge.conformance.dicom.facts import Context, DicomFacts


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.text.lower()).strip("-")


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Contents:
    """Where the table of contents goes (filled in by the renderer from the headings)."""


Block = Heading | Para | Items | Table | Contents
COMMAND = "sonobridge conformance dicom --format md --out docs/dicom-conformance.md"


def name(uid: str) -> str:
    """The standard's name of a UID (pydicom's dictionary), else the UID."""
    text = UID(uid).name
    return text if text != uid else uid


Group = tuple[str, tuple[str, ...], bool, str]


def _groups(contexts: Iterable[Context]) -> list[tuple[Group, list[str]]]:
    """Contexts gathered by (group, transfer syntaxes, role selection, role), in first-seen
    order."""
    order: dict[Group, list[str]] = {}
    for c in contexts:
        order.setdefault((c.group, c.transfer_syntaxes, c.role_selection, c.role), []
                         ).append(c.sop_class)
    return list(order.items())


def _context_tables(contexts: tuple[Context, ...], side: str) -> list[Block]:
    blocks: list[Block] = []
    for (group, syntaxes, selection, role), classes in _groups(contexts):
        extended = "SCP/SCU role selection" if selection else "none"
        blocks.append(Heading(5, f"{group}: {role}, {len(classes)} SOP classes"))
        blocks.append(Table(("SOP class", "UID", "Role", "Extended negotiation"),
                            tuple((name(uid), uid, role, extended) for uid in classes)))
        blocks.append(Para(f"Transfer syntaxes {'accepted' if side == 'SCP' else 'proposed'}"
                           f" for each of these SOP classes (one presentation context each):"))
        blocks.append(Table(("Transfer syntax", "UID"),
                            tuple((name(ts) if ts != "*" else "as stored", ts)
                                  for ts in syntaxes)))
    return blocks


def _overview(f: DicomFacts) -> list[Block]:
    groups: dict[str, set[str]] = {}
    for c in (*f.scp, *f.scu):
        groups.setdefault(c.group, set()).add(c.role)
    rows = tuple((group, "Yes" if "SCU" in roles else "No", "Yes" if "SCP" in roles else "No")
                 for group, roles in groups.items())
    services = sorted({r.service for r in f.web_resources})
    return [
        Heading(1, "1 Overview"),
        Para(f"{f.product} {f.version} is a standards gateway for remote ultrasound: it "
             f"archives DICOM objects received by DIMSE (C-STORE) and DICOMweb (STOW-RS), "
             f"answers queries and retrievals over DIMSE and DICOMweb, serves a Modality "
             f"Worklist from FHIR ServiceRequests, tracks MPPS and Storage Commitment, and "
             f"forwards objects to other AEs. One Application Entity, {f.ae_title}, provides "
             f"every DIMSE service; the DICOMweb services are on the HTTP listener."),
        Table(("Network service (SOP classes by activity)", "User of service (SCU)",
               "Provider of service (SCP)"), rows),
        Para("Media services: none (no DICOM media are read or written)."),
        Table(("Web service (PS3.18)", "User", "Provider"),
              tuple((s, "No", "Yes") for s in services)),
        Heading(2, "Table of contents"),
        Contents(),
    ]


def _introduction(f: DicomFacts) -> list[Block]:
    return [
        Heading(1, "2 Introduction"),
        Heading(2, "2.1 Revision history"),
        Table(("Document version", "Product version", "Remarks"),
              (("generated", f.version, f"written by `{COMMAND}` from the presentation "
                "contexts, services, routes and negotiation rules the code registers"),)),
        Heading(2, "2.2 Audience and remarks"),
        Para("For integrators connecting modalities, PACS, viewers and regional platforms. "
             "This statement is generated from what the software registers: a SOP class or "
             "transfer syntax is listed here exactly when the listener accepts it (tested both "
             "ways against a running listener). It does not replace integration testing; "
             "`sonobridge conformance run` is the test kit."),
        Heading(2, "2.3 Terms and definitions"),
        Items(("AE: Application Entity; SCP/SCU: Service Class Provider/User;",
               "QIDO-RS, WADO-RS, STOW-RS, WADO-URI: the DICOMweb services of PS3.18;",
               "MWL: Modality Worklist; MPPS: Modality Performed Procedure Step;",
               "BALP: IHE Basic Audit Log Patterns; ATNA: Audit Trail and Node "
               "Authentication; SMART: SMART App Launch (OAuth 2.0) authorization.")),
        Heading(2, "2.4 References"),
        Items(("NEMA PS3 (DICOM), in particular PS3.2, PS3.4, PS3.7, PS3.8, PS3.15, PS3.18;",
               "HL7 FHIR R4 and SMART App Launch 2.0; IHE ITI ATNA and BALP.")),
    ]


def _implementation_model(f: DicomFacts) -> list[Block]:
    return [
        Heading(1, "3 Networking"),
        Heading(2, "3.1 Implementation model"),
        Heading(3, "3.1.1 Application data flow"),
        Items((f"A modality or PACS sends objects (C-STORE) to {f.ae_title}; they are stored "
               "byte-exact as received, through the same ingest path as STOW-RS, and indexed;",
               "a workstation queries (C-FIND) and retrieves (C-MOVE to a known peer, C-GET) "
               "them; objects are sent as stored when the peer accepts their transfer syntax, "
               "else decoded to Explicit or Implicit VR Little Endian;",
               "a modality asks for its worklist (MWL C-FIND), reports its progress (MPPS "
               "N-CREATE/N-SET) and asks for Storage Commitment (N-ACTION; the "
               "N-EVENT-REPORT comes on the same association or on a new one);",
               "SonoBridge forwards stored objects (C-STORE as SCU) by rule, queries and "
               "retrieves from a remote PACS (C-FIND, C-MOVE, C-GET as SCU) for the DICOMweb "
               "proxy and the `sonobridge dicom` commands;",
               "DICOMweb clients use QIDO-RS, WADO-RS, STOW-RS and WADO-URI over HTTP.")),
        Heading(3, "3.1.2 Functional definition of AEs"),
        Para(f"{f.ae_title} waits for associations on port {f.port} (default) and accepts "
             f"the presentation contexts of 3.2; what a calling AE may ask is decided by its "
             f"configured rights (3.2.3). It initiates associations to configured peers only."),
        Heading(3, "3.1.3 Sequencing of real-world activities"),
        Para("A Storage Commitment request is answered only for instances already stored; an "
             "MPPS COMPLETED completes the order (it leaves the worklist)."),
    ]


def _ae_specification(f: DicomFacts) -> list[Block]:
    scp_classes = {c.sop_class for c in f.scp}
    scu_classes = {c.sop_class for c in f.scu}
    rights = tuple(f.dimse_rights)
    return [
        Heading(2, "3.2 AE specifications"),
        Heading(3, f"3.2.1 {f.ae_title}: SOP classes"),
        Para(f"{len(scp_classes)} SOP classes as SCP, {len(scu_classes)} as SCU. "
             "Transfer syntaxes are listed per group of SOP classes that share them."),
        Heading(4, "3.2.1.1 As SCP (association acceptor)"),
        *_context_tables(f.scp, "SCP"),
        Heading(4, "3.2.1.2 As SCU (association requestor)"),
        Para("\"as stored\" (`*`): a stored object is offered in the transfer syntax it was "
             "received in, next to both uncompressed syntaxes; at most 128 presentation "
             "contexts per association."),
        *_context_tables(f.scu, "SCU"),
        Heading(3, "3.2.2 Association policies"),
        Table(("Policy", "Value"), (
            ("Application context name", "1.2.840.10008.3.1.1.1"),
            ("Maximum PDU size received", f"{f.max_pdu_receive} bytes"),
            ("Maximum PDU size sent", "as the peer's maximum"),
            ("Simultaneous associations accepted", str(f.max_associations)),
            ("Asynchronous operations window", "not supported (1 outstanding invoked, 1 "
                                               "performed)"),
            ("Implementation Class UID", f.implementation_class_uid),
            ("Implementation version name", f.implementation_version_name),
            ("Timeouts (ACSE, DIMSE, network)",
             f"{f.timeouts['acse']} s, {f.timeouts['dimse']} s, {f.timeouts['network']} s"),
            ("SCP/SCU role selection", "accepted for the storage SOP classes (C-GET) and "
                                       "Storage Commitment; proposed on C-GET and Storage "
                                       "Commitment reports on a new association"),
            ("SOP class extended negotiation (relational queries, fuzzy matching, "
             "combined date-time)", "not negotiated (no extended negotiation answered); "
                                    "date and time ranges are combined for MWL as PS3.4 says"),
            ("SOP class common extended negotiation", "not supported"),
            ("User identity negotiation", "not supported (the calling AE title decides)"),
        )),
        Heading(3, "3.2.3 Association acceptance policy"),
        Para(f"Called AE title: {f.ae_title}. A calling AE title listed as a peer may use every "
             f"service unless its entry says otherwise (`rights=`); an AE title that is not "
             f"listed gets `{f.unlisted_rights}`. "
             + ("Unlisted calling AE titles are refused at association. " if
                f.known_callers_only else
                "Unlisted calling AE titles are accepted at association (set "
                "SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY=true to refuse them). ")
             + "A service the caller may not use is answered with status 0x0124 (Refused: "
               "Not Authorized) and audited."),
        Table(("Right", "Services"), rights),
        Heading(4, "3.2.3.1 Services and their statuses"),
        Table(("Service", "SOP classes", "Behaviour", "Statuses"), (
            ("C-ECHO", "Verification", "answered", "0000, 0124"),
            ("C-STORE", "every storage SOP class of 3.2.1.1",
             "stored byte-exact as received; data streamed to disk; the study's ImagingStudy "
             "rebuilt once per association", "0000, B006 (stored; a value DICOM JSON cannot "
             "carry left out of the metadata), 0124, A700, 0110 and PS3.4 storage "
             "failures from ingest (A9xx, Cxxx)"),
            ("C-FIND", "Patient Root (PATIENT, STUDY, SERIES, IMAGE), Study Root (STUDY, "
             "SERIES, IMAGE)", "matched like QIDO-RS: wildcards, ranges, UID lists, person "
             "name component groups; every match returned", "FF00, FF01 (a key not matched "
             "on), 0000, A900, FE00, 0124"),
            ("C-MOVE", "Patient Root, Study Root", "to a known peer only", "FF00, 0000, "
             "B000, A702, A801 (unknown destination), FE00, 0124"),
            ("C-GET", "Patient Root, Study Root", "over the same association, the "
             "requestor's transfer syntax order decides", "FF00, 0000, B000, A702, FE00, "
             "0124"),
            ("MWL C-FIND", "Modality Worklist Information Model - FIND", "one item per "
             "active ServiceRequest; every match returned", "FF00, FF01, 0000, A900, 0124"),
            ("MPPS N-CREATE, N-SET", "Modality Performed Procedure Step", "a FHIR Task per "
             "performed step", "0000, 0106, 0111, 0112, 0110, 0124"),
            ("Storage Commitment N-ACTION (push model)", "Storage Commitment Push Model",
             "stored before success; N-EVENT-REPORT on the same association or a new one, "
             "retried for 24 hours", "0000, 0110, 0120, 0123, 0124; report: 0112, 0119 per "
             "failed instance"),
        )),
        Heading(3, "3.2.4 Association initiation policy"),
        Table(("Activity", "Association to", "Services"), (
            ("C-MOVE sub-operations", "the move destination (a known peer)", "C-STORE"),
            ("Forwarding (SONOBRIDGE_DICOM_FORWARD)", "each rule's destination",
             "C-STORE, retried with backoff"),
            ("Storage Commitment report", "the requesting modality (a known peer)",
             "N-EVENT-REPORT, SCP role proposed"),
            ("`sonobridge dicom echo|find|move`, DICOMweb proxy", "a known peer",
             "C-ECHO, C-FIND, C-MOVE, C-GET (storage SCP role proposed)"),
        )),
    ]


def _interfaces_and_configuration(f: DicomFacts) -> list[Block]:
    return [
        Heading(2, "3.3 Network interfaces"),
        Para("TCP/IP (IPv4 and IPv6, as the host provides) per PS3.8; DICOMweb over HTTP/1.1 "
             "(HTTPS with --tls-cert/--tls-key, or behind a TLS-terminating proxy)."),
        Heading(2, "3.4 Configuration"),
        Para(f"Local AE title {f.ae_title}, listening on {f.host}:{f.port} by default. Remote "
             "AEs are configured with their AE title, address and port, and their rights."),
        Table(("Setting", "Default", "Meaning"), tuple(f.settings)),
        Heading(1, "4 Media interchange"),
        Para("Not supported: SonoBridge reads and writes no DICOM media."),
    ]


def _character_sets(f: DicomFacts) -> list[Block]:
    return [
        Heading(1, "5 Support of character sets"),
        Para("Objects are stored as received, whatever their Specific Character Set. Text is "
             "decoded for indexing, DICOM JSON metadata and query matching from these "
             "Specific Character Set values (single-byte, multi-byte without code extensions, "
             "and ISO 2022 code extensions):"),
        Items(tuple(f"`{c}`" for c in f.character_sets_accepted)),
        Para(f"C-FIND (Query/Retrieve and Modality Worklist) responses are encoded in "
             f"`{f.character_set_answered}` (UTF-8), whatever the query's character set; "
             f"query keys are decoded in the query's Specific Character Set. DICOMweb "
             f"responses are UTF-8 (PS3.18). Person names match per component group "
             f"(alphabetic, ideographic, phonetic), so `张*` finds `Zhang^Wei=张^伟`."),
    ]


def _security(f: DicomFacts) -> list[Block]:
    return [
        Heading(1, "6 Security"),
        Heading(2, "6.1 Security profiles"),
        Table(("Profile", "Support"), (
            ("DICOM TLS (PS3.15 B.1, B.9, B.10) on DIMSE", "not supported by the DIMSE "
             "listener; use a VPN or a TLS tunnel on the hospital network"),
            ("HTTPS for DICOMweb", "supported: --tls-cert/--tls-key "
             "(SONOBRIDGE_TLS_CERT, SONOBRIDGE_TLS_KEY), or a TLS-terminating reverse proxy"),
            ("Audit Trail (PS3.15 A.5, IHE ATNA / BALP)", "every association, query, "
             "retrieve, store and refusal is a FHIR AuditEvent (BALP patterns), also sent as "
             "RFC 5424 syslog to SONOBRIDGE_AUDIT_SYSLOG; reads of a study by one caller "
             "gathered per SONOBRIDGE_AUDIT_READ_WINDOW"),
            ("Access control on DICOMweb", "SMART on FHIR / OAuth 2.0 bearer tokens; a study "
             "is readable exactly when its FHIR ImagingStudy is (one token for FHIR and "
             "DICOMweb)"),
            ("Access control on DIMSE", "per calling AE title (3.2.3)"),
            ("Attribute confidentiality (de-identification) profiles", "not applied to "
             "DIMSE or DICOMweb traffic"),
        )),
    ]


def _annexes(f: DicomFacts) -> list[Block]:
    by_service: dict[str, list[str]] = {}
    for r in f.web_resources:
        by_service.setdefault(r.service, []).append(f"`{r.path}` ({', '.join(r.methods)})")
    return [
        Heading(1, "7 Annexes"),
        Heading(2, "7.1 IOD contents"),
        Para("SonoBridge creates no composite SOP instances: it stores and sends the objects "
             "it receives as they are, or decoded to an uncompressed transfer syntax (the "
             "SOP Instance UID kept, Lossy Image Compression left as received). It creates "
             "C-FIND and MWL responses (with Specific Character Set, Query/Retrieve Level and "
             "Retrieve AE Title) and Storage Commitment N-EVENT-REPORTs (Transaction UID, "
             "Referenced SOP Sequence, Failed SOP Sequence with Failure Reason)."),
        Heading(2, "7.2 Data dictionary of private attributes"),
        Para("None: no private attributes are created."),
        Heading(2, "7.3 Coded terminology and templates"),
        Para("Worklist procedure codes are sent in the coding scheme of the order (SCT, LN, "
             "DCM, C4, RadLex; others 99LOCAL)."),
        Heading(2, "7.4 Standard extended, specialized and private SOP classes"),
        Para("None. Private transfer syntaxes: none."),
        Heading(2, "7.5 Web services (PS3.18)"),
        Para("Root `/dicomweb` (QIDO-RS, WADO-RS, STOW-RS, and the PACS proxy under "
             "`/dicomweb/peers/{AET}`); WADO-URI at `/wado`. Every request needs a bearer "
             "token (6.1). Errors are PS3.18 status codes with a Warning header."),
        Heading(3, "7.5.1 Resources"),
        *[b for service, paths in sorted(by_service.items())
          for b in (Heading(4, service), Items(tuple(paths)))],
        Heading(3, "7.5.2 Media types and transfer syntaxes"),
        Para("As negotiated from the Accept header (or `accept`/`contentType` query "
             "parameter). Without a transfer-syntax parameter the stored encoding is sent; "
             "`transfer-syntax=*` means the same."),
        Table(("Service", "Media type", "Transfer syntax", "Note"),
              tuple((m.service, m.media_type,
                     "" if not m.transfer_syntax else
                     ("as stored (*)" if m.transfer_syntax == "*" else
                      f"{name(m.transfer_syntax)} ({m.transfer_syntax})"), m.note)
                    for m in f.media)),
        Heading(3, "7.5.3 Query parameters (QIDO-RS)"),
        Para(f"Matching on attribute keywords or tags as C-FIND matches; control parameters "
             f"{f.extra.get('qido_controls', '')}."),
    ]


def statement(facts: DicomFacts) -> list[Block]:
    """The statement's blocks in PS3.2's order."""
    title: list[Block] = [
        Heading(0, f"{facts.product} DICOM Conformance Statement"),
        Para(f"Generated by `{COMMAND}` from what the code registers; do not edit by hand "
             f"(a test compares this file with a fresh one). Also `--format html` and "
             f"`--format pdf`."),
    ]
    return [*title, *_overview(facts), *_introduction(facts), *_implementation_model(facts),
            *_ae_specification(facts), *_interfaces_and_configuration(facts),
            *_character_sets(facts), *_security(facts), *_annexes(facts)]
