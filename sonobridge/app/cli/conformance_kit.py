"""The conformance kit's commands for: kit (see ``app/cli/conformance.py``):
``sonobridge conformance run``, the test kit anyone can run against a server."""

from __future__ import annotations

from pathlib import Path

import typer


def register(conformance_app: typer.Typer, ig_app: typer.Typer) -> None:
    """Add ``conformance run``."""
    conformance_app.command("run")(run)


def run(
    target: str = typer.Option(None, "--target", help="FHIR base URL, e.g. "
                               "http://127.0.0.1:8080/fhir"),
    dicomweb: str = typer.Option(None, "--dicomweb", help="DICOMweb root (default: what the "
                                 "target's Endpoint names, else its sibling /dicomweb)"),
    suite: str = typer.Option("fhir,smart,dicomweb,dimse,hl7", "--suite",
                              help="comma-separated, or 'all'. Protocol suites (the default): "
                                   "fhir,smart,dicomweb,dimse,hl7; the guide's domain suites: "
                                   "profiles,consultation,subscriptions,reports,qc,teaching,"
                                   "cda"),
    dicom: str = typer.Option(None, "--dicom", help="DIMSE SCP as AET@host:port"),
    mllp: str = typer.Option(None, "--mllp", help="MLLP listener as host:port"),
    token: str = typer.Option(None, "--token", help="bearer token for every HTTP request",
                              envvar="SONOBRIDGE_KIT_TOKEN"),
    junit: Path = typer.Option(None, "--junit", help="write JUnit XML here"),
    html: Path = typer.Option(None, "--html", help="write the HTML report here"),
    json_out: Path = typer.Option(None, "--json", help="write the JSON results here"),
    calling_aet: str = typer.Option("SBKIT", "--calling-aet", help="our AE title (DIMSE)"),
    move_dest: str = typer.Option(None, "--move-dest", help="C-MOVE destination AE title the "
                                  "SCP knows as the kit (the kit listens for it)"),
    move_port: int = typer.Option(0, "--move-port", help="port the kit's storage SCP "
                                  "listens on for C-MOVE (the one the SCP has for --move-dest)"),
    resource: str = typer.Option("", "--resources", help="FHIR types to test (default: every "
                                 "declared type)"),
    smart_client_id: str = typer.Option(None, "--smart-client-id",
                                        help="backend-services client id"),
    smart_key: Path = typer.Option(None, "--smart-key", help="backend-services private key "
                                   "(PEM) registered for that client"),
    user: str = typer.Option(None, "--user", help="standalone launch: the user who signs in "
                             "on the server's login form"),
    password: str = typer.Option(None, "--password", help="that user's password",
                                 envvar="SONOBRIDGE_KIT_PASSWORD"),
    totp_secret: str = typer.Option(None, "--totp-secret", help="that user's TOTP secret "
                                    "(base32), when the login asks for a code",
                                    envvar="SONOBRIDGE_KIT_TOTP_SECRET"),
    client_id: str = typer.Option(None, "--client-id", help="standalone launch: a registered "
                                  "public client (not the backend one)"),
    redirect_uri: str = typer.Option(None, "--redirect-uri", help="one of that client's "
                                     "registered redirect URIs (never visited)"),
    smart_scope: str = typer.Option(None, "--smart-scope", help="scopes the launch asks for "
                                    "(default 'openid fhirUser launch/patient "
                                    "patient/Patient.rs')"),
    patient: str = typer.Option(None, "--patient", help="the patient to pick on the consent "
                                "page (default: the first offered)"),
    other_patient: str = typer.Option(None, "--other-patient", help="a patient the launch's "
                                      "token must not read (default: another one offered)"),
    timeout: float = typer.Option(15.0, "--timeout", help="seconds per request"),
) -> None:
    """Run the conformance test kit against a server; exit 1 when any test fails."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    from sonobridge.conformance.kit import Options, exit_status
    from sonobridge.conformance.kit import run as run_kit
    from sonobridge.conformance.kit.model import FAIL, PASS, SKIP
    from sonobridge.conformance.kit.report import html_report, write_json
    from sonobridge.conformance.kit.report import junit as to_junit
    from sonobridge.conformance.kit.runner import ALL_SUITES, counts, suites_for

    suites = ALL_SUITES if suite.strip() == "all" else \
        tuple(s.strip() for s in suite.split(",") if s.strip())
    try:
        suites_for(suites)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--suite") from None
    needs_target = {"fhir", "smart"} & set(suites)
    if needs_target and not target:
        raise typer.BadParameter(f"suites {sorted(needs_target)} need --target",
                                 param_hint="--target")
    if "dicomweb" in suites and not (target or dicomweb):
        raise typer.BadParameter("the dicomweb suite needs --dicomweb or --target",
                                 param_hint="--dicomweb")
    options = Options(target=target, dicomweb=dicomweb, suites=suites, dicom=dicom, mllp=mllp,
                      token=token, timeout=timeout, calling_aet=calling_aet,
                      move_dest=move_dest, move_port=move_port,
                      resources=tuple(r for r in resource.split(",") if r),
                      smart_client_id=smart_client_id,
                      smart_key=str(smart_key) if smart_key else None,
                      smart_user=user, smart_password=password, smart_totp_secret=totp_secret,
                      smart_app_client_id=client_id, smart_redirect_uri=redirect_uri,
                      smart_scope=smart_scope, smart_patient=patient,
                      smart_other_patient=other_patient)
    console = Console(stderr=True)
    style = {PASS: "green", FAIL: "red", SKIP: "dim", "error": "yellow"}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed} tests"), console=console,
                  transient=True) as progress:
        task = progress.add_task("starting", total=None)

        def on_group(name: str) -> None:
            progress.update(task, description=name)

        def on_result(result: object) -> None:
            from sonobridge.conformance.kit.model import Result

            assert isinstance(result, Result)
            progress.advance(task)
            if result.outcome != PASS:
                colour = style.get(result.outcome, "")
                progress.console.print(f"[{colour}]{result.outcome.upper():5}[/] "
                                       f"{result.test.id}: {result.message}", markup=True,
                                       highlight=False)

        results = run_kit(options, on_result=on_result, on_group=on_group)
    total = counts(results)
    console.print(f"{len(results)} tests: [green]{total[PASS]} pass[/], [red]{total[FAIL]} "
                  f"fail[/], [yellow]{total['error']} error[/], {total[SKIP]} skip")
    if junit:
        junit.write_text(to_junit(results), encoding="utf-8")
    if json_out:
        json_out.write_text(write_json(results, options), encoding="utf-8")
    if html:
        html.write_text(html_report(results, options), encoding="utf-8")
    raise typer.Exit(exit_status(results))
