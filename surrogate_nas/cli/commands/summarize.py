"""`python -m surrogate_nas summarize RUN_DIR [--json]`: a run's validation-chosen,
test-reported savings and its hypervolume history; writes RUN_DIR/summary.json and
refreshes RUN_DIR/report.html."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="headline numbers of a finished run (chosen on validation, reported on test)")
    p.add_argument("run_dir", help="a run folder (with rescored.csv, evaluations.csv, config.json)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.results.report_html import write_run_report
    from surrogate_nas.results.summary import format_summary, summarize

    summary = summarize(Path(args.run_dir))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    report = write_run_report(Path(args.run_dir))
    print(f"report: {report}", file=sys.stderr if args.json else sys.stdout)  # stdout stays JSON with --json
    return 0
