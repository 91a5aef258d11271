"""`sim report`, `sim fidelity` and `sim cases`: the study's tables for every scenario, the
development set's errors, and the built-in scenarios."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from profiler.errors import InputError
from profiler.files import write_atomic
from profiler.flags import check_outputs
from profiler.scenarios import SCENARIOS, scenario
from simulator.cli.common import add_command, check_settings
from simulator.outputs.charts import default_style, new_figure, save_png
from simulator.outputs.report import DEFAULT_BATCHES, DEFAULT_LAYERS, check_output, run_report, write_report
from simulator.study import fidelity

EXAMPLES_REPORT = ("examples:\n  sim report --all -o report\n"
                   "  sim report --case spot world -o report --layers 24 --batch 1024")


def add_report(sub) -> None:
    report = add_command(sub, "report", "every system's predicted seconds and PFLOP/s per scenario and setting, "
                                        "as Markdown, CSV and PNG charts", EXAMPLES_REPORT)
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--case", nargs="+", help="built-in scenarios: " + ", ".join(SCENARIOS) + " (or 1-5)")
    which.add_argument("--all", action="store_true", help="all five scenarios")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="folder to write report.md, predictions.csv and the PNGs into (made if missing)")
    report.add_argument("--layers", type=int, nargs="+", help="layer counts (default 24 32 40)")
    report.add_argument("--batch", type=int, nargs="+", help="global batch sizes in sequences (default 1024 2048 "
                                                            "4096)")
    report.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes to predict in (default: the cores this process may use)")
    report.add_argument("--quiet", action="store_true", help="no progress on stderr")


EXAMPLES_FIDELITY = ("examples:\n  sim fidelity\n  sim fidelity --series p2p-transfer dp-sync-scaling\n"
                     "  sim fidelity --engine simpy --json > fidelity.json\n  sim fidelity --plot fidelity.png")


def add_fidelity(sub) -> None:
    fidelity = add_command(sub, "fidelity", "predict the study's measured development set and print the errors",
                           EXAMPLES_FIDELITY)
    fidelity.add_argument("--engine", choices=("analytic", "simpy"), default="analytic",
                          help="analytic estimator (default) or the SimPy simulation")
    fidelity.add_argument("--series", nargs="+", metavar="ID", help="only these series (default: all)")
    fidelity.add_argument("--json", action="store_true", help="print one JSON document (fidelity/1) instead")
    fidelity.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw predicted against measured")
    fidelity.add_argument("--quiet", action="store_true", help="no progress on stderr")


EXAMPLES_CASES = ("examples:\n  sim cases\n  sim cases --export world -o world.json")


def add_cases(sub) -> None:
    cases = add_command(sub, "cases", "list the built-in scenarios, or export one as cluster JSON", EXAMPLES_CASES)
    cases.add_argument("--export", metavar="NAME", help="write this scenario as a cluster JSON file")
    cases.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


def cmd_report(args: argparse.Namespace) -> int:
    args.layers = list(dict.fromkeys(args.layers or DEFAULT_LAYERS))
    args.batch = list(dict.fromkeys(args.batch or DEFAULT_BATCHES))
    check_settings(args)
    out = args.output
    check_output(out)
    cases = list(SCENARIOS) if args.all else [scenario(c).name for c in args.case]
    cases = list(dict.fromkeys(cases))
    progress = None if args.quiet else (lambda text: print(f"[sim report] {text}", file=sys.stderr, flush=True))
    reports = run_report(cases, args.layers, args.batch, jobs=args.jobs, progress=progress)
    written = write_report(reports, out)
    print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    check_outputs({"--plot": args.plot}, pngs=("--plot",))
    progress = None if args.quiet else (lambda text: print(f"[sim fidelity] {text}", file=sys.stderr, flush=True))
    figures = fidelity.evaluate(args.engine, args.series, progress)
    if args.plot:
        with default_style():
            fig, axes = new_figure(7.5, 6.5)
            fidelity.fidelity_chart(axes[0][0], figures)
            save_png(fig, args.plot)
    print(json.dumps(fidelity.to_json(figures, args.engine), indent=1) if args.json
          else fidelity.render(figures, args.engine))
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    if args.export is None:
        if args.output:
            raise InputError("-o needs --export NAME")
        for item in SCENARIOS.values():
            print(f"{item.number}  {item.name:<13} {item.summary}")
        return 0
    check_outputs({"-o": args.output})
    item = scenario(args.export)
    text = json.dumps(item.build().to_json(), indent=2) + "\n"
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
