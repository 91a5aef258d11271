"""`sim`: predict and inspect training iterations on heterogeneous clusters.

Each handler parses, loads, calls one pure function, renders. Tables go to stdout, progress to
stderr, JSON only with --json. Exit 0 ok, 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from profiler.files import write_atomic
from profiler.cluster import Cluster, load_cluster
from profiler.errors import ArgumentParser, InputError, run_command
from profiler.model import MODELS, PRECISIONS, gpt3_xl
from profiler.scenarios import SCENARIOS, scenario, scheduler_matrices
from scheduler.methods import METHODS, OBJECTIVES
from scheduler.ilp import SOLVERS
from simulator.flags import MAX_COST_BYTES, check_outputs, cost_bytes, seconds

EXAMPLES = {
    "predict": "examples:\n  sim predict --case spot\n  sim predict --case world --layers 24 --batch 1024 --json\n"
               "  sim predict --case universities --plot universities.png\n"
               "  sim predict --cluster my-cluster.json --trace trace.json\n"
               "  sim predict --plan examples/world-random-plan.json --plot timeline.png --trace trace.json",
    "report": "examples:\n  sim report --all -o report\n  sim report --case spot world -o report --layers 24 --batch 1024",
    "validate": "examples:\n  executor run examples/cpu-pipeline-plan.json --out run.json\n"
                "  profiler compute --threads 1 --dropout 0 -o cpu.json\n"
                "  sim validate examples/cpu-pipeline-plan.json run.json --profile cpu.json --plot timeline.png",
    "cases": "examples:\n  sim cases\n  sim cases --export world -o world.json",
    "fidelity": "examples:\n  sim fidelity\n  sim fidelity --series p2p-transfer dp-sync-scaling\n"
                "  sim fidelity --engine simpy --json > fidelity.json\n  sim fidelity --plot fidelity.png",
    "plan": "examples:\n  sim plan --case world -o plan.json\n"
            "  sim plan --case world --objective comm --study-matrices --dp-bytes 0.65e9 --pp-bytes 0.471e9\n"
            "  sim plan --case universities --method evolutionary --objective comm --offspring 500\n"
            "  sim plan --case spot --method random --samples 1000 --json > plan.json",
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sim", description="Predict training iterations of GPT models on heterogeneous, "
                                                    "decentralized GPU clusters.",
                            epilog="examples:\n  sim predict --case spot\n  sim plan --case world -o plan.json\n"
                                   "  sim report --all -o report\n  sim fidelity\n  sim cases",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    predict = sub.add_parser("predict", help="the study's table of systems for a cluster",
                             epilog=EXAMPLES["predict"], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument("--case", help="a built-in scenario: " + ", ".join(SCENARIOS) + " (or 1-5)")
    where.add_argument("--cluster", type=Path, help="a cluster JSON file (see `sim cases --export`)")
    where.add_argument("--plan", type=Path, help="a plan file (plan/1): predict that one placement")
    predict.add_argument("--layers", type=int, nargs="+", help="layer counts (default 24 32 40)")
    predict.add_argument("--batch", type=int, nargs="+", help="global batch sizes in sequences (default 1024 2048 4096)")
    predict.add_argument("--engine", choices=("analytic", "simpy"),
                         help="analytic estimator (the tables' default, held within 3%% of SimPy by the tests) or "
                              "the SimPy simulation (a plan's default)")
    predict.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    predict.add_argument("--trace", type=Path, help="write a Chrome trace (SimPy) of the first row's fastest system "
                              "(for ours_random: seed 0)")
    predict.add_argument("--plan-time-limit", type=seconds(zero="leaves the column out"), default=5.0,
                         help="seconds the scheduler may take per row for 'Ours w/ scheduler' (default 5; "
                              "0 leaves the column out)")
    predict.add_argument("--profile", type=Path, nargs="+", default=[], metavar="FILE",
                         help="profiles (profile/1, from `profiler compute`): each replaces the datasheet model of "
                              "the device kind it measured")
    predict.add_argument("--plot", type=Path, metavar="FILE.png",
                         help="also draw the prediction: the systems' bars per setting (--case, --cluster) or the "
                              "plan's timeline (--plan, SimPy)")
    predict.add_argument("--quiet", action="store_true", help="no progress on stderr")
    plan = sub.add_parser("plan", help="search a placement of the study's runtime and write it as a plan file",
                          epilog=EXAMPLES["plan"], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = plan.add_mutually_exclusive_group(required=True)
    where.add_argument("--case", help="a built-in scenario: " + ", ".join(SCENARIOS) + " (or 1-5)")
    where.add_argument("--cluster", type=Path, help="a cluster JSON file")
    plan.add_argument("--model", choices=sorted(MODELS), default="gpt3-xl",
                      help="the model's shape (default gpt3-xl, the study's; gpt-small: the CPU-sized GPT the "
                           "executor validates with)")
    plan.add_argument("--precision", choices=sorted(PRECISIONS), default="fp16",
                      help="training precision (default fp16; a CPU profile is fp32)")
    plan.add_argument("--layers", type=int, default=24, help="layers (default 24)")
    plan.add_argument("--batch", type=int, default=1024, help="global batch in sequences (default 1024)")
    plan.add_argument("--method", choices=METHODS, default="ilp",
                      help="ilp: exact MILP (PuLP) with a proven lower bound (default); evolutionary: the study's "
                           "genetic algorithm (FACTS.md §5); random: best of --samples random assignments")
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
                           "did (FACTS.md §3), instead of the emulation's 10 ms")
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
    plan.add_argument("--quiet", action="store_true", help="no progress on stderr")
    validate = sub.add_parser("validate", help="a plan's prediction beside a run of it (executor run --out)",
                              epilog=EXAMPLES["validate"], formatter_class=argparse.RawDescriptionHelpFormatter)
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
    report = sub.add_parser("report", help="every system's predicted seconds and PFLOP/s per scenario and setting, "
                                           "as Markdown, CSV and PNG charts", epilog=EXAMPLES["report"],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
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
    fidelity = sub.add_parser("fidelity", help="predict the study's measured development set and print the errors",
                              epilog=EXAMPLES["fidelity"], formatter_class=argparse.RawDescriptionHelpFormatter)
    fidelity.add_argument("--engine", choices=("analytic", "simpy"), default="analytic",
                          help="analytic estimator (default) or the SimPy simulation")
    fidelity.add_argument("--series", nargs="+", metavar="ID", help="only these series (default: all)")
    fidelity.add_argument("--json", action="store_true", help="print one JSON document (fidelity/1) instead")
    fidelity.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw predicted against measured")
    fidelity.add_argument("--quiet", action="store_true", help="no progress on stderr")
    cases = sub.add_parser("cases", help="list the built-in scenarios, or export one as cluster JSON",
                           epilog=EXAMPLES["cases"], formatter_class=argparse.RawDescriptionHelpFormatter)
    cases.add_argument("--export", metavar="NAME", help="write this scenario as a cluster JSON file")
    cases.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    return parser


def _cluster(args: argparse.Namespace) -> tuple[Cluster, str]:
    if args.case is not None:
        item = scenario(args.case)
        return item.build(), item.name
    cluster = load_cluster(args.cluster)
    return cluster, cluster.name


def _check_settings(args: argparse.Namespace) -> None:
    for n in args.layers:
        if n < 1:
            raise InputError(f"--layers: {n} is not a positive layer count")
    for b in args.batch:
        if b < 1:
            raise InputError(f"--batch: {b} is not a positive batch size")


def cmd_predict(args: argparse.Namespace) -> int:
    from simulator.predict import predict_table, scheduler_settings
    from simulator.render import render_table

    if args.plan is not None:
        return _predict_plan(args)
    args.layers = args.layers or [24, 32, 40]
    args.batch = args.batch or [1024, 2048, 4096]
    args.engine = args.engine or "analytic"
    _check_settings(args)
    check_outputs({"--trace": args.trace, "--plot": args.plot}, pngs=("--plot",))
    cluster, name = _cluster(args)
    progress = None if args.quiet else (lambda text: print(f"[sim] {text}", file=sys.stderr, flush=True))
    profiles = _profiles(args.profile, cluster)
    search = scheduler_settings(cluster, time_limit_s=args.plan_time_limit) if args.plan_time_limit else None
    table = predict_table(cluster, name, gpt3_xl, args.layers, args.batch, engine=args.engine, search=search,
                          profiles=profiles, progress=progress)
    if args.trace:
        _write_trace(cluster, table, args.trace, profiles)
    if args.plot:
        from simulator import charts

        with charts.default_style():
            fig, axes = charts.new_figure(9, 4.2)
            charts.systems_chart(axes[0][0], table, f"{name}: predicted seconds per iteration of GPT3-XL "
                                                    f"({args.engine})")
            charts.save_png(fig, args.plot)
    if args.json:
        print(json.dumps(table.to_json(), indent=2))
    else:
        print(render_table(table, f"case {name}, GPT3-XL"))
        print(f"\n{compute_sources(cluster, profiles, args.profile)}")
    return 0


def _profiles(paths: list[Path], cluster: Cluster) -> tuple:
    """The profiles given, one per device kind, each for a kind the cluster has."""
    from profiler.profile import load_profile

    profiles = tuple(load_profile(path) for path in paths)
    for path, profile in zip(paths, profiles):
        if profile.device_kind not in cluster.gpu_kinds:
            raise InputError(f"{path}: profile of {profile.device_kind!r}, which cluster {cluster.name!r} does not "
                             f"have (its kinds: {', '.join(cluster.gpu_kinds)})")
    kinds = [p.device_kind for p in profiles]
    if len(set(kinds)) != len(kinds):
        raise InputError(f"--profile: two profiles of one device kind ({', '.join(kinds)})")
    return profiles


def compute_sources(cluster: Cluster, profiles: tuple, paths: list[Path]) -> str:
    """The footer line: which kinds' compute is measured, which comes from the datasheet model."""
    measured = {p.device_kind: (p, path) for p, path in zip(profiles, paths)}
    parts = []
    for kind in cluster.gpu_kinds:
        if kind in measured:
            profile, path = measured[kind]
            parts.append(f"{kind} measured ({path}: {profile.device_name}, {profile.dtype}, {profile.date})")
        else:
            parts.append(f"{kind} from its datasheet (GEMM efficiency calibrated to FACTS.md §2)")
    return "compute: " + "; ".join(parts) + "; network: the cluster's figures"


