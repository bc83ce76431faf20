"""``sonobridge.core.events``: listeners by event type.

``listen`` and ``emit`` (each listener of the event's exact type, in the order added, not those
of a base or another type), ``wants``, a listener's exception, and the event dataclasses'
defaults.
"""

from __future__ import annotations

import dataclasses

import pytest

from sonobridge.core.events import Answered, Events, InstanceStored, ResourceChanged
from sonobridge.core.policy import Caller, Policy

CALLER = Caller(Policy.open())


class Base:
    def __init__(self, name: str) -> None:
        self.name = name


class Derived(Base):
    pass


class Other:
    pass


def test_nobody_listens():
    events = Events()
    assert events.wants(Answered) is False
    events.emit(Answered(CALLER, "rest", "R", "read"))  # nothing happens, nothing raised


def test_listeners_run_in_the_order_added():
    events = Events()
    heard: list[tuple[str, object]] = []
    events.listen(Base, lambda e: heard.append(("first", e.name)))
    events.listen(Base, lambda e: heard.append(("second", e.name)))
    events.listen(Other, lambda e: heard.append(("other", e)))
    events.listen(Base, lambda e: heard.append(("third", e.name)))
    events.emit(Base("a"))
    events.emit(Base("b"))
    assert heard == [("first", "a"), ("second", "a"), ("third", "a"),
                     ("first", "b"), ("second", "b"), ("third", "b")]


def test_only_the_exact_type():
    events = Events()
    heard: list[str] = []
    events.listen(Base, lambda e: heard.append(f"base:{e.name}"))
    events.listen(Derived, lambda e: heard.append(f"derived:{e.name}"))
    events.emit(Derived("d"))
    events.emit(Base("b"))
    events.emit(Other())
    events.emit(object())
    assert heard == ["derived:d", "base:b"]


def test_wants():
    events = Events()
    events.listen(Base, lambda e: None)
    assert events.wants(Base) is True
    assert events.wants(Derived) is False  # not for a subclass
    assert events.wants(Other) is False
    assert events.wants(object) is False


def test_the_same_listener_twice_is_called_twice():
    events = Events()
    heard: list[str] = []

    def listener(event: Base) -> None:
        heard.append(event.name)

    events.listen(Base, listener)
    events.listen(Base, listener)
    events.emit(Base("x"))
    assert heard == ["x", "x"]


def test_a_failing_listener_stops_the_emit():
    events = Events()
    heard: list[str] = []

    def fail(event: Base) -> None:
        raise RuntimeError(f"refused {event.name}")

    events.listen(Base, lambda e: heard.append("before"))
    events.listen(Base, fail)
    events.listen(Base, lambda e: heard.append("after"))
    with pytest.raises(RuntimeError, match="refused x"):
        events.emit(Base("x"))
    assert heard == ["before"]


def test_listeners_get_the_event_itself():
    events = Events()
    got: list[Answered] = []
    events.listen(Answered, got.append)
    event = Answered(CALLER, "dicom-query", "E", "C-FIND", resource="ImagingStudy",
                     study="1.2.3")
    events.emit(event)
    assert len(got) == 1 and got[0] is event


def test_answered_defaults():
    event = Answered(CALLER, "rest", "R", "read")
    assert (event.outcome, event.resource, event.patient, event.study, event.query,
            event.detail, event.writer) == ("0", None, None, None, None, "", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.outcome = "8"  # type: ignore[misc]


def test_event_fields():
    assert [f.name for f in dataclasses.fields(ResourceChanged)] == [
        "writer", "caller", "action", "interaction", "stored", "resource", "changed",
        "audited"]
    assert [f.name for f in dataclasses.fields(InstanceStored)] == [
        "writer", "caller", "sop_class_uid", "sop_uid", "study_uid", "series_uid", "modality",
        "source", "metadata", "warnings", "new"]
    assert dataclasses.fields(InstanceStored)[-3].default is None
    assert dataclasses.fields(InstanceStored)[-1].default is False
    one = InstanceStored(None, CALLER, "1.2", "1.2.3", "1.2.3.4", "1.2.3.5", "US", "STOW-RS")
    two = InstanceStored(None, CALLER, "1.2", "1.2.3", "1.2.3.4", "1.2.3.5", "US", "STOW-RS")
    one.warnings.append("an SR item left unmapped")  # listeners tell the sender through it
    assert two.warnings == []
    assert dataclasses.fields(ResourceChanged)[-1].default is True
