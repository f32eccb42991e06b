"""``pathway report FIGURE --quarter 2026Q3 [--out FILE] [--format csv|fhir]``: a report as
CSV (or, for waits and mat1, a FHIR MeasureReport) to stdout or a file; each export is audited."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from gateway.reporting.export import FIGURES

MEASURE_OF = {"waits": "treatment-waiting-times", "mat1": "mat-1"}


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.audit.chain import append, audit_event
    from gateway.cli import _gateway
    from gateway.reporting.export import Reports, figure_csv
    from gateway.reporting.measure import mat1_measure_report, waits_measure_report
    from gateway.reporting.quarters import Quarter
    from gateway.reporting.waits import quarter_before
    from gateway.store.repository import now_utc

    now = now_utc()
    try:
        quarter = Quarter.parse(args.quarter) if args.quarter else quarter_before(now.date())
    except ValueError as error:
        print(f"pathway report: {error}", file=sys.stderr)
        return 2
    if args.format == "fhir" and args.figure not in MEASURE_OF:
        print(f"pathway report: --format fhir is for {' and '.join(MEASURE_OF)} (MeasureReport); {args.figure} is CSV only", file=sys.stderr)
        return 2
    gateway = _gateway()
    try:
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            if args.format == "fhir":
                reports = Reports.load(repo)
                report = waits_measure_report(reports.waits(quarter), quarter, None, now) if args.figure == "waits" else mat1_measure_report(reports.mat1(quarter), quarter, None, now)
                text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
            else:
                text = figure_csv(args.figure, repo, [quarter])
            where = f"to {args.out}" if args.out else "to stdout"
            append(session, audit_event("operation", None, detail=f"report {args.figure} {quarter} ({args.format}, aggregate) exported by the command line {where}"))
    finally:
        gateway.close()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
    else:
        sys.stdout.write(text)
    return 0


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    report = commands.add_parser("report", help="the partnership's reports (waits, completeness, mat1, outcomes) as CSV or FHIR")
    report.add_argument("figure", choices=FIGURES)
    report.add_argument("--quarter", help="e.g. 2026Q3 (July-September 2026); default the last complete quarter")
    report.add_argument("--out", help="write to this file instead of stdout")
    report.add_argument("--format", choices=("csv", "fhir"), default="csv", help="fhir: a MeasureReport (waits, mat1)")
    report.set_defaults(run=cmd_report)
