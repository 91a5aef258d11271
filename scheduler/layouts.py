"""Placements that need no search: Megatron's default rank layout and random assignments."""

from __future__ import annotations

import random

from profiler.errors import InputError
from scheduler.placement import Placement, Runtime, Schedule, Sync, even_layers


def megatron_layout(device_count: int, layers: int, pp: int, tp: int) -> Placement:
    """Megatron-LM's default rank order over the device list (docs/facts.md §4): tensor-parallel
    ranks consecutive, then data-parallel, pipeline outermost: rank = pp·(T·D) + dp·T + tp."""
    if pp * tp == 0 or device_count % (pp * tp):
        raise InputError(f"{device_count} devices do not divide into pipeline {pp} × tensor {tp}")
    dp = device_count // (pp * tp)
    devices = tuple(tuple(tuple(s * tp * dp + r * tp + t for t in range(tp)) for r in range(dp))
                    for s in range(pp))
    return Placement(pp=pp, dp=dp, tp=tp, stage_layers=even_layers(layers, pp), devices=devices,
                     schedule=Schedule.ONE_F_ONE_B, sync=Sync.RING, runtime=Runtime.MEGATRON)


def blocks_layout(order: list[int] | tuple[int, ...], layers: int, pp: int, dp: int) -> Placement:
    """The study's encoding (docs/facts.md §5): a device permutation cut into consecutive blocks of
    D_DP devices, block k = the replicas of stage k; replica r of every stage forms pipeline r."""
    if len(order) != pp * dp:
        raise InputError(f"{len(order)} devices do not make pipeline {pp} × data {dp}")
    devices = tuple(tuple((order[s * dp + r],) for r in range(dp)) for s in range(pp))
    return Placement(pp=pp, dp=dp, tp=1, stage_layers=even_layers(layers, pp), devices=devices,
                     schedule=Schedule.GPIPE, sync=Sync.PS, runtime=Runtime.DECENTRALIZED)


def random_layout(device_count: int, layers: int, pp: int, dp: int, seed: int) -> Placement:
    """The study's runtime "without scheduler": a random device-to-slot assignment."""
    order = list(range(device_count))
    random.Random(seed).shuffle(order)
    return blocks_layout(order, layers, pp, dp)
