"""Predict placements: the memory check first, then the SimPy engine or the analytic estimator."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.profile import Profile
from profiler.model import ModelSpec, TrainingSpec
from scheduler.layouts import blocks_layout
from scheduler.methods import SearchSettings
from scheduler.placement import Placement
from scheduler.search import TimeBoundInputs
from simulator.estimator import estimate
from simulator.compute import device_compute
from simulator.job import Job, worker_cost
from simulator.runtime import TRAITS
from simulator.memory import memory_report
from simulator.prediction import BREAKDOWN_KEYS, Prediction, PredictionTable, SystemResult, TableRow
from simulator.program import Category, Program
from simulator.systems import (STUDY_PIPELINE, megatron_configs, megatron_placements, study_random_placements,
                               study_runtime_fits)
from simulator.topology import Topology, route_rates

def megatron_pp_config(device_count: int) -> str | None:
    """FACTS.md §4: Megatron-PP = P8T1 on the default layout (P8T1D8 on 64 devices)."""
    return f"P8T1D{device_count // 8}" if device_count % 8 == 0 else None


def peak_memory(job: Job, placement: Placement) -> tuple[tuple[float, ...], bool]:
    """Per-device peak bytes (0 for devices the placement leaves idle) and whether all fit."""
    peaks = [0.0] * job.cluster.size
    fits = True
    for item in memory_report(job, placement):
        peaks[item.device] = item.total_bytes
        fits = fits and item.fits
    return tuple(peaks), fits


def check_fits(job: Job, placement: Placement, where: str) -> None:
    """InputError naming the first device that runs out of memory."""
    for item in memory_report(job, placement):
        if not item.fits:
            raise InputError(f"{where}: does not fit in memory: device {item.device} needs "
                             f"{item.total_bytes / 2**30:.2f} GiB of its {item.capacity_bytes / 2**30:.2f} GiB")


def predict(job: Job, placement: Placement, *, engine: str = "simpy", topology: Topology | None = None,
            record_spans: bool = False) -> tuple[Prediction | None, tuple]:
    """(prediction, spans), or (None, ()) when the placement does not fit in memory."""
    if engine not in ("analytic", "simpy"):
        raise ValueError(f"engine must be 'analytic' or 'simpy', got {engine!r}")
    topology = topology or Topology(job.cluster)
    peaks, fits = peak_memory(job, placement)
    if not fits:
        return None, ()
    if engine == "analytic":
        result = estimate(job, topology, placement)
        return Prediction(config=placement.config, engine=engine, iteration_s=result.iteration_s,
                          breakdown=result.breakdown, peak_memory_bytes=peaks), ()
    from simulator.engine import simulate  # SimPy is only needed here
    from simulator.lower import lower

    program = lower(job, topology, placement)
    network = topology.network((t.src_device, t.dst_device) for t in program.transfers)
    result = simulate(program, network, record_spans=True, units=job.compute_units)
    breakdown = engine_breakdown(program, result.spans, result.makespan_s)
    return (Prediction(config=placement.config, engine=engine, iteration_s=result.makespan_s, breakdown=breakdown,
                       peak_memory_bytes=peaks, operations=result.operations),
            result.spans if record_spans else ())


def engine_breakdown(program: Program, spans, makespan_s: float) -> dict[str, float]:
    """Mean over workers of their main streams' time by category; a worker's sync on a stream of
    its own (the study's runtime) counts where its main stream does nothing else; the rest
    (bubbles, barriers) is idle."""
    ops = {op.id: op for stream in program.streams for op in stream.ops}
    totals = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    workers = sum(1 for stream in program.streams if stream.main)
    syncing: dict[str, tuple[float, float]] = {}  # worker -> its side stream's sync, first start to last end
    busy: dict[str, list[tuple[float, float]]] = {}  # worker -> its main stream's compute
    for span in spans:
        op, length = ops[span.op_id], span.end_s - span.start_s
        worker = span.stream.split("/")[0]
        if not span.main:
            if op.category is Category.DP_SYNC:
                start, end = syncing.get(worker, (span.start_s, span.end_s))
                syncing[worker] = (min(start, span.start_s), max(end, span.end_s))
        elif op.category is Category.BARRIER:
            continue
        elif op.is_comm:
            totals["dp_sync_s" if op.category is Category.DP_SYNC else "pipeline_s"] += length
        else:
            totals["tp_comm_s"] += op.tp_comm_s
            totals["compute_s"] += length - op.tp_comm_s
            busy.setdefault(worker, []).append((span.start_s, span.end_s))
    for worker, (start, end) in syncing.items():
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in busy.get(worker, ()))
        totals["dp_sync_s"] += end - start - overlap
    totals["idle_s"] = workers * makespan_s - sum(totals.values())
    return {key: value / workers for key, value in totals.items()}


def predict_table(cluster: Cluster, case: str, model_of: Callable[[int], ModelSpec], layers: list[int],
                  batches: list[int], *, engine: str = "analytic", search: SearchSettings | None = None,
                  profiles: tuple[Profile, ...] = (),
                  progress: Callable[[str], None] | None = None) -> PredictionTable:
    """The study's table: one row per (layers, batch), every system and Megatron configuration.
    A Megatron configuration whose data-parallel degree does not divide the batch is left out of
    its row; ``ours_random`` is there when the cluster can hold the study's 8-stage runtime, and
    with ``search`` ``ours_scheduled`` too: that runtime on the plan the scheduler finds with
    these settings (``scheduler_settings``: those of `sim plan`). ``profiles`` replace the
    datasheet model of the device kinds they measured."""
    for n_layers in layers:
        for batch in batches:
            check_setting(cluster.size, n_layers, batch)
    topology = Topology(cluster)
    rows = []
    for n_layers in layers:
        model = model_of(n_layers)
        megatron = megatron_placements(cluster.size, n_layers)
        randoms = study_random_placements(cluster.size, n_layers) if study_runtime_fits(cluster.size, n_layers) else []
        for batch in batches:
            if progress:
                progress(f"{case}: {n_layers} layers, batch {batch}")
            job = Job(cluster=cluster, model=model, training=TrainingSpec(global_batch=batch), profiles=profiles)
            rows.append(_row(job, topology, megatron, randoms, engine, search, _now_and_then(progress)))
    return PredictionTable(case=case, engine=engine, rows=tuple(rows))


def check_setting(device_count: int, n_layers: int, batch: int) -> None:
    """InputError unless some system of the table applies to the setting: a Megatron
    configuration or the study's runtime that holds the layers, with a data-parallel degree that
    divides the batch."""
    megatron = megatron_configs(device_count, n_layers)
    study = study_runtime_fits(device_count, n_layers)
    if not megatron and not study:
        raise InputError(f"no configuration of {n_layers} layers fits {device_count} devices")
    degrees = {device_count // (pp * tp) for pp, tp in megatron} | (
        {device_count // STUDY_PIPELINE} if study else set())
    if all(batch % dp for dp in degrees):
        raise InputError(f"batch {batch} does not divide over the data-parallel replicas of any "
                         f"configuration of {n_layers} layers on {device_count} devices")


def _seconds(job: Job, placement: Placement, topology: Topology, engine: str) -> float | None:
    prediction, _ = predict(job, placement, engine=engine, topology=topology)
    return None if prediction is None else prediction.iteration_s


def scheduler_settings(cluster: Cluster, *, time_limit_s: float = 60.0, deterministic: bool = False) -> SearchSettings:
    """`sim plan`'s defaults for ``cluster`` (ilp, time objective, layers balanced over the stages
    where it mixes GPU kinds: --split auto), given ``time_limit_s``; or, ``deterministic``, the
    search without a clock or bound MILP (scheduler.time_search), the same on any machine."""
    return SearchSettings(time_limit_s=time_limit_s, uneven=len(cluster.gpu_kinds) > 1, deterministic=deterministic)


def _scheduled(job: Job, topology: Topology, pp: int, dp: int, engine: str, settings: SearchSettings) -> SystemResult:
    """The study's runtime on the plan the scheduler finds with ``settings``, predicted."""
    from simulator.planning import Degrees, plan_job  # planning imports this module

    result = plan_job(job.cluster, job.model, job.training.global_batch,
                      [Degrees(pp=pp, dp=dp, micro_batch=job.training.micro_batch)], settings,
                      profiles=job.profiles).result
    if result.value == float("inf"):  # no placement the search saw fits in memory
        return SystemResult(iteration_s=None)
    return SystemResult(iteration_s=_seconds(job, result.placement, topology, engine), gap=result.gap,
                        placement=result.placement)


