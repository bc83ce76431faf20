"""``sonobridge qc``: the month's QC indicators as a table, and the month's QC review sample.

``qc report --month 2026-11`` evaluates every shipped indicator Measure for the month (in the
site's zone, ``SONOBRIDGE_HL7_TIME_ZONE``) and prints one row per indicator with Chinese and
English headers; ``--by practitioner`` adds a row per doctor, ``--save`` stores the
MeasureReports (and the Measures they name, when not stored yet), ``--out DIR`` writes them as
JSON. ``qc sample`` draws the reproducible random
sample of the month's studies into QC review Tasks (``core/qc.py``).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sonobridge.app.cli.options import DatabaseUrl, DataDir

qc_app = typer.Typer(help="Quality control (质控): indicator reports and review samples.",
                     no_args_is_help=True)
console = Console(stderr=True)
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
YEAR = re.compile(r"^\d{4}$")


def _month(value: str) -> str:
    if not MONTH.match(value):
        console.print(f"[red]--month {value!r}: expected YYYY-MM[/red]")
        raise typer.Exit(2)
    return value


def _score(value: Any, scoring: str) -> str:
    if value is None:
        return "-"
    number = Decimal(str(value))
    if scoring == "ratio":
        return f"{number:.1f}"
    return f"{number * 100:.1f}%"


def _counts(group: dict[str, Any]) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: int(p["count"]) for p in group["population"]}


def report_rows(reports: list[tuple[dict[str, Any], dict[str, Any]]], by: str | None
                ) -> list[list[str]]:
    """Table rows: indicator, title, numerator, denominator, score, better (and per-stratum
    rows under each indicator when ``by`` names a stratifier)."""
    rows = []
    for measure, report in reports:
        scoring = measure["scoring"]["coding"][0]["code"]
        better = {"increase": "↑", "decrease": "↓"}.get(
            (measure.get("improvementNotation") or {}).get("coding", [{}])[0].get("code", ""),
            "")
        group = report["group"][0]
        counts = _counts(group)
        denominator = counts.get("denominator", 0) - counts.get("denominator-exclusion", 0)
        rows.append([measure["identifier"][0]["value"], measure["title"],
                     str(counts.get("numerator", 0)), str(denominator),
                     _score(group.get("measureScore", {}).get("value"), scoring), better])
        if by is None:
            continue
        for stratifier in group.get("stratifier", []):
            if stratifier["code"][0]["text"] != by:
                continue
            for stratum in stratifier["stratum"]:
                s_counts = _counts(stratum)
                s_den = s_counts.get("denominator", 0) - \
                    s_counts.get("denominator-exclusion", 0)
                rows.append(["", f"  {stratum['value']['text']}",
                             str(s_counts.get("numerator", 0)), str(s_den),
                             _score(stratum.get("measureScore", {}).get("value"), scoring),
                             ""])
    return rows


@qc_app.command("report")
def report_command(
    month: Annotated[str | None, typer.Option("--month", help="The month, YYYY-MM.")] = None,
    year: Annotated[str | None, typer.Option(
        "--year", help="A whole year, YYYY, instead of a month (what a provincial QC "
        "centre reports).")] = None,
    by: Annotated[str | None, typer.Option(
        "--by", help="Also one row per organization, practitioner or device.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Store the MeasureReports.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the MeasureReports as "
                                             "JSON files into this folder.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The QC indicators (超声质控指标) of a month or a year, as a table.

    Every indicator is evaluated in one pass over the store (the views' rows read once for
    all of them), so a year of a busy department takes seconds to a minute, not one
    $evaluate-measure request per indicator."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.measures.definitions import MEASURES, STRATA
    from sonobridge.core.measures.evaluate import evaluate, period_of
    from sonobridge.core.measures.indicators import Data
    from sonobridge.core.policy import Policy
    from sonobridge.core.views.service import ViewService

    if (month is None) == (year is None):
        console.print("[red]give --month YYYY-MM or --year YYYY (one of them)[/red]")
        raise typer.Exit(2)
    if year is not None and not YEAR.match(year):
        console.print(f"[red]--year {year!r}: expected YYYY[/red]")
        raise typer.Exit(2)
    label = _month(month) if month is not None else str(year)
    if by is not None and by not in STRATA:
        console.print(f"[red]--by {by!r}: one of {', '.join(STRATA)}[/red]")
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("qc-report", "sonobridge qc report"), "local")
        period = period_of(label, label, settings.hl7_time_zone)
        data = Data(ViewService(core.store, core.search), caller)
        reports = [(m, evaluate(m, data, period)) for m in MEASURES.values()]
        if save:  # the Measures too, so that each report's canonical resolves here
            for measure in MEASURES.values():
                if not core.resources.exists("Measure", measure["id"]):
                    core.resources.update(caller, "Measure", measure["id"], measure)
            for _, report in reports:
                core.resources.create(caller, "MeasureReport", report)
    except CoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for measure, report in reports:
            path = out / f"MeasureReport-{measure['id']}-{label}.json"
            path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str),
                            encoding="utf-8")
    table = Table(title=f"超声质控指标 Ultrasound QC indicators {label}")
    for header, justify in (("指标 Indicator", "left"), ("名称 Name", "left"),
                            ("分子 Numerator", "right"), ("分母 Denominator", "right"),
                            ("结果 Result", "right"), ("方向 Better", "center")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in report_rows(reports, by):
        table.add_row(*row)
    Console().print(table)
    if save:
        console.print(f"saved {len(reports)} MeasureReports")


@qc_app.command("sample")
def sample_command(
    month: Annotated[str, typer.Option("--month", help="The month, YYYY-MM.")],
    rate: Annotated[float, typer.Option("--rate", min=0.0001, max=1.0,
                                        help="Share of the month's studies to review.")
                    ] = 0.05,
    seed: Annotated[str | None, typer.Option(
        "--seed", help="Seed of the draw (default: the month, so a rerun draws the same "
                       "studies).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Draw a reproducible random sample of the month's ultrasound studies into QC review
    Tasks (one per study, for image QC; the study's report for report QC)."""
    from sonobridge.app.cli.main import _settings
    from sonobridge.app.compose import open_app_core
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.qc import draw_sample

    _month(month)
    settings = _settings(data_dir=data_dir, database_url=database_url)
    core = open_app_core(settings)
    try:
        caller = core.caller(Policy.system("qc-sample", "sonobridge qc sample"), "local")
        result = draw_sample(core, caller, month, rate, seed or month)
    except CoreError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.close()
    console.print(f"{month}: {result.population} studies, sampled {len(result.sampled)} "
                  f"(rate {rate:g}, seed {seed or month}); {result.created} new review Tasks "
                  "(image QC per study, report QC per final report; a rerun makes none)")
    for study in result.sampled:
        print(study)
