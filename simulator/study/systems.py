"""The systems the study compared (docs/facts.md §4), as placements on a cluster."""

from __future__ import annotations

from profiler.errors import InputError
from profiler.model import ModelSpec
from scheduler.layouts import megatron_layout, random_layout
from scheduler.placement import Placement

MAX_TENSOR_PARALLEL = 8  # docs/facts.md §4: T ≤ 8, one NVLink island
STUDY_PIPELINE = 8  # the study's runtime: pipeline 8 × data 8 (docs/facts.md §4)
RANDOM_SEEDS = (0, 1, 2)  # "without scheduler": the mean over 3 random seeds (docs/facts.md §4)
# The Megatron configurations the study ran (docs/facts.md §4), as (P, T): its "Megatron-Optimal" is the
# fastest of these four, where ours is the fastest of every configuration that fits.
STUDY_MEGATRON_CONFIGS = ((8, 1), (1, 8), (4, 2), (2, 4))


def megatron_configs(device_count: int, layers: int, model: ModelSpec | None = None) -> list[tuple[int, int]]:
    """Every (P, T) with T ≤ 8, layers divisible by P and P·T dividing the devices, and T
    splitting ``model``'s heads, key-value heads, FFN and vocabulary where one is given."""
    configs = []
    for pp in range(1, layers + 1):
        if layers % pp:
            continue
        for tp in (1, 2, 4, 8):
            if tp <= MAX_TENSOR_PARALLEL and device_count % (pp * tp) == 0 and (model is None or model.shards(tp)):
                configs.append((pp, tp))
    return configs


def megatron_placements(device_count: int, layers: int, model: ModelSpec | None = None) -> dict[str, Placement]:
    out = {}
    for pp, tp in megatron_configs(device_count, layers, model):
        placement = megatron_layout(device_count, layers, pp, tp)
        out[placement.config] = placement
    return out


def study_runtime_fits(device_count: int, layers: int) -> bool:
    return device_count % STUDY_PIPELINE == 0 and layers % STUDY_PIPELINE == 0


def study_random_placements(device_count: int, layers: int) -> list[Placement]:
    """The study's runtime on random assignments, one per seed; pipeline degree 8 needs the
    devices to be a multiple of 8 and the layers to divide over 8 stages."""
    if device_count % STUDY_PIPELINE:
        raise InputError(f"the study's runtime needs a multiple of {STUDY_PIPELINE} devices, got {device_count}")
    dp = device_count // STUDY_PIPELINE
    return [random_layout(device_count, layers, STUDY_PIPELINE, dp, seed) for seed in RANDOM_SEEDS]
