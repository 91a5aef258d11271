"""Searches over placements of the study's runtime: devices into pipeline stages × replicas.

A candidate is a device permutation cut into consecutive blocks of D_DP devices, block k being
the replicas of stage k (the study's encoding, docs/facts.md §5). Two objectives:
- ``comm``: the study's cost model (scheduler.comm_cost); the plan's pipelines follow the
  cheapest stage order and bottleneck matchings that the cost assumes;
- ``time``: seconds per iteration from an ``evaluate(placement)`` callable the caller passes
  (the simulator's estimator): the scheduler does not import the simulator.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from scheduler.comm_cost import CommTables, comm_objective, comm_tables, pipelines_of
from scheduler.layouts import blocks_layout
from scheduler.placement import STUDY_GRAD_BYTES_PER_PARAM, Placement


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    device_count: int
    layers: int
    pp: int
    dp: int
    tables: CommTables
    dp_bytes: float  # c_dp: gradient bytes a device holds
    pp_bytes: float  # c_pp: activation bytes crossing one boundary per iteration for one pipeline

    def __post_init__(self) -> None:
        if self.pp * self.dp != self.device_count:
            raise InputError(f"--pp {self.pp} × --dp {self.dp} = {self.pp * self.dp}, the cluster has "
                             f"{self.device_count} devices")
        if self.layers % self.pp:
            raise InputError(f"{self.layers} layers do not divide into --pp {self.pp} stages")
        if not (self.dp_bytes > 0 and self.pp_bytes > 0):
            raise InputError("--dp-bytes and --pp-bytes must be positive")


def derived_bytes(model: ModelSpec, training: TrainingSpec, pp: int, dp: int) -> tuple[float, float]:
    """(c_dp, c_pp) from the model: a stage's share of the parameters at 4 B of gradient each,
    and one micro-batch's activation times the micro-batches a pipeline runs per iteration."""
    dp_bytes = model.total_params / pp * STUDY_GRAD_BYTES_PER_PARAM
    micro_batches = training.global_batch // dp // training.micro_batch
    return dp_bytes, float(model.activation_bytes(training.micro_batch, training.precision) * micro_batches)


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    placement: Placement
    value: float
    solver_s: float
    evaluated: int
    bound: float | None = None  # proven: no placement of these degrees does better (exact methods)

    @property
    def gap(self) -> float | None:
        return None if self.bound is None else relative_gap(self.value, self.bound)


def relative_gap(value: float, bound: float) -> float:
    """(found - proven bound) / found: how far a plan may be from the best."""
    return max(0.0, (value - bound) / value) if value > 0 else 0.0


def problem_for(cluster: Cluster, model: ModelSpec, training: TrainingSpec, pp: int, dp: int,
                dp_bytes: float | None = None, pp_bytes: float | None = None) -> Problem:
    """The scheduler's numbers for a job on a cluster; c_dp and c_pp derived from the model unless given."""
    derived = derived_bytes(model, training, pp, dp)
    return Problem(device_count=cluster.size, layers=model.layers, pp=pp, dp=dp, tables=comm_tables(cluster),
                   dp_bytes=dp_bytes or derived[0], pp_bytes=pp_bytes or derived[1])


def placement_of(problem: Problem, groups: list[list[int]]) -> Placement:
    """The study's runtime on these stage groups, pipelines chained as the comm cost assumes."""
    stages = pipelines_of(groups, problem.tables, problem.pp_bytes)
    return blocks_layout([d for stage in stages for d in stage], problem.layers, problem.pp, problem.dp)


def random_search(problem: Problem, objective: str, evaluate: Callable[[Placement], float] | None,
                  samples: int, seed: int, progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """Best of ``samples`` random permutations (docs/facts.md §5's "random" baseline); ties keep the
    earlier sample, so a seed gives one answer."""
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if objective == "time" and evaluate is None:
        raise ValueError("the time objective needs an evaluate callable")
    rng = random.Random(seed)
    started = time.perf_counter()
    best: tuple[float, list[int]] | None = None
    order = list(range(problem.device_count))
    for k in range(samples):
        rng.shuffle(order)
        if objective == "comm":
            groups = [order[s * problem.dp:(s + 1) * problem.dp] for s in range(problem.pp)]
            value = comm_objective(groups, problem.tables, problem.dp_bytes, problem.pp_bytes)
        else:
            value = evaluate(blocks_layout(order, problem.layers, problem.pp, problem.dp))
        if best is None or value < best[0]:
            best = (value, list(order))
        if progress:
            progress(k + 1, best[0])
    value, order = best
    if objective == "comm":
        placement = placement_of(problem, [order[s * problem.dp:(s + 1) * problem.dp] for s in range(problem.pp)])
    else:
        placement = blocks_layout(order, problem.layers, problem.pp, problem.dp)
    return SearchResult(placement=placement, value=value, solver_s=time.perf_counter() - started, evaluated=samples)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeBoundInputs:
    """What bounds the study runtime's iteration (GPipe, parameter-server sync) from below,
    as plain numbers the simulator supplies (see scheduler.ilp.time_bound_model). Compute is one
    micro-batch on the fastest GPU kind, each figure a lower bound over the layer splits the
    search may use: all forward stages together, the slowest stage's forward, and per stage g
    the backward of stages g..P-1 together and their slowest; per stage its optimizer step and
    gradient bytes. Per device pair: the route latency and the rate a lone flow gets (contention
    only lowers it); each device's host; the network's resources: ``resources(src, dst)`` are the
    ones a flow crosses, ``capacities[x]`` in bytes/s, which flows crossing x share."""

    micro_batches: int
    rounds: int  # the gradient-accumulation rounds the micro-batches run in (each a fill and a drain)
    offloaded: bool  # the optimizer step runs on the host, beside the sync
    forward_total_s: float
    forward_period_s: float
    backward_tail_s: tuple[float, ...]
    backward_period_s: tuple[float, ...]
    forward_ceiling_s: float  # no stage's forward takes longer, on any kind, for any split the search may use
    backward_ceiling_s: float  # the same for its backward (with recompute)
    optimizer_s: tuple[float, ...]
    grad_bytes: tuple[float, ...]
    activation_bytes: float
    latency_s: np.ndarray
    rate_bytes_per_s: np.ndarray
    resources: Callable[[int, int], tuple[int, ...]]
    capacities: tuple[float, ...]
    kinds: tuple[str, ...]  # each device's GPU kind: devices of two kinds are never twins
    hosts: tuple[int, ...]  # each device's host: the GPUs of a host share its NIC

    @property
    def tables(self) -> CommTables:
        return CommTables(latency_s=self.latency_s, bandwidth_bytes_per_s=self.rate_bytes_per_s)
