"""`sim validate` and `sim show`: what a run of a plan measured (`executor run --out`), beside its
prediction or drawn on its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from profiler.errors import InputError
from profiler.flags import check_outputs
from profiler.run_report import load_run_report
from profiler.trace import write_cluster_trace
from scheduler.plan import load_plan
from simulator.cli.common import add_command, load_profiles
from simulator.cost.job import Job
from simulator.outputs import charts, timeline
from simulator.outputs.validate import check_report, compare, measured, profile_warnings, render, run_units
from simulator.predict import check_fits, predict

EXAMPLES_VALIDATE = ("examples:\n  executor run examples/cpu-pipeline-plan.json --out run.json\n"
                     "  profiler compute --threads 1 --dropout 0 -o cpu.json\n"
                     "  sim validate examples/cpu-pipeline-plan.json run.json --profile cpu.json --plot timeline.png")

EXAMPLES_SHOW = ("examples:\n  executor run examples/cpu-two-regions-plan.json --emulate-network --out run.json\n"
                 "  sim show examples/cpu-two-regions-plan.json run.json --plot run.png --trace run-trace.json")


def add_validate(sub) -> None:
    validate = add_command(sub, "validate", "a plan's prediction beside a run of it (executor run --out)",
                           EXAMPLES_VALIDATE)
    validate.add_argument("plan", type=Path, help="the plan file (plan/1) that was run")
    validate.add_argument("run", type=Path, help="the run report (run-report/1)")
    validate.add_argument("--profile", type=Path, nargs="+", default=[], metavar="FILE",
                          help="profiles measured on the machine that ran it")
    validate.add_argument("--engine", choices=("analytic", "simpy"), default="simpy",
                          help="SimPy simulation (default) or the analytic estimator")
    validate.add_argument("--plot", type=Path, metavar="FILE.png",
                          help="draw the predicted timeline (SimPy) beside the measured one")
    validate.add_argument("--overlay", action="store_true",
                          help="with --plot: one time axis, predicted in the upper half of each row, measured in "
                               "the lower")


def cmd_validate(args: argparse.Namespace) -> int:
    if args.overlay and not args.plot:
        raise InputError("--overlay draws with --plot FILE.png")
    if args.plot and args.engine != "simpy":
        raise InputError("--plot needs the SimPy engine (the default)")
    check_outputs({"--plot": args.plot}, pngs=("--plot",))
    plan = load_plan(args.plan)
    report = load_run_report(args.run)
    check_report(report, plan, str(args.run))  # a run of another plan, or a bad report, is refused
    run = measured(report)  # before any simulating
    if args.plot:
        drawn = timeline.measured(report, plan.cluster, plan.placement,
                                  f"measured ({args.run}, last iteration; mean {run[0]:.3f} s)", str(args.run))
    profiles = load_profiles(args.profile, plan.cluster)
    units = run_units(report, plan.cluster, str(args.run))
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training, profiles=profiles, units=units)
    prediction, spans = predict(job, plan.placement, engine=args.engine, record_spans=bool(args.plot))
    if prediction is None:
        check_fits(job, plan.placement, where=str(args.plan))
    if args.plot:
        predicted = timeline.predicted(spans, plan.cluster, plan.placement,
                                       f"predicted (SimPy): {prediction.iteration_s:.3f} s")
        with charts.default_style():
            charts.save_png(timeline.figure(predicted, drawn, overlay=args.overlay), args.plot)
    rows = compare(prediction.iteration_s, prediction.breakdown, run)
    print(render(rows, f"{args.plan} ({plan.placement.config}) predicted ({args.engine}) against {args.run}"))
    print(_sharing_line(job.compute_units, units is not None))
    for line in profile_warnings(profiles, report):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def add_show(sub) -> None:
    show = add_command(sub, "show", "what a run of a plan measured (executor run --out): its parts, drawn or traced",
                       EXAMPLES_SHOW)
    show.add_argument("plan", type=Path, help="the plan file (plan/1) that was run")
    show.add_argument("run", type=Path, help="the run report (run-report/1)")
    show.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the last iteration's timeline")
    show.add_argument("--trace", type=Path, help="write the last iteration as a Chrome trace, in the format of "
                                                 "`sim predict --trace` (one process per device)")


def cmd_show(args: argparse.Namespace) -> int:
    check_outputs({"--plot": args.plot, "--trace": args.trace}, pngs=("--plot",))
    plan = load_plan(args.plan)
    report = load_run_report(args.run)
    check_report(report, plan, str(args.run))
    iteration, breakdown = measured(report)
    if args.plot:
        drawn = timeline.measured(report, plan.cluster, plan.placement,
                                  f"{args.run}: {plan.placement.config}, measured (last iteration)", str(args.run))
        with charts.default_style():
            charts.save_png(timeline.figure(drawn), args.plot)
    if args.trace:
        write_cluster_trace(args.trace, report.trace_spans(plan.placement.tp), plan.cluster, ", measured")
    parts = ", ".join(f"{key.removesuffix('_s')} {value:.4f}" for key, value in breakdown.items())
    print(f"{args.run} ({plan.placement.config} {report.schedule}/{report.sync}): {iteration:.4f} s per iteration "
          f"(mean of {len(report.iteration_s)}); per rank: {parts}")
    return 0


def _sharing_line(units, from_report: bool) -> str:
    source = "as the run report says its ranks ran" if from_report else "as the plan's cluster says"
    if not units:
        return f"compute: every rank on a device of its own ({source})"
    shared = "; ".join(f"ranks {', '.join(map(str, u.devices))} share {u.name} (room for {u.capacity:g} at full speed)"
                       for u in units)
    return f"compute: {shared} ({source})"
