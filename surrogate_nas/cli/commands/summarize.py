"""`python -m surrogate_nas summarize RUN_DIR [--json]`: a run's validation-chosen,
test-reported savings and its hypervolume history; writes RUN_DIR/summary.json and
refreshes RUN_DIR/report.html. Given a folder of `design` folders (no rescored.csv, a
design.json below it), the median over seeds of what each design chose (summary.csv/md/png)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="headline numbers of a finished run (chosen on validation, reported on test)")
    p.add_argument("run_dir", help="a run folder (with rescored.csv, evaluations.csv, config.json), or a folder "
                                   "of design folders (one design.json per model and seed)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.results.report_html import write_run_report
    from surrogate_nas.results.summary import format_summary, summarize

    folder = Path(args.run_dir)
    if folder.is_dir() and not (folder / "rescored.csv").exists() and not (folder / "config.json").exists():
        from surrogate_nas.results.design_seeds import write_summary

        rows = write_summary(folder)
        print(json.dumps(rows, indent=2) if args.json else (folder / "summary.md").read_text())
        return 0
    summary = summarize(Path(args.run_dir))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    report = write_run_report(Path(args.run_dir))
    print(f"report: {report}", file=sys.stderr if args.json else sys.stdout)  # stdout stays JSON with --json
    return 0
