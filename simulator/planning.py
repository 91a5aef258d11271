"""The bridge to the scheduler: `sim plan`'s search for a job on a cluster, with the simulator's
estimator as its objective (``evaluator``) and its cost tables as the bound MILP's inputs
(``time_bound_inputs``), over one or several choices of degrees and micro-batch size."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from profiler.network.topology import Topology, route_rates
from profiler.profile import Profile
from scheduler.layouts import blocks_layout
from scheduler.methods import SearchSettings, plan_search
from scheduler.placement import Placement
from scheduler.runtimes import TRAITS
from scheduler.search import SearchResult, TimeBoundInputs, problem_for
from simulator.cost.compute import device_compute
from simulator.cost.job import Job, worker_cost
from simulator.plan_cache import cached_search
from simulator.predict import predict

PIPELINE_CHOICES = (1, 2, 4, 8, 16, 32)  # --pp auto: the divisors of the layers among these
MICRO_BATCH_CHOICES = (1, 2, 4)  # --micro-batch auto


@dataclass(frozen=True, slots=True, kw_only=True)
class Degrees:
    pp: int
    dp: int
    micro_batch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    result: SearchResult  # bound: over every choice tried, or None if a method proves none
    training: TrainingSpec
    predicted_iteration_s: float
    tried: int


def degree_options(devices: int, layers: int, batch: int, pp: int | None, dp: int | None,
                   micro_batch: int | None) -> list[Degrees]:
    """The choices `--pp auto` / `--micro-batch auto` try; a given degree is the only choice."""
    if pp and not dp and devices % pp:
        raise InputError(f"--pp {pp} does not divide the cluster's {devices} devices")
    if pp and micro_batch and batch % ((dp or devices // pp) * micro_batch):
        raise InputError(f"--batch {batch} does not split over {dp or devices // pp} data-parallel replicas of "
                         f"micro-batch {micro_batch}")
    pps = [pp] if pp else [p for p in PIPELINE_CHOICES if layers % p == 0 and devices % p == 0]
    micros = [micro_batch] if micro_batch else list(MICRO_BATCH_CHOICES)
    options = [Degrees(pp=p, dp=dp or devices // p, micro_batch=m) for p in pps for m in micros
               if batch % ((dp or devices // p) * m) == 0]
    if not options:
        raise InputError(f"no pipeline degree and micro-batch size split {layers} layers and batch {batch} "
                         f"over {devices} devices")
    return options


def plan_job(cluster: Cluster, model: ModelSpec, batch: int, options: list[Degrees], settings: SearchSettings,
             dp_bytes: float | None = None, pp_bytes: float | None = None,
             progress: Callable[[str], None] | None = None, profiles: tuple[Profile, ...] = (),
             precision: str = "fp16", cache: Path | None = None) -> Planned:
    """Search every choice (each gets an equal share of the time limit); keep the fastest. With
    ``cache`` (a folder: simulator.plan_cache), a choice searched before answers from there."""
    share = replace(settings, time_limit_s=settings.time_limit_s / len(options))
    best: Planned | None = None
    bounds: list[float | None] = []
    for option in options:
        if progress and len(options) > 1:
            progress(f"P{option.pp}D{option.dp}, micro-batch {option.micro_batch}")
        training = TrainingSpec(global_batch=batch, micro_batch=option.micro_batch, precision=precision)
        problem = problem_for(cluster, model, training, option.pp, option.dp, dp_bytes, pp_bytes)
        evaluate = evaluator(cluster, model, training, profiles)
        job = {"cluster": cluster.to_json(), "model": model.to_json(), "training": training.to_json(),
               "profiles": [p.to_json() for p in profiles], "pp": option.pp, "dp": option.dp,
               "dp_bytes": dp_bytes, "pp_bytes": pp_bytes}
        result = cached_search(
            cache, job, share,
            lambda chosen: plan_search(problem, chosen, evaluate,
                                       lambda uneven: time_bound_inputs(cluster, model, training, option.pp, option.dp,
                                                                        uneven, profiles),
                                       progress), progress)
        bounds.append(result.bound)
        if best is None or result.value < best.result.value:
            best = Planned(result=result, training=training, predicted_iteration_s=evaluate(result.placement),
                           tried=len(options))
    bound = None if None in bounds else min(b for b in bounds if b is not None)
    if best.result.value == math.inf:
        return best
    return replace(best, result=replace(best.result, bound=bound))


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
