"""`executor`: run a plan for real on torch.distributed.

`executor run plan.json` spawns one process per device of the plan on this machine (gloo on the
CPU) and writes a run report (`run-report/1`). Exit 0 ok, 2 bad input (one line, no traceback),
1 a rank that failed (the message names it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from profiler.errors import ArgumentParser, InputError, NoSolution, run_command
from profiler.files import check_folder, write_atomic

EXAMPLES = "examples:\n  executor run examples/cpu-pipeline-plan.json --iterations 3 --out run.json"
REPORT_SCHEMA = "run-report/1"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="executor", description="Run a Tasklet plan on torch.distributed.", epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    run = sub.add_parser("run", help="train the plan's model with its placement, schedule and sync",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("plan", type=Path, help="a plan file (plan/1)")
    run.add_argument("--iterations", type=int, default=3, help="timed iterations (default 3)")
    run.add_argument("--warmup", type=int, default=1, help="iterations run first and left out of the timings (default 1)")
    run.add_argument("--backend", choices=("gloo", "nccl"), default="gloo", help="default gloo")
    run.add_argument("--seed", type=int, default=0, help="weights and data seed (default 0)")
    run.add_argument("--emulate-network", action="store_true",
                     help="hold every transfer as the plan's cluster's links would: latency + bytes / bandwidth, "
                          "each link one transfer at a time (an application-level shaper; no root needed)")
    run.add_argument("--out", type=Path, help="write the run report (run-report/1) here")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.plan import load_plan

    if args.iterations < 1 or args.warmup < 0:
        raise InputError("--iterations must be at least 1 and --warmup 0 or more")
    plan = load_plan(args.plan)
    if args.out:
        check_folder(args.out)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("the executor needs torch: pip install -e '.[torch]'") from None
    from executor.run import Settings, check_runnable, run_plan
    from profiler.spawn import RankFailed

    check_runnable(plan, args.emulate_network)
    try:
        result = run_plan(plan, Settings(iterations=args.iterations, warmup=args.warmup, backend=args.backend,
                                         seed=args.seed, emulate_network=args.emulate_network), verbose=not args.quiet)
    except RankFailed as err:
        raise NoSolution(str(err)) from None
    report = {"schema": REPORT_SCHEMA, "plan": str(args.plan), "config": plan.placement.config,
              "schedule": plan.placement.schedule.value, "sync": plan.placement.sync.value,
              "emulated_network": args.emulate_network,
              "warmup": args.warmup, **result}
    for rank in report["ranks"]:
        rank.pop("weights")
        rank["spans"] = [{"label": label, "category": category, "start_s": start, "end_s": end}
                         for label, category, start, end in rank["spans"]]
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    seconds = report["iteration_s"]
    print(f"{plan.placement.config} {report['schedule']}/{report['sync']}: {sum(seconds) / len(seconds):.3f} s per "
          f"iteration (mean of {len(seconds)}), loss {report['loss'][-1]:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("executor", build_parser(), {"run": cmd_run}, argv)


if __name__ == "__main__":
    sys.exit(main())