def _now_and_then(progress: Callable[[str], None] | None, every_s: float = 2.0) -> Callable[[str], None]:
    """``progress`` once ``every_s`` seconds have passed since the last word: a row of a large
    cluster (thousands of devices) takes minutes, a small one says nothing more."""
    last = time.monotonic()

    def say(text: str) -> None:
        nonlocal last
        if progress and time.monotonic() - last >= every_s:
            last = time.monotonic()
            progress(text)
    return say


def _row(job: Job, topology: Topology, megatron: dict[str, Placement], randoms: list[Placement],
         engine: str, search: SearchSettings | None, say: Callable[[str], None] = lambda _: None) -> TableRow:
    batch = job.training.global_batch
    applicable = [(name, p) for name, p in megatron.items() if batch % p.dp == 0]
    configs = {}
    for k, (name, placement) in enumerate(applicable):
        say(f"  Megatron {name} ({k + 1} of {len(applicable)} configurations)")
        configs[name] = _seconds(job, placement, topology, engine)
    systems: dict[str, SystemResult] = {}
    pp_config = megatron_pp_config(job.cluster.size)
    if pp_config in configs:
        systems["megatron_pp"] = SystemResult(iteration_s=configs[pp_config], config=pp_config,
                                              placement=megatron[pp_config])
    fitting = {name: t for name, t in configs.items() if t is not None}
    if configs:  # null when every applicable configuration is out of memory
        best = min(fitting, key=fitting.get) if fitting else None
        systems["megatron_optimal"] = SystemResult(iteration_s=fitting.get(best), config=best,
                                                   placement=megatron.get(best))
    if randoms and batch % randoms[0].dp == 0:
        say(f"  the study's runtime on {len(randoms)} random placements")
        seconds = [_seconds(job, p, topology, engine) for p in randoms]
        systems["ours_random"] = SystemResult(iteration_s=None if None in seconds else sum(seconds) / len(seconds))
        if search is not None:
            systems["ours_scheduled"] = _scheduled(job, topology, randoms[0].pp, randoms[0].dp, engine, search)
    return TableRow(layers=job.model.layers, batch=batch, systems=systems, megatron_configs=configs)


