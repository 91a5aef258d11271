"""The study's table: every system and Megatron configuration of a cluster, one row per setting
(layers, global batch), each predicted; "Ours w/ scheduler" is the study's runtime on the plan
the scheduler finds (simulator.planning)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from profiler.network.topology import Topology
from profiler.profile import Profile
from scheduler.methods import SearchSettings
from scheduler.placement import Placement
from simulator.cost.job import Job
from simulator.planning import Degrees, plan_job
from simulator.predict import predict
from simulator.prediction import PredictionTable, SystemResult, TableRow
from simulator.study.systems import (
    STUDY_PIPELINE,
    megatron_configs,
    megatron_placements,
    study_random_placements,
    study_runtime_fits,
)


def megatron_pp_config(device_count: int) -> str | None:
    """docs/facts.md §4: Megatron-PP = P8T1 on the default layout (P8T1D8 on 64 devices)."""
    return f"P8T1D{device_count // 8}" if device_count % 8 == 0 else None


def predict_table(cluster: Cluster, case: str, model_of: Callable[[int], ModelSpec], layers: list[int],
                  batches: list[int], *, engine: str = "analytic", search: SearchSettings | None = None,
                  profiles: tuple[Profile, ...] = (), progress: Callable[[str], None] | None = None,
                  precision: str = "fp16", cache: Path | None = None) -> PredictionTable:
    """The study's table: one row per (layers, batch), every system and Megatron configuration.
    A Megatron configuration whose data-parallel degree does not divide the batch is left out of
    its row; ``ours_random`` is there when the cluster can hold the study's 8-stage runtime, and
    with ``search`` ``ours_scheduled`` too: that runtime on the plan the scheduler finds with
    these settings (``scheduler_settings``: those of `sim plan`), through ``cache`` if given
    (simulator.plan_cache). ``profiles`` replace the datasheet model of the device kinds they
    measured."""
    for n_layers in layers:
        for batch in batches:
            check_setting(cluster.size, n_layers, batch, model_of(n_layers))
    topology = Topology(cluster)
    rows = []
    for n_layers in layers:
        model = model_of(n_layers)
        megatron = megatron_placements(cluster.size, n_layers, model)
        randoms = study_random_placements(cluster.size, n_layers) if study_runtime_fits(cluster.size, n_layers) else []
        for batch in batches:
            if progress:
                progress(f"{case}: {n_layers} layers, batch {batch}")
            job = Job(cluster=cluster, model=model, training=TrainingSpec(global_batch=batch, precision=precision),
                      profiles=profiles)
            rows.append(_row(job, topology, megatron, randoms, engine, search, _now_and_then(progress), cache))
            search = _hinted(search, rows[-1].systems.get("ours_scheduled"))
    return PredictionTable(case=case, engine=engine, rows=tuple(rows))


def _hinted(search: SearchSettings | None, scheduled: SystemResult | None) -> SearchSettings | None:
    """The next row's search starts from this row's plan too: the rows share the cluster and the
    degrees, and the best placement seldom changes from one batch or layer count to the next."""
    if search is None or scheduled is None or scheduled.placement is None:
        return search
    grid = tuple(tuple(group[0] for group in replicas) for replicas in scheduled.placement.devices)
    return replace(search, hints=(grid,))


def check_setting(device_count: int, n_layers: int, batch: int, model: ModelSpec | None = None) -> None:
    """InputError unless some system of the table applies to the setting: a Megatron
    configuration or the study's runtime that holds the layers, with a data-parallel degree that
    divides the batch."""
    megatron = megatron_configs(device_count, n_layers, model)
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


def _scheduled(job: Job, topology: Topology, pp: int, dp: int, engine: str, settings: SearchSettings,
               cache: Path | None = None) -> SystemResult:
    """The study's runtime on the plan the scheduler finds with ``settings``, predicted."""
    result = plan_job(job.cluster, job.model, job.training.global_batch,
                      [Degrees(pp=pp, dp=dp, micro_batch=job.training.micro_batch)], settings,
                      profiles=job.profiles, precision=job.training.precision, cache=cache).result
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
         engine: str, search: SearchSettings | None, say: Callable[[str], None] = lambda _: None,
         cache: Path | None = None) -> TableRow:
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
            systems["ours_scheduled"] = _scheduled(job, topology, randoms[0].pp, randoms[0].dp, engine, search, cache)
    return TableRow(layers=job.model.layers, batch=batch, systems=systems, megatron_configs=configs)


def trace_first_row(cluster: Cluster, table: PredictionTable, model_of: Callable[[int], ModelSpec],
                    profiles: tuple[Profile, ...] = (), precision: str = "fp16") -> tuple:
    """Spans of a SimPy run of the first row's fastest system (the random placement of seed 0
    for ``ours_random``, which is a mean over seeds)."""
    row = table.rows[0]
    candidates = {k: v for k, v in row.systems.items() if v.iteration_s is not None}
    if not candidates:
        raise InputError("--trace: no system of the first row fits in memory")
    best = candidates[min(candidates, key=lambda k: candidates[k].iteration_s)]
    placement = best.placement or study_random_placements(cluster.size, row.layers)[0]
    job = Job(cluster=cluster, model=model_of(row.layers),
              training=TrainingSpec(global_batch=row.batch, precision=precision), profiles=profiles)
    _, spans = predict(job, placement, engine="simpy", record_spans=True)
    return spans
