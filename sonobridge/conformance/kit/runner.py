"""Run suites of tests against a server and collect the results, with progress on the console."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from sonobridge.conformance.kit.model import (
    ERROR,
    FAIL,
    PASS,
    SKIP,
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Result,
    Skipped,
    Suite,
    TestDef,
)

# One module per suite under ``conformance/kit/`` (its ``SUITE``'s id is the module's name): a
# domain adds its checks by adding a module and its name here.
ALL_SUITES = ("fhir", "smart", "dicomweb", "dimse", "hl7", "profiles", "cda", "qc", "reports",
              "consultation", "subscriptions", "teaching", "exchange")


@dataclass
class Options:
    """What the kit is pointed at. Every address is optional: a suite whose peer is not given
    skips with that reason."""

    target: str | None = None  # FHIR base URL
    dicomweb: str | None = None  # DICOMweb root (…/dicomweb)
    suites: tuple[str, ...] = ALL_SUITES
    dicom: str | None = None  # AET@host:port of the DIMSE SCP
    mllp: str | None = None  # host:port of the MLLP listener
    token: str | None = None  # a bearer token for every HTTP request
    timeout: float = 15.0
    calling_aet: str = "SBKIT"
    move_dest: str | None = None  # AE title the SCP knows as us, for C-MOVE
    move_port: int = 0  # the port our storage SCP listens on for C-MOVE (0: any)
    resources: tuple[str, ...] = ()  # FHIR resource types to test (empty: all declared)
    smart_client_id: str | None = None  # backend services: client id
    smart_key: str | None = None  # backend services: a PEM private key file
    smart_user: str | None = None  # standalone launch: the user who signs in
    smart_password: str | None = None
    smart_totp_secret: str | None = None  # base32, when the user has a second factor
    smart_app_client_id: str | None = None  # a registered public client
    smart_redirect_uri: str | None = None  # one of its registered redirect URIs
    smart_scope: str | None = None  # scopes to ask for (default: launch.DEFAULT_SCOPE)
    smart_patient: str | None = None  # the patient to pick (default: the first offered)
    smart_other_patient: str | None = None  # a patient the token must not read
    extra: dict[str, str] = field(default_factory=dict)


def suites_for(names: tuple[str, ...]) -> list[Suite]:
    from importlib import import_module

    known: dict[str, Suite] = {}
    for module in ALL_SUITES:
        suite: Suite = import_module(f"sonobridge.conformance.kit.{module}").SUITE
        known[suite.id] = suite
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names]


def run_test(ctx: Context, test: TestDef, suite: str, group: str) -> Result:
    check = Check(ctx)
    outcome, message = PASS, ""
    try:
        test.run(check)
    except Failed as exc:
        outcome, message = FAIL, str(exc)
    except Skipped as exc:
        outcome, message = SKIP, str(exc)
    except Exception as exc:  # the server did something no test foresaw: say what, go on
        outcome = ERROR
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = (f"{type(exc).__name__}: {exc} (at {where.filename.rsplit('/', 1)[-1]}:"
                   f"{where.lineno})")
    return Result(suite, group, test, outcome, message, time.monotonic() - check.started,
                  check.evidence)


def _group_tests(ctx: Context, group: Group) -> list[TestDef] | Exception:
    if isinstance(group.tests, list):
        return group.tests
    try:
        return group.tests(ctx)
    except (Failed, Skipped) as exc:
        return exc
    except Exception as exc:
        return Failed(f"{type(exc).__name__}: {exc}")


def run(options: Options, on_result: Callable[[Result], None] | None = None,
        on_group: Callable[[str], None] | None = None) -> list[Result]:
    """Run the chosen suites; every result goes to ``on_result`` as it comes."""
    ctx = Context(options)
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    results: list[Result] = []
    with httpx.Client(timeout=options.timeout, headers=headers) as client:
        ctx.client = client
        for suite in suites_for(options.suites):
            try:
                groups = list(suite.groups(ctx))
            except Exception as exc:
                groups = [Group(f"{suite.id}-setup", "setup", [TestDef(
                    f"{suite.id}-setup", f"{suite.title}: setup", _SETUP,
                    _raiser(exc if isinstance(exc, Failed | Skipped)
                            else Failed(f"{type(exc).__name__}: {exc}")))])]
            for group in groups:
                if on_group:
                    on_group(f"{suite.title} · {group.title}")
                tests = _group_tests(ctx, group)
                if isinstance(tests, Exception):  # could not list the tests: one test says why
                    tests = [TestDef(f"{group.id}-00", f"{group.title}: prepare", _SETUP,
                                     _raiser(tests))]
                try:
                    for test in tests:
                        result = run_test(ctx, test, suite.id, group.id)
                        results.append(result)
                        if on_result:
                            on_result(result)
                finally:
                    if group.teardown:
                        # cleanup is best effort; the report is what matters
                        with contextlib.suppress(Exception):
                            group.teardown(ctx)
    return results


_SETUP = Requirement("The suite's preconditions hold (its server answers as it declares).", "")


def _raiser(exc: Exception) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        raise exc

    return run


def exit_status(results: list[Result]) -> int:
    return 1 if any(r.outcome in (FAIL, ERROR) for r in results) else 0


def counts(results: list[Result]) -> dict[str, int]:
    out = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
    for r in results:
        out[r.outcome] += 1
    return out