def _predict_plan(args: argparse.Namespace) -> int:
    from scheduler.plan import load_plan
    from simulator.predict import check_fits, predict
    from simulator.render import render_prediction
    from simulator.job import Job

    if args.layers or args.batch:
        raise InputError("--layers and --batch do not apply to --plan: the plan fixes them")
    engine = args.engine or "simpy"
    for flag, value in (("--trace", args.trace), ("--plot", args.plot)):
        if value and engine != "simpy":
            raise InputError(f"{flag} needs the SimPy engine (a plan's default)")
    check_outputs({"--trace": args.trace, "--plot": args.plot}, pngs=("--plot",))
    plan = load_plan(args.plan)
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training,
              profiles=_profiles(args.profile, plan.cluster))
    prediction, spans = predict(job, plan.placement, engine=engine, record_spans=bool(args.trace or args.plot))
    if prediction is None:
        check_fits(job, plan.placement, where=str(args.plan))  # raises, naming the device
    if args.trace:
        from simulator.trace import write_cluster_trace

        write_cluster_trace(args.trace, spans, plan.cluster)
    if args.plot:
        from simulator import charts, timeline

        title = f"{args.plan}: {plan.placement.config}, predicted {prediction.iteration_s:.3f} s (SimPy)"
        with charts.default_style():
            charts.save_png(timeline.figure(timeline.predicted(spans, plan.cluster, plan.placement, title)),
                            args.plot)
    if args.json:
        print(json.dumps(prediction.to_json(), indent=2))
    else:
        print(render_prediction(prediction, plan, str(args.plan)))
    return 0


