"""`sim plan`: search a placement of the study's runtime and write it as a plan file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.files import write_atomic
from profiler.flags import MAX_COST_BYTES, check_outputs, cost_bytes, seconds
from profiler.model import PRECISIONS, PRESETS, TrainingSpec, model_named
from profiler.scenarios import scheduler_matrices
from scheduler.classes import device_classes
from scheduler.ilp import SOLVERS, comm_model, write_lp
from scheduler.methods import METHODS, OBJECTIVES, SearchSettings
from scheduler.plan import Plan, Provenance
from scheduler.search import problem_for
from simulator.cli.common import add_cluster_flags, add_command, cluster_of, load_profiles
from simulator.outputs.render import render_plan_summary
from simulator.plan_cache import cache_folder
from simulator.planning import degree_options, plan_job

EXAMPLES_PLAN = ("examples:\n  sim plan --case world -o plan.json\n"
                 "  sim plan --case world --objective comm --study-matrices --dp-bytes 0.65e9 --pp-bytes 0.471e9\n"
                 "  sim plan --case universities --method evolutionary --objective comm --offspring 500\n"
                 "  sim plan --case spot --method random --samples 1000 --json > plan.json")


def add_plan(sub) -> None:
    plan = add_command(sub, "plan", "search a placement of the study's runtime and write it as a plan file",
                       EXAMPLES_PLAN)
    add_cluster_flags(plan)
    plan.add_argument("--model", default="gpt3-xl", metavar="NAME|FILE",
                      help=f"the model: one of {', '.join(PRESETS)} (default gpt3-xl, the study's; gpt-small: the "
                           "CPU-sized GPT the executor validates with), or a model file (model/1)")
    plan.add_argument("--precision", choices=sorted(PRECISIONS), default="fp16",
                      help="training precision (default fp16; a CPU profile is fp32)")
    plan.add_argument("--layers", type=int, help="layers (default: the model's own; gpt3-xl 24)")
    plan.add_argument("--batch", type=int, default=1024, help="global batch in sequences (default 1024)")
    plan.add_argument("--method", choices=METHODS, default="ilp",
                      help="ilp: exact MILP (PuLP) with a proven lower bound (default); evolutionary: the study's "
                           "genetic algorithm (docs/facts.md §5); random: best of --samples random assignments")
    plan.add_argument("--objective", choices=OBJECTIVES, default="time",
                      help="time: predicted seconds per iteration (analytic estimator); comm: the study's "
                           "cost model, DataPCost + 2·PipelinePCost")
    plan.add_argument("--pp", default="8", help="pipeline degree, or auto: try the divisors of the layers among "
                                                "1, 2, 4, 8, 16, 32 (time objective; default 8, the study's)")
    plan.add_argument("--dp", type=int, help="data-parallel degree (default: devices / pp)")
    plan.add_argument("--micro-batch", default="1", help="sequences per micro-batch, or auto: try 1, 2, 4 "
                                                        "(time objective; default 1, the study's)")
    plan.add_argument("--dp-bytes", type=cost_bytes, help=f"comm objective: c_dp in bytes, positive, at most "
                                                          f"{MAX_COST_BYTES:g} (default: derived from the model)")
    plan.add_argument("--pp-bytes", type=cost_bytes, help=f"comm objective: c_pp in bytes, positive, at most "
                                                          f"{MAX_COST_BYTES:g} (default: derived from the model)")
    plan.add_argument("--study-matrices", action="store_true",
                      help="cost regional/world with the nominal 5 ms within a region, as the study's scheduler "
                           "did (docs/facts.md §3), instead of the emulation's 10 ms")
    plan.add_argument("--solver", choices=SOLVERS, default="highs", help="MILP solver for ilp (default highs; "
                                                                          "cbc is the fallback)")
    plan.add_argument("--time-limit", type=seconds(), default=60.0,
                      help="seconds the ilp method may take, positive and finite (default 60)")
    plan.add_argument("--gap", type=float, default=1e-3,
                      help="ilp stops once (found - bound) / found is this small (default 0.001)")
    plan.add_argument("--samples", type=int, help="random: assignments to try (default 200)")
    plan.add_argument("--population", type=int, help="evolutionary: population (default 100)")
    plan.add_argument("--offspring", type=int, help="evolutionary: offspring (default 4900)")
    plan.add_argument("--split", choices=("auto", "even", "uneven"), default="auto",
                      help="layers per stage with --method ilp --objective time: even (the study's), uneven (balanced "
                           "by the estimator), auto: uneven when the cluster mixes GPU kinds (default)")
    plan.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    plan.add_argument("--lp", type=Path, help="ilp, comm objective: also write the MILP as an LP file")
    plan.add_argument("-o", "--output", type=Path, help="write the plan here")
    plan.add_argument("--json", action="store_true", help="print the plan to stdout (the summary goes to stderr)")
    plan.add_argument("--profile", type=Path, nargs="+", default=[], metavar="FILE",
                      help="profiles (profile/1) replacing the datasheet model of the device kinds they measured")
    plan.add_argument("--no-cache", action="store_true",
                      help="search afresh, neither reading nor writing the plan cache (docs/scheduler.md; "
                           "TASKLET_CACHE=off does the same)")
    plan.add_argument("--quiet", action="store_true", help="no progress on stderr")


def cmd_plan(args: argparse.Namespace) -> int:
    pp, micro = _auto(args.pp, "--pp"), _auto(args.micro_batch, "--micro-batch")
    for flag, value in (("layers", args.layers), ("batch", args.batch), ("dp", args.dp)):
        if value is not None and value < 1:
            raise InputError(f"--{flag} must be at least 1, got {value}")
    if (pp is None or micro is None) and args.objective != "time":
        raise InputError("--pp auto and --micro-batch auto compare plans by time: use --objective time")
    if args.dp and pp is None:
        raise InputError("--dp needs a given --pp")
    if args.study_matrices and args.case is None:
        raise InputError("--study-matrices applies to a built-in --case")
    _check_method_flags(args)
    check_outputs({"-o": args.output, "--lp": args.lp})
    cluster, name = cluster_of(args)
    if args.study_matrices:
        cluster = scheduler_matrices(args.case)
    model = model_named(args.model, args.layers)
    options = degree_options(cluster.size, model.layers, args.batch, pp, args.dp, micro)
    settings = SearchSettings(method=args.method, objective=args.objective, solver=args.solver,
                              time_limit_s=args.time_limit, gap=args.gap, seed=args.seed,
                              samples=200 if args.samples is None else args.samples,
                              population=100 if args.population is None else args.population,
                              offspring=4900 if args.offspring is None else args.offspring,
                              uneven=args.split == "uneven" or (args.split == "auto" and len(cluster.gpu_kinds) > 1))
    profiles = load_profiles(args.profile, cluster)
    if args.lp:
        _write_lp(cluster, model, options, args)
    progress = None if args.quiet else (lambda text: print(f"[sim plan] {text}", file=sys.stderr, flush=True))
    planned = plan_job(cluster, model, args.batch, options, settings, args.dp_bytes, args.pp_bytes, progress,
                       profiles=profiles, precision=args.precision, cache=None if args.no_cache else cache_folder())
    result = planned.result
    plan = Plan(cluster=cluster, case=name if args.case and not args.study_matrices else None, model=model,
                training=planned.training, placement=result.placement,
                provenance=Provenance(method=args.method, objective=args.objective, seed=args.seed,
                                      solver_s=result.solver_s, objective_value=result.value,
                                      lower_bound=result.bound, predicted_iteration_s=planned.predicted_iteration_s))
    text = json.dumps(plan.to_json(), indent=2) + "\n"
    if args.output:
        write_atomic(args.output, text)
    summary = render_plan_summary(plan, cluster)
    if args.json:
        sys.stdout.write(text)
        print(summary, file=sys.stderr)
    else:
        print(summary)
    return 0


def _check_method_flags(args: argparse.Namespace) -> None:
    """A flag of another method or objective would be silently ignored: refuse it."""
    owners = {"samples": "random", "population": "evolutionary", "offspring": "evolutionary"}
    for flag, method in owners.items():
        if getattr(args, flag) is not None and args.method != method:
            raise InputError(f"--{flag} applies to --method {method}, not {args.method}")
    for flag in ("dp_bytes", "pp_bytes"):  # the comm cost model's c_dp and c_pp; time is the estimator's
        if getattr(args, flag) is not None and args.objective != "comm":
            raise InputError(f"--{flag.replace('_', '-')} applies to --objective comm, not {args.objective}")
    if args.lp and (args.method != "ilp" or args.objective != "comm"):
        raise InputError("--lp writes the comm objective's MILP: use it with --method ilp --objective comm")


def _auto(value: str, flag: str) -> int | None:
    """A positive integer, or None for "auto"."""
    if value == "auto":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{flag} must be a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise InputError(f"{flag} must be at least 1, got {number}")
    return number


def _write_lp(cluster: Cluster, model, options, args: argparse.Namespace) -> None:
    training = TrainingSpec(global_batch=args.batch, micro_batch=options[0].micro_batch, precision=args.precision)
    problem = problem_for(cluster, model, training, options[0].pp, options[0].dp, args.dp_bytes, args.pp_bytes)
    write_lp(comm_model(problem, device_classes(problem.tables)).model, args.lp)
