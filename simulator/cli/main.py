"""`sim`: predict and inspect training iterations on heterogeneous clusters.

Each handler parses, loads, calls one pure function, renders. Tables go to stdout, progress to
stderr, JSON only with --json. Exit 0 ok, 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from profiler.errors import ArgumentParser, run_command
from simulator.cli import plan, predict, runs, tables


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sim", description="Predict training iterations of GPT models on heterogeneous, "
                                                    "decentralized GPU clusters.",
                            epilog="examples:\n  sim predict --case spot\n  sim plan --case world -o plan.json\n"
                                   "  sim report --all -o report\n  sim fidelity\n  sim cases",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for add in (predict.add_predict, plan.add_plan, runs.add_validate, runs.add_show, tables.add_report,
                tables.add_fidelity, tables.add_cases):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("sim", build_parser(), {"predict": predict.cmd_predict, "cases": tables.cmd_cases,
                                               "plan": plan.cmd_plan, "validate": runs.cmd_validate,
                                               "show": runs.cmd_show, "report": tables.cmd_report,
                                               "fidelity": tables.cmd_fidelity}, argv)


if __name__ == "__main__":
    sys.exit(main())
