"""`executor`: run a plan for real on torch.distributed.

`executor run plan.json` spawns one process per device of the plan on this machine (gloo on the
CPU) and writes a run report (`run-report/1`). Exit 0 ok, 2 bad input (one line, no traceback),
1 a rank that failed (the message names it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from profiler.errors import ArgumentParser, InputError, NoSolution, run_command
from profiler.files import check_folder, write_atomic
from profiler.flags import check_outputs
from profiler.run_report import SCHEMA as RUN_SCHEMA
from profiler.run_report import RunReport
from profiler.trace import write_cluster_trace
from scheduler.plan import load_plan

EXAMPLES = ("examples:\n  executor run examples/cpu-pipeline-plan.json --iterations 3 --out run.json\n"
            "  executor run examples/cpu-two-regions-plan.json --emulate-network --plot run.png")
# The longest --timeout: a day. A rank that waits longer is not waiting on a peer but lost, and
# gloo holds the timeout as int64 milliseconds behind a timedelta (OverflowError past ~1e14 s).
MAX_TIMEOUT_S = 86400.0


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
                     help="hold every transfer as the plan's cluster's network would: its transfers share "
                          "NICs and links max-min fairly, each arrives a latency after its last byte (an "
                          "application-level emulator; no root needed)")
    run.add_argument("--checkpoint-dir", type=Path, help="write checkpoints here (made if missing)")
    run.add_argument("--every", type=int, default=1, help="checkpoint after every K iterations (default 1)")
    run.add_argument("--resume", action="store_true",
                     help="go on from the last complete checkpoint in --checkpoint-dir (none there: from the start)")
    run.add_argument("--timeout", type=float, default=300.0,
                     help="seconds a rank waits on a peer before the run stops, naming it: more than 0, at most "
                          f"{MAX_TIMEOUT_S:.0f} (a day; default 300)")
    run.add_argument("--out", type=Path, help="write the run report (run-report/1) here")
    run.add_argument("--trace", type=Path, help="write the last iteration as a Chrome trace, in the simulator's "
                                                "format (one process per device, a thread per stage replica)")
    run.add_argument("--plot", type=Path, metavar="FILE.png",
                     help="moved: `sim show PLAN RUN --plot FILE.png` draws a run (`sim validate --plot` beside its "
                          "prediction); this still draws it, through `sim show`")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    if args.iterations < 1 or args.warmup < 0 or args.every < 1:
        raise InputError("--iterations and --every must be at least 1, --warmup 0 or more")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:  # NaN too
        raise InputError(f"--timeout {args.timeout}: give seconds more than 0 and at most {MAX_TIMEOUT_S:.0f} (a day)")
    if args.resume and not args.checkpoint_dir:
        raise InputError("--resume needs --checkpoint-dir")
    check_outputs({"--out": args.out, "--trace": args.trace, "--plot": args.plot}, pngs=("--plot",))
    plan = load_plan(args.plan)
    if args.checkpoint_dir:  # made only once the plan reads and every other output can be written
        _make_folder(args.checkpoint_dir, "--checkpoint-dir")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("the executor needs torch: pip install -e '.[torch]'") from None
    from executor.run import Settings, run_plan, run_under_torchrun
    from profiler.spawn import RankFailed

    settings = Settings(iterations=args.iterations, warmup=args.warmup, backend=args.backend, seed=args.seed,
                        emulate_network=args.emulate_network,
                        checkpoint_dir=str(args.checkpoint_dir) if args.checkpoint_dir else None, every=args.every,
                        resume=args.resume, timeout_s=args.timeout)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # under torchrun: this process is one rank
        result = run_under_torchrun(plan, settings, verbose=not args.quiet)
        if result is None:
            return 0
    else:
        try:
            result = run_plan(plan, settings, verbose=not args.quiet)
        except RankFailed as err:
            raise NoSolution(str(err)) from None
        except KeyboardInterrupt:  # rank 0 gathers the timings only at the end: there are none to write
            raise KeyboardInterrupt("every rank stopped; no report written" + (
                f" (checkpoints in {args.checkpoint_dir} stay)" if args.checkpoint_dir else "")) from None
    for rank in result["ranks"]:
        rank.pop("weights")
        rank["spans"] = [{"label": label, "category": category, "start_s": start, "end_s": end}
                         for label, category, start, end in rank["spans"]]
    report = RunReport.from_json({"schema": RUN_SCHEMA, "plan": str(args.plan), "plan_fingerprint": plan.fingerprint(),
                                  "config": plan.placement.config, "schedule": plan.placement.schedule.value,
                                  "sync": plan.placement.sync.value, "emulated_network": args.emulate_network,
                                  "warmup": args.warmup, **result}, "the run")
    if args.out:
        write_atomic(args.out, json.dumps(report.to_json(), indent=2) + "\n")
    if args.trace:  # the format of `sim predict --trace`, so predicted and measured open side by side
        write_cluster_trace(args.trace, report.trace_spans(plan.placement.tp), plan.cluster, ", measured")
    if args.plot:
        _show(args, report)
    print(f"{plan.placement.config} {report.schedule}/{report.sync}: {report.mean_iteration_s:.3f} s per "
          f"iteration (mean of {len(report.iteration_s)}), loss {report.loss[-1]:.4f}")
    return 0


def _show(args: argparse.Namespace, report: RunReport) -> None:
    """--plot, which moved to `sim show`: say so, and run it on this run's report."""
    print(f"executor run --plot: drawing a run moved to `sim show {args.plan} RUN.json --plot {args.plot}`; "
          "drawing it with that now", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        path = args.out or Path(folder) / "run.json"
        if not args.out:
            write_atomic(path, json.dumps(report.to_json()) + "\n")
        done = subprocess.run([sys.executable, "-m", "simulator.cli.main", "show", str(args.plan), str(path), "--plot",
                               str(args.plot)], stdout=subprocess.DEVNULL)
    if done.returncode:
        raise NoSolution(f"--plot: `sim show` could not draw the run (exit {done.returncode})")


def _make_folder(path: Path, flag: str) -> None:
    """An output folder, made if missing, checked before the work."""
    check_folder(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file, not a folder")
    try:
        path.mkdir(exist_ok=True)
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot make the folder ({err.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    return run_command("executor", build_parser(), {"run": cmd_run}, argv)


if __name__ == "__main__":
    sys.exit(main())