def trace_first_row(cluster: Cluster, table: PredictionTable, model_of: Callable[[int], ModelSpec],
                    profiles: tuple[Profile, ...] = ()) -> tuple:
    """Spans of a SimPy run of the first row's fastest system (the random placement of seed 0
    for ``ours_random``, which is a mean over seeds)."""
    row = table.rows[0]
    candidates = {k: v for k, v in row.systems.items() if v.iteration_s is not None}
    if not candidates:
        raise InputError("--trace: no system of the first row fits in memory")
    best = candidates[min(candidates, key=lambda k: candidates[k].iteration_s)]
    placement = best.placement or study_random_placements(cluster.size, row.layers)[0]
    job = Job(cluster=cluster, model=model_of(row.layers), training=TrainingSpec(global_batch=row.batch),
              profiles=profiles)
    _, spans = predict(job, placement, engine="simpy", record_spans=True)
    return spans


def evaluator(cluster: Cluster, model: ModelSpec, training: TrainingSpec,
              profiles: tuple[Profile, ...] = ()) -> Callable[[Placement], float]:
    """``evaluate(placement) -> seconds`` for the scheduler: the analytic estimator, infinity for
    a placement that does not fit in memory."""
    job = Job(cluster=cluster, model=model, training=training, profiles=profiles)
    topology = Topology(cluster)

    def evaluate(placement: Placement) -> float:
        prediction, _ = predict(job, placement, engine="analytic", topology=topology)
        return float("inf") if prediction is None else prediction.iteration_s

    return evaluate


def time_bound_inputs(cluster: Cluster, model: ModelSpec, training: TrainingSpec, pp: int, dp: int,
                      uneven: bool = False, profiles: tuple[Profile, ...] = ()) -> TimeBoundInputs:
    """The numbers scheduler.ilp's iteration bound needs for the study's runtime on pp × dp of
    this cluster: compute from the fastest GPU kind component by component (a layer, each
    stage's extras: embedding, head), a lower bound whichever devices run it, for the even split
    or, with ``uneven``, for any split with at least one layer a stage; per device pair its
    route's latency and the rate of a flow alone on it."""
    job, topology = Job(cluster=cluster, model=model, training=training, profiles=profiles), Topology(cluster)
    template = blocks_layout(list(range(pp * dp)), model.layers, pp, dp)
    firsts = {device.gpu: device.id for device in reversed(cluster.devices)}
    fields = _split_bounds(job, topology, template, list(firsts.values()), uneven)
    latency, rate = _lone_flows(topology, cluster.size)
    hosts = {h.name: h for h in cluster.hosts}
    host_index = {name: i for i, name in enumerate(hosts)}
    # Twins must also share what the bound reads off one of them: GPU kind, NIC and GPU port.
    labels = tuple(f"{d.gpu}|{hosts[d.host].uplink_bandwidth_bytes_per_s}|"
                   f"{hosts[d.host].interconnect_bandwidth_bytes_per_s}" for d in cluster.devices)
    return TimeBoundInputs(micro_batches=job.micro_batches(template), rounds=len(job.rounds(template)),
                           offloaded=job.offloaded(template), **fields,
                           activation_bytes=model.activation_bytes(training.micro_batch, training.precision),
                           latency_s=latency, rate_bytes_per_s=rate,
                           resources=lambda a, b: topology.route(a, b).resources,
                           capacities=tuple(topology.capacities), kinds=labels,
                           hosts=tuple(host_index[d.host] for d in cluster.devices))