def _write_trace(cluster: Cluster, table, path: Path, profiles: tuple) -> None:
    from simulator.predict import trace_first_row
    from simulator.trace import write_cluster_trace

    write_cluster_trace(path, trace_first_row(cluster, table, gpt3_xl, profiles), cluster)


def cmd_plan(args: argparse.Namespace) -> int:
    from scheduler.methods import SearchSettings
    from scheduler.plan import Plan, Provenance
    from simulator.planning import degree_options, plan_job
    from simulator.render import render_plan_summary

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
    cluster, name = _cluster(args)
    if args.study_matrices:
        cluster = scheduler_matrices(args.case)
    model = MODELS[args.model](args.layers)
    options = degree_options(cluster.size, args.layers, args.batch, pp, args.dp, micro)
    settings = SearchSettings(method=args.method, objective=args.objective, solver=args.solver,
                              time_limit_s=args.time_limit, gap=args.gap, seed=args.seed, samples=200 if args.samples is None else args.samples,
                              population=100 if args.population is None else args.population,
                              offspring=4900 if args.offspring is None else args.offspring,
                              uneven=args.split == "uneven" or (args.split == "auto" and len(cluster.gpu_kinds) > 1))
    profiles = _profiles(args.profile, cluster)
    if args.lp:
        _write_lp(cluster, model, options, args)
    progress = None if args.quiet else (lambda text: print(f"[sim plan] {text}", file=sys.stderr, flush=True))
    planned = plan_job(cluster, model, args.batch, options, settings, args.dp_bytes, args.pp_bytes, progress,
                       profiles=profiles, precision=args.precision)
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
    from profiler.model import TrainingSpec
    from scheduler.classes import device_classes
    from scheduler.ilp import comm_model, write_lp
    from scheduler.search import problem_for

    training = TrainingSpec(global_batch=args.batch, micro_batch=options[0].micro_batch, precision=args.precision)
    problem = problem_for(cluster, model, training, options[0].pp, options[0].dp, args.dp_bytes, args.pp_bytes)
    write_lp(comm_model(problem, device_classes(problem.tables)).model, args.lp)


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


