"""``sonobridge.hie.dimse.peers``: the known remote AEs and what each may ask of us.

``parse_rights`` (``+`` or ``,`` joined, ``all``, ``none``, unknown words as ``ConfigError``),
``parse_peer`` with its ``retrieve=`` and ``rights=`` options and malformed entries,
``load_peers`` from the setting and the peers file, and ``Callers.policy`` for a listed and an
unlisted calling AE title with ``dicom_unlisted_rights``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sonobridge.config import ConfigError, Settings
from sonobridge.core.policy import DIMSE_SERVICES, Policy
from sonobridge.hie.dimse.peers import (
    ALL,
    Callers,
    Peer,
    issuers,
    load_peers,
    parse_peer,
    parse_rights,
)

KNOWN = ("known: echo store find move get worklist mpps commit, or all, or none; joined by +")


def test_all_is_every_dimse_service():
    assert frozenset(DIMSE_SERVICES) == ALL
    assert {"echo", "store", "find", "move", "get", "worklist", "mpps", "commit"} == ALL


@pytest.mark.parametrize("text,rights", [
    ("all", ALL),
    ("ALL", ALL),
    (" all ", ALL),
    ("none", frozenset()),
    ("None", frozenset()),
    ("echo", {"echo"}),
    ("find+move", {"find", "move"}),
    ("FIND,Move", {"find", "move"}),
    ("echo + store ,find", {"echo", "store", "find"}),
    ("store+store", {"store"}),
    ("find++move+", {"find", "move"}),
    ("echo+store+find+move+get+worklist+mpps+commit", ALL),
    ("", frozenset()),  # an empty list is no rights
])
def test_parse_rights(text, rights):
    assert parse_rights(text, "here") == rights


@pytest.mark.parametrize("text,unknown", [
    ("bogus", "bogus"),
    ("find+c-find", "c-find"),
    ("all+find", "all"),  # all and none stand alone
    ("none+echo", "none"),
    ("zeta+alpha+find", "alpha, zeta"),  # named sorted
])
def test_parse_rights_unknown(text, unknown):
    with pytest.raises(ConfigError) as err:
        parse_rights(text, "DICOM peer X")
    assert str(err.value) == f"DICOM peer X: unknown DIMSE rights {unknown} ({KNOWN})"


@pytest.mark.parametrize("text,peer", [
    ("CART1@10.0.0.5:104", Peer("CART1", "10.0.0.5", 104, "get", ALL)),
    ("  CART1@cart.local:11112  ", Peer("CART1", "cart.local", 11112, "get", ALL)),
    ("PACS@10.0.0.9:104:retrieve=move", Peer("PACS", "10.0.0.9", 104, "move", ALL)),
    ("PACS@10.0.0.9:104:retrieve=get", Peer("PACS", "10.0.0.9", 104, "get", ALL)),
    ("CART2@10.0.0.6:104:rights=echo+store",
     Peer("CART2", "10.0.0.6", 104, "get", frozenset({"echo", "store"}))),
    ("PACS@[::1]:11112:retrieve=move:rights=find+move",
     Peer("PACS", "::1", 11112, "move", frozenset({"find", "move"}))),
    ("PACS@h:1:rights=find:retrieve=move",
     Peer("PACS", "h", 1, "move", frozenset({"find"}))),
    ("X@h:1:rights=none", Peer("X", "h", 1, "get", frozenset())),
    ("X@h:1:rights=all", Peer("X", "h", 1, "get", ALL)),
    ("X@h:1:rights=find:rights=store", Peer("X", "h", 1, "get", frozenset({"store"}))),
    ("ABCDEFGHIJKLMNOP@h:1", Peer("ABCDEFGHIJKLMNOP", "h", 1, "get", ALL)),  # 16 characters
    ("CART1@h:1:issuer=HOSP", Peer("CART1", "h", 1, "get", ALL, "HOSP")),
    ("CART1@h:1:rights=store:issuer=HOSP&1.2.3&ISO",
     Peer("CART1", "h", 1, "get", frozenset({"store"}), "HOSP&1.2.3&ISO")),
])
def test_parse_peer(text, peer):
    assert parse_peer(text) == peer


FORM = "a DICOM peer is AET@host:port (AET up to 16 characters), not "


@pytest.mark.parametrize("text,message", [
    ("ABCDEFGHIJKLMNOPQ@h:1", FORM + "'ABCDEFGHIJKLMNOPQ@h:1'"),
    ("CART1@host", FORM + "'CART1@host'"),
    ("CART1", FORM + "'CART1'"),
    ("@host:104", FORM + "'@host:104'"),
    ("CART1@:104", FORM + "'CART1@:104'"),
    ("CART1@host:port", FORM + "'CART1@host:port'"),
    ("CART1@host:-1", FORM + "'CART1@host:-1'"),
    ("CART1@h:1:Rights=all", FORM + "'CART1@h:1:Rights=all'"),  # options are lower case
    ("CART1@h:1:retrieve=store",
     "DICOM peer CART1: unknown option retrieve='store' (known: retrieve=get|move, "
     "rights=find+move+…, issuer=NAMESPACE)"),
    ("CART1@h:1:issuer=",
     "DICOM peer CART1: unknown option issuer='' (known: retrieve=get|move, "
     "rights=find+move+…, issuer=NAMESPACE)"),
    ("CART1@h:1:timeout=5",
     "DICOM peer CART1: unknown option timeout='5' (known: retrieve=get|move, "
     "rights=find+move+…, issuer=NAMESPACE)"),
    ("CART1@h:1:rights=find+bogus", f"DICOM peer CART1: unknown DIMSE rights bogus ({KNOWN})"),
])
def test_parse_peer_refused(text, message):
    with pytest.raises(ConfigError) as err:
        parse_peer(text)
    assert str(err.value) == message


def test_parse_peer_port_out_of_range():
    with pytest.raises(ConfigError):
        parse_peer("CART1@h:70000")


def test_load_peers_from_the_setting_and_the_file(tmp_path: Path):
    peers_file = tmp_path / "peers.txt"
    peers_file.write_text("# the PACS\nPACS@10.0.0.9:104:retrieve=move\n\n"
                          "  # a cart\nCART1@10.0.0.7:104:rights=echo\n", "utf-8")
    settings = Settings(dicom_peers="CART1@10.0.0.5:104, CART2@10.0.0.6:104:rights=none,",
                        dicom_peers_file=str(peers_file))
    peers = load_peers(settings)
    assert peers == {
        "CART1": Peer("CART1", "10.0.0.7", 104, "get", frozenset({"echo"})),  # the file's, last
        "CART2": Peer("CART2", "10.0.0.6", 104, "get", frozenset()),
        "PACS": Peer("PACS", "10.0.0.9", 104, "move", ALL),
    }


def test_issuers_of_the_peers_that_name_one(tmp_path: Path):
    peers_file = tmp_path / "peers.txt"
    peers_file.write_text("CART1@10.0.0.7:104:rights=echo+store:issuer=HOSP\n"
                          "PACS@10.0.0.9:104:retrieve=move\n", "utf-8")
    settings = Settings(dicom_peers="CART2@10.0.0.6:104:issuer=TOWN&2.16.156.1&ISO",
                        dicom_peers_file=str(peers_file))
    assert issuers(load_peers(settings)) == {"CART1": "HOSP", "CART2": "TOWN&2.16.156.1&ISO"}


def test_load_peers_none_and_errors(tmp_path: Path):
    assert load_peers(Settings()) == {}
    with pytest.raises(ConfigError) as err:
        load_peers(Settings(dicom_peers_file=str(tmp_path / "missing.txt")))
    assert str(err.value).startswith(f"cannot read the DICOM peers file {tmp_path}/missing.txt")
    with pytest.raises(ConfigError):
        load_peers(Settings(dicom_peers="CART1@h:1, broken"))


# ------------------------------------------------------------------------------ Callers

PEERS = {"CART1": Peer("CART1", "10.0.0.5", 104, rights=frozenset({"echo", "store", "mpps"})),
         "PACS": Peer("PACS", "10.0.0.9", 104, "move"),
         "MUTE": Peer("MUTE", "10.0.0.8", 104, rights=frozenset())}


@pytest.mark.parametrize("unlisted,aet,services", [
    ("echo+store", "CART1", {"echo", "store", "mpps"}),  # a listed peer: its rights
    ("echo+store", "PACS", ALL),
    ("all", "MUTE", set()),  # listed with none: none, whatever the unlisted get
    ("echo+store", "STRANGER", {"echo", "store"}),  # the default for the unlisted
    ("find+echo", "STRANGER", {"find", "echo"}),
    ("none", "STRANGER", set()),
    ("all", "STRANGER", ALL),
    ("echo+store", "cart1", {"echo", "store"}),  # AE titles are matched exactly
])
def test_callers_policy(unlisted, aet, services):
    callers = Callers(Settings(dicom_unlisted_rights=unlisted), PEERS)
    assert callers.policy(aet) == Policy.system(f"dicom:{aet}", aet, frozenset(services))
    policy = callers.policy(aet)
    assert policy.unrestricted
    assert (policy.subject, policy.client_id, policy.services) == \
        (f"dicom:{aet}", aet, frozenset(services))


def test_callers_default_unlisted_rights():
    assert Settings().dicom_unlisted_rights == "echo+store"
    assert Callers(Settings(), {}).unlisted == {"echo", "store"}


def test_callers_refuse_unknown_unlisted_rights():
    with pytest.raises(ConfigError) as err:
        Callers(Settings(dicom_unlisted_rights="echo+query"), PEERS)
    assert str(err.value) == \
        f"SONOBRIDGE_DICOM_UNLISTED_RIGHTS: unknown DIMSE rights query ({KNOWN})"