def _split_bounds(job: Job, topology: Topology, template: Placement, devices: list[int], uneven: bool) -> dict:
    """Compute bounds from one device of each GPU kind: the cheapest kind's layer and, per stage,
    the cheapest kind's extras (what the stage holds beyond its layers), so a stage of any kind
    costs at least layers × layer + extras. Even split: per stage exactly that. Any split: a
    stage holds at least one layer; totals do not depend on the split; the slowest stage is no
    faster than the mean, nor than the last stage with one layer. Ceilings: the slowest kind's
    stage with the most layers it may hold."""
    pp = template.pp
    layers = [end - start for start, end in template.stage_layers]
    costs = [[worker_cost(job, topology, template, s, (d,)) for s in range(pp)] for d in devices]
    timing = [device_compute(job.cluster.devices[d].gpu, job.model, job.training, 1, job.profiles,
                             kernels=TRAITS[template.runtime].layer).layer for d in devices]
    layer_f = min(t.forward_s for t in timing)
    layer_b = min(t.backward_s + t.recompute_s for t in timing)
    extra_f = [min(c[s].forward_s - layers[s] * (t.forward_s) for c, t in zip(costs, timing)) for s in range(pp)]
    extra_b = [min(c[s].backward_s - layers[s] * (t.backward_s + t.recompute_s) for c, t in zip(costs, timing))
               for s in range(pp)]
    params = [costs[0][s].params for s in range(pp)]  # the same on every kind
    opt = [min(c[s].optimizer_s for c in costs) for s in range(pp)]
    held = layers if not uneven else [1] * pp
    least_params = [p - (n - h) * job.model.layer_params_per_shard(1) for p, n, h in zip(params, layers, held)]
    f = [h * layer_f + e for h, e in zip(held, extra_f)]
    b = [h * layer_b + e for h, e in zip(held, extra_b)]
    f_total = sum(layers) * layer_f + sum(extra_f)
    tail = [sum(layers[g:]) * layer_b + sum(extra_b[g:]) if g == 0 or not uneven else sum(b[g:]) for g in range(pp)]
    b_max = [max(b[g:]) for g in range(pp)]
    f_max = max(f)
    most = layers if not uneven else [job.model.layers - pp + 1] * pp  # the most layers a stage may hold
    f_ceiling = max(c[s].forward_s + (most[s] - layers[s]) * t.forward_s
                    for c, t in zip(costs, timing) for s in range(pp))
    b_ceiling = max(c[s].backward_s + (most[s] - layers[s]) * (t.backward_s + t.recompute_s)
                    for c, t in zip(costs, timing) for s in range(pp))
    if uneven:
        f_max = max(f_max, f_total / pp)
        b_max = [max(tail[g] / (pp - g), b[-1]) for g in range(pp)]
    grad_per_param = job.training.element_bytes
    return dict(forward_total_s=f_total, forward_period_s=f_max, backward_tail_s=tuple(tail),
                backward_period_s=tuple(b_max), forward_ceiling_s=f_ceiling, backward_ceiling_s=b_ceiling,
                optimizer_s=tuple(o * lp / p for o, lp, p in zip(opt, least_params, params)),  # SGD: linear in params
                grad_bytes=tuple(lp * grad_per_param for lp in least_params))


def _lone_flows(topology: Topology, n: int) -> tuple[np.ndarray, np.ndarray]:
    latency, rate = np.zeros((n, n)), np.full((n, n), np.inf)
    for i in range(n):
        for j in range(n):
            if i != j:
                route = topology.route(i, j)
                latency[i, j] = route.latency_s
                rate[i, j] = route_rates([route], topology.capacities)[0]
    return latency, rate
