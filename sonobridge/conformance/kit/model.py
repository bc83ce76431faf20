"""The kit's vocabulary: a test (id, title, the requirement it checks and where the standard says
so), a group of tests, a suite of groups, and the result of running one test with its evidence.

A test is a function of one argument, the :class:`Check` it runs in. It passes by returning,
fails by calling ``check.fail`` (or ``check.expect``), skips by ``check.skip``. Whatever else it
raises is the server misbehaving in a way the test did not foresee (a timeout, a closed
connection, HTML where JSON was due): the runner records that as a failure with the reason,
and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


class Failed(Exception):
    """The server did not do what the requirement asks."""


class Skipped(Exception):
    """The test cannot run here (not declared, not configured, an earlier test failed)."""


@dataclass(frozen=True)
class Requirement:
    text: str
    url: str


@dataclass(frozen=True)
class TestDef:
    __test__ = False  # not a pytest test class

    id: str
    title: str
    requirement: Requirement
    run: Callable[[Check], None]


@dataclass
class Group:
    """Tests that run in order and share the run's state. ``tests`` may be a callable that builds
    them when the group starts (from what earlier groups learnt, e.g. the declared resources).
    ``teardown`` runs after the group whatever happened (it cleans up test data)."""

    id: str
    title: str
    tests: list[TestDef] | Callable[[Context], list[TestDef]]
    teardown: Callable[[Context], None] | None = None


@dataclass
class Evidence:
    """One exchange with the server, as the report shows it."""

    kind: str  # "http", "dimse", "mllp", "note"
    summary: str
    request: str = ""
    response: str = ""
    status: str = ""
    elapsed_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": self.summary, "request": self.request,
                "response": self.response, "status": self.status,
                "elapsed_ms": round(self.elapsed_ms, 1)}


@dataclass
class Result:
    suite: str
    group: str
    test: TestDef
    outcome: str
    message: str = ""
    duration: float = 0.0
    evidence: list[Evidence] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.test.id, "title": self.test.title, "suite": self.suite,
                "group": self.group, "outcome": self.outcome, "message": self.message,
                "duration_s": round(self.duration, 3),
                "requirement": {"text": self.test.requirement.text,
                                "url": self.test.requirement.url},
                "evidence": [e.to_json() for e in self.evidence]}


@dataclass
class Suite:
    id: str
    title: str
    groups: Callable[[Context], Iterable[Group]]


class Context:
    """What the run knows: the options, and state that tests hand to later tests."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.state: dict[str, Any] = {}
        self.cleanups: list[Callable[[], None]] = []
        self.client: Any = None  # an httpx.Client, opened by the runner

    def needs(self, key: str, why: str) -> Any:
        if self.state.get(key) is None:
            raise Skipped(why)
        return self.state[key]


class Check:
    """One test's run: records evidence, and turns expectations into outcomes."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.evidence: list[Evidence] = []
        self.started = time.monotonic()

    @property
    def options(self) -> Any:
        return self.ctx.options

    @property
    def http(self) -> Any:
        """An HTTP client that keeps this test's exchanges (``kit.http.Http``)."""
        from sonobridge.conformance.kit.http import Http

        return Http(self.ctx.client, self)

    def note(self, text: str) -> None:
        self.evidence.append(Evidence("note", text))

    def record(self, evidence: Evidence) -> None:
        self.evidence.append(evidence)

    def fail(self, message: str) -> None:
        raise Failed(message)

    def skip(self, message: str) -> None:
        raise Skipped(message)

    def expect(self, condition: object, message: str) -> None:
        if not condition:
            raise Failed(message)


def suite_ids(suites: Iterable[Suite]) -> Iterator[str]:
    return (s.id for s in suites)
