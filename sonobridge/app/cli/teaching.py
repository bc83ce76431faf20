"""``sonobridge teaching``: publish a study as a de-identified teaching case, withdraw one.

``teaching add STUDY`` does what ``POST /fhir/ImagingStudy/{id}/$teaching-case`` does
(``core/teaching.py``), as the server itself: STUDY is the Study Instance UID (the id of its
ImagingStudy). It prints the new case's id, the copy's Study Instance UID and counts; a study
that cannot be cleaned safely ends with exit 1 and the reason, and nothing is published.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sonobridge.app.cli.options import DatabaseUrl, DataDir

teaching_app = typer.Typer(help="Teaching cases (培训): de-identified copies of studies.",
                           no_args_is_help=True)
console = Console(stderr=True)


@teaching_app.command("add")
def add_command(
    study: Annotated[str, typer.Argument(help="Study Instance UID of a stored study.")],
    key_image: Annotated[list[str] | None, typer.Option(
        "--key-image", help="SOP Instance UID of a key image (repeat; default: every image)."
    )] = None,
    keyword: Annotated[list[str] | None, typer.Option(
        "--keyword", help="a keyword to find the case by (repeat).")] = None,
    diagnosis: Annotated[list[str] | None, typer.Option(
        "--diagnosis", help="a diagnosis code as system|code (repeat).")] = None,
    body_site: Annotated[str | None, typer.Option(
        "--body-site", help="body site as system|code.")] = None,
    difficulty: Annotated[str | None, typer.Option(
        "--difficulty", help="basic, intermediate or advanced.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="the case's title.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="publish even if the study is a case already or de-identified.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """De-identify STUDY (PS3.15 Basic Profile, Clean Pixel Data on every frame) into a
    teaching case."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.teaching import CaseRequest, parse_coding, teaching_of

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("teaching", "sonobridge teaching add"), "local")
        request = CaseRequest(
            key_images=list(key_image or []), keywords=list(keyword or []),
            diagnoses=[parse_coding(d, "diagnosis") for d in diagnosis or []],
            body_site=parse_coding(body_site, "bodySite") if body_site else None,
            difficulty=difficulty, title=title, force=force)
        case = teaching_of(core).add(caller, study, request)
    except CoreError as exc:
        console.print(f"[red]{exc.status}: {exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    print(f"DocumentReference/{case.document_reference['id']}")
    print(f"study {case.study_uid}: {case.instances} object(s), {case.frames} frame(s) cleaned, "
          f"{len(case.reports)} report(s)")


@teaching_app.command("withdraw")
def withdraw_command(
    case_id: Annotated[str, typer.Argument(help="id of the teaching case's DocumentReference")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Withdraw a case: its de-identified copy and report are deleted."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.teaching import teaching_of

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("teaching", "sonobridge teaching withdraw"), "local")
        removed = teaching_of(core).withdraw(caller, case_id)
    except CoreError as exc:
        console.print(f"[red]{exc.status}: {exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    print(f"withdrawn: {removed} instance(s) deleted")


training_app = typer.Typer(help="Training records (培训记录): courses, assessments, sessions, "
                                "certificates.", no_args_is_help=True)


# Column headers of the training report, Chinese and English (the township reader's and the
# auditor's language).
HEADERS = {"course": "课程 course", "status": "状态 status", "assigned": "分配日期 assigned",
           "assessment": "考核 assessment", "date": "日期 date", "score": "得分 score",
           "pass_mark": "及格线 pass mark", "passed": "通过 passed", "session": "直播课 session",
           "start": "开始 start", "certificate": "证书 certificate", "issued": "发证 issued",
           "expires": "到期 expires", "issuer": "发证机构 issuer", "credits": "学分 credits"}


@training_app.command("report")
def training_report_command(
    practitioner: Annotated[str, typer.Option("--practitioner", help="the trainee's "
                                              "Practitioner id")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")
                       ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a trainee's record: courses (PlanDefinition via Task), assessments
    (QuestionnaireResponse score against the pass mark), live sessions attended (virtual
    Encounter), certificates and CME credits (Practitioner.qualification)."""
    import json

    from rich.table import Table

    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.training import report

    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("training", "sonobridge training report"), "local")
        record = report(core, caller, practitioner)
    except CoreError as exc:
        console.print(f"[red]{exc.status}: {exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    if as_json:
        print(json.dumps({"practitioner": record.practitioner, "name": record.name,
                          "courses": record.courses, "assessments": record.assessments,
                          "sessions": record.sessions, "certificates": record.certificates,
                          "credits": str(record.credits)}, ensure_ascii=False, indent=2,
                         default=str))
        return
    out = Console()
    out.print(f"Practitioner/{record.practitioner} {record.name}")
    sections = (("课程 Courses", record.courses, ("course", "status", "assigned")),
                ("考核 Assessments", record.assessments,
                 ("assessment", "date", "score", "pass_mark", "passed")),
                ("直播课 Sessions attended", record.sessions, ("session", "start", "status")),
                ("证书 Certificates", record.certificates,
                 ("certificate", "issued", "expires", "issuer", "credits")))
    for title, rows, columns in sections:
        table = Table(title=f"{title} ({len(rows)})")
        for column in columns:
            table.add_column(HEADERS.get(column, column))
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        out.print(table)
    out.print(f"继续医学教育学分 CME credits: {record.credits}")
