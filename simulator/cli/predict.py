"""`sim predict`: the study's table of systems for a cluster, or one plan's prediction."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from profiler.errors import InputError
from profiler.flags import check_outputs, seconds
from profiler.model import PRECISIONS, PRESETS, model_named
from profiler.trace import write_cluster_trace
from scheduler.plan import load_plan
from simulator.cli.common import (
    add_cluster_flags,
    add_command,
    check_settings,
    cluster_of,
    compute_sources,
    load_profiles,
)
from simulator.cost.job import Job
from simulator.outputs import charts, timeline
from simulator.outputs.render import render_prediction, render_table
from simulator.plan_cache import cache_folder
from simulator.predict import check_fits, predict
from simulator.study.table import predict_table, scheduler_settings, trace_first_row

# The table prints gaps in whole percent: its bound MILPs may stop within 1% of their optimum; a
# row's local search stops after this many estimates (the rows start from each other's plans).
TABLE_GAP = 0.01
TABLE_EVALUATIONS = 10
EXAMPLES_PREDICT = ("examples:\n  sim predict --case spot\n  sim predict --case world --layers 24 --batch 1024 --json\n"
                    "  sim predict --case universities --plot universities.png\n"
                    "  sim predict --cluster my-cluster.json --trace trace.json\n"
                    "  sim predict --plan examples/world-random-plan.json --plot timeline.png --trace trace.json")


def add_predict(sub) -> None:
    predict = add_command(sub, "predict", "the study's table of systems for a cluster", EXAMPLES_PREDICT)
    add_cluster_flags(predict).add_argument("--plan", type=Path,
                                            help="a plan file (plan/1): predict that one placement")
    predict.add_argument("--model", metavar="NAME|FILE",
                         help=f"the model: one of {', '.join(PRESETS)}, or a model file (model/1) (default gpt3-xl, "
                              "the study's)")
    predict.add_argument("--precision", choices=sorted(PRECISIONS), default="fp16",
                         help="training precision (default fp16; a CPU profile is fp32)")
    predict.add_argument("--layers", type=int, nargs="+",
                         help="layer counts (default: gpt3-xl 24 32 40, the study's; another model its own)")
    predict.add_argument("--batch", type=int, nargs="+", help="global batch sizes in sequences (default 1024 2048 4096)")
    predict.add_argument("--engine", choices=("analytic", "simpy"),
                         help="analytic estimator (the tables' default, held within 3%% of SimPy by the tests) or "
                              "the SimPy simulation (a plan's default)")
    predict.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    predict.add_argument("--trace", type=Path, help="write a Chrome trace (SimPy) of the first row's fastest system "
                              "(for ours_random: seed 0)")
    predict.add_argument("--plan-time-limit", type=seconds(zero="leaves the column out"), default=1.0,
                         help="seconds the scheduler may take per row for 'Ours w/ scheduler' (default 1; "
                              "0 leaves the column out)")
    predict.add_argument("--profile", type=Path, nargs="+", default=[], metavar="FILE",
                         help="profiles (profile/1, from `profiler compute`): each replaces the datasheet model of "
                              "the device kind it measured")
    predict.add_argument("--plot", type=Path, metavar="FILE.png",
                         help="also draw the prediction: the systems' bars per setting (--case, --cluster) or the "
                              "plan's timeline (--plan, SimPy)")
    predict.add_argument("--no-cache", action="store_true",
                         help="search every row's plan afresh, neither reading nor writing the plan cache "
                              "(docs/scheduler.md; TASKLET_CACHE=off does the same)")
    predict.add_argument("--quiet", action="store_true", help="no progress on stderr")


def cmd_predict(args: argparse.Namespace) -> int:
    if args.plan is not None:
        return _predict_plan(args)
    model = model_named(args.model or "gpt3-xl")
    args.layers = args.layers or ([24, 32, 40] if args.model in (None, "gpt3-xl") else [model.layers])
    args.batch = args.batch or [1024, 2048, 4096]
    args.engine = args.engine or "analytic"
    check_settings(args)
    check_outputs({"--trace": args.trace, "--plot": args.plot}, pngs=("--plot",))
    cluster, name = cluster_of(args)
    progress = None if args.quiet else (lambda text: print(f"[sim] {text}", file=sys.stderr, flush=True))
    profiles = load_profiles(args.profile, cluster)
    search = (replace(scheduler_settings(cluster, time_limit_s=args.plan_time_limit), gap=TABLE_GAP,
                      max_evaluations=TABLE_EVALUATIONS) if args.plan_time_limit else None)
    table = predict_table(cluster, name, model.with_layers, args.layers, args.batch, engine=args.engine, search=search,
                          profiles=profiles, progress=progress, precision=args.precision,
                          cache=None if args.no_cache else cache_folder())
    title = "GPT3-XL" if args.model in (None, "gpt3-xl") else model.name
    if args.trace:
        write_cluster_trace(args.trace, trace_first_row(cluster, table, model.with_layers, profiles, args.precision),
                            cluster)
    if args.plot:
        with charts.default_style():
            fig, axes = charts.new_figure(9, 4.2)
            charts.systems_chart(axes[0][0], table, f"{name}: predicted seconds per iteration of {title} "
                                                    f"({args.engine})")
            charts.save_png(fig, args.plot)
    if args.json:
        print(json.dumps(table.to_json(), indent=2))
    else:
        print(render_table(table, f"case {name}, {title}"))
        print(f"\n{compute_sources(cluster, profiles, args.profile)}")
    return 0


def _predict_plan(args: argparse.Namespace) -> int:
    if args.layers or args.batch or args.model or args.precision != "fp16":
        raise InputError("--model, --precision, --layers and --batch do not apply to --plan: the plan fixes them")
    engine = args.engine or "simpy"
    for flag, value in (("--trace", args.trace), ("--plot", args.plot)):
        if value and engine != "simpy":
            raise InputError(f"{flag} needs the SimPy engine (a plan's default)")
    check_outputs({"--trace": args.trace, "--plot": args.plot}, pngs=("--plot",))
    plan = load_plan(args.plan)
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training,
              profiles=load_profiles(args.profile, plan.cluster))
    prediction, spans = predict(job, plan.placement, engine=engine, record_spans=bool(args.trace or args.plot))
    if prediction is None:
        check_fits(job, plan.placement, where=str(args.plan))  # raises, naming the device
    if args.trace:
        write_cluster_trace(args.trace, spans, plan.cluster)
    if args.plot:
        title = f"{args.plan}: {plan.placement.config}, predicted {prediction.iteration_s:.3f} s (SimPy)"
        with charts.default_style():
            charts.save_png(timeline.figure(timeline.predicted(spans, plan.cluster, plan.placement, title)),
                            args.plot)
    if args.json:
        print(json.dumps(prediction.to_json(), indent=2))
    else:
        print(render_prediction(prediction, plan, str(args.plan)))
    return 0