def cmd_validate(args: argparse.Namespace) -> int:
    from profiler.files import read_json
    from scheduler.plan import load_plan
    from simulator.job import Job
    from simulator.predict import check_fits, predict
    from simulator.validate import check_report, compare, measured, profile_warnings, render, run_units

    if args.overlay and not args.plot:
        raise InputError("--overlay draws with --plot FILE.png")
    if args.plot and args.engine != "simpy":
        raise InputError("--plot needs the SimPy engine (the default)")
    check_outputs({"--plot": args.plot}, pngs=("--plot",))
    plan = load_plan(args.plan)
    report = read_json(args.run, "run report")
    check_report(report, plan, str(args.run))  # a run of another plan, or a bad report, is refused
    run = measured(report, str(args.run))  # before any simulating
    if args.plot:
        from simulator import timeline

        drawn = timeline.measured(report, plan.cluster, plan.placement,
                                  f"measured ({args.run}, last iteration; mean {run[0]:.3f} s)", str(args.run))
    profiles = _profiles(args.profile, plan.cluster)
    units = run_units(report, plan.cluster, str(args.run))
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training, profiles=profiles, units=units)
    prediction, spans = predict(job, plan.placement, engine=args.engine, record_spans=bool(args.plot))
    if prediction is None:
        check_fits(job, plan.placement, where=str(args.plan))
    if args.plot:
        from simulator import charts

        predicted = timeline.predicted(spans, plan.cluster, plan.placement,
                                       f"predicted (SimPy): {prediction.iteration_s:.3f} s")
        with charts.default_style():
            charts.save_png(timeline.figure(predicted, drawn, overlay=args.overlay), args.plot)
    rows = compare(prediction.iteration_s, prediction.breakdown, run)
    print(render(rows, f"{args.plan} ({plan.placement.config}) predicted ({args.engine}) against {args.run}"))
    print(_sharing_line(job.compute_units, units is not None))
    for line in profile_warnings(profiles, report, str(args.run)):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _sharing_line(units, from_report: bool) -> str:
    source = "as the run report says its ranks ran" if from_report else "as the plan's cluster says"
    if not units:
        return f"compute: every rank on a device of its own ({source})"
    shared = "; ".join(f"ranks {', '.join(map(str, u.devices))} share {u.name} (room for {u.capacity:g} at full speed)"
                       for u in units)
    return f"compute: {shared} ({source})"


def cmd_report(args: argparse.Namespace) -> int:
    from simulator.report import DEFAULT_BATCHES, DEFAULT_LAYERS, check_output, run_report, write_report

    args.layers = list(dict.fromkeys(args.layers or DEFAULT_LAYERS))
    args.batch = list(dict.fromkeys(args.batch or DEFAULT_BATCHES))
    _check_settings(args)
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
    from simulator import fidelity
    from simulator.charts import default_style, new_figure, save_png

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


def main(argv: list[str] | None = None) -> int:
    return run_command("sim", build_parser(), {"predict": cmd_predict, "cases": cmd_cases, "plan": cmd_plan,
                                               "validate": cmd_validate, "report": cmd_report,
                                               "fidelity": cmd_fidelity}, argv)


if __name__ == "__main__":
    sys.exit(main())
