"""`sim plan`'s work: the scheduler's search for a job on a cluster, with the simulator's
estimator as its objective, over one or several choices of degrees and micro-batch size."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from profiler.profile import Profile
from scheduler.methods import SearchSettings, plan_search
from scheduler.search import SearchResult, problem_for
from simulator.predict import evaluator, time_bound_inputs

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
             precision: str = "fp16") -> Planned:
    """Search every choice (each gets an equal share of the time limit); keep the fastest."""
    share = replace(settings, time_limit_s=settings.time_limit_s / len(options))
    best: Planned | None = None
    bounds: list[float | None] = []
    for option in options:
        if progress and len(options) > 1:
            progress(f"P{option.pp}D{option.dp}, micro-batch {option.micro_batch}")
        training = TrainingSpec(global_batch=batch, micro_batch=option.micro_batch, precision=precision)
        problem = problem_for(cluster, model, training, option.pp, option.dp, dp_bytes, pp_bytes)
        evaluate = evaluator(cluster, model, training, profiles)
        result = plan_search(problem, share, evaluate,
                             lambda uneven: time_bound_inputs(cluster, model, training, option.pp, option.dp, uneven,
                                                              profiles),
                             progress)
        bounds.append(result.bound)
        if best is None or result.value < best.result.value:
            best = Planned(result=result, training=training, predicted_iteration_s=evaluate(result.placement),
                           tried=len(options))
    bound = None if None in bounds else min(b for b in bounds if b is not None)
    if best.result.value == math.inf:
        return best
    return replace(best, result=replace(best.result, bound=bound))
