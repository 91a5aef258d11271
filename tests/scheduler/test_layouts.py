"""Megatron's default rank layout, random layouts, and Placement's own checks and JSON form."""

from __future__ import annotations

import json

import pytest

from profiler.errors import InputError
from scheduler.layouts import blocks_layout, megatron_layout, random_layout
from scheduler.placement import Placement, Runtime, Schedule, Sync, even_layers


def pipeline(placement: Placement, replica: int) -> list[tuple[int, ...]]:
    return [placement.devices[s][replica] for s in range(placement.pp)]


def all_devices(placement: Placement) -> list[int]:
    return sorted(d for stage in placement.devices for group in stage for d in group)


@pytest.mark.parametrize(("pp", "tp"), [(1, 1), (1, 8), (2, 4), (4, 2), (8, 1), (8, 8), (2, 1)])
def test_megatron_rank_formula(pp: int, tp: int) -> None:
    """rank = pp·(T·D) + dp·T + tp (docs/facts.md §4)."""
    placement = megatron_layout(64, 24, pp, tp)
    dp = 64 // (pp * tp)
    assert (placement.pp, placement.tp, placement.dp) == (pp, tp, dp)
    for s in range(pp):
        for r in range(dp):
            assert placement.devices[s][r] == tuple(s * tp * dp + r * tp + t for t in range(tp))
    assert all_devices(placement) == list(range(64))


def test_p8t1_pipeline_takes_one_gpu_from_each_block_of_8() -> None:
    placement = megatron_layout(64, 24, 8, 1)
    assert placement.config == "P8T1D8"
    for r in range(8):
        assert pipeline(placement, r) == [(8 * s + r,) for s in range(8)]
    assert pipeline(placement, 3) == [(3,), (11,), (19,), (27,), (35,), (43,), (51,), (59,)]
    # a stage's data-parallel replicas are one block of 8
    assert [g[0] for g in placement.devices[2]] == list(range(16, 24))


def test_p2t4() -> None:
    placement = megatron_layout(64, 24, 2, 4)
    assert placement.config == "P2T4D8"
    assert placement.devices[1][1] == (36, 37, 38, 39)
    assert placement.devices[0][0] == (0, 1, 2, 3)
    assert placement.devices[1][0] == (32, 33, 34, 35)
    assert placement.stage_layers == ((0, 12), (12, 24))


def test_p1t8() -> None:
    placement = megatron_layout(64, 24, 1, 8)
    assert placement.config == "P1T8D8"
    assert placement.devices == (tuple(tuple(range(8 * r, 8 * r + 8)) for r in range(8)),)
    assert placement.stage_layers == ((0, 24),)


def test_megatron_runs_1f1b_ring() -> None:
    placement = megatron_layout(64, 24, 4, 2)
    assert (placement.schedule, placement.sync, placement.runtime) == (
        Schedule.ONE_F_ONE_B, Sync.RING, Runtime.MEGATRON)


@pytest.mark.parametrize(("devices", "pp", "tp"), [(64, 3, 1), (64, 8, 16), (10, 4, 1), (64, 0, 1)])
def test_megatron_degrees_must_divide_devices(devices: int, pp: int, tp: int) -> None:
    with pytest.raises(InputError):
        megatron_layout(devices, 24, pp, tp)


def test_megatron_layers_must_divide() -> None:
    with pytest.raises(InputError, match="25 layers"):
        megatron_layout(64, 25, 8, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 17])
def test_random_layout_is_a_permutation(seed: int) -> None:
    placement = random_layout(64, 24, 8, 8, seed)
    assert all_devices(placement) == list(range(64))
    assert (placement.pp, placement.dp, placement.tp) == (8, 8, 1)
    assert (placement.schedule, placement.sync, placement.runtime) == (Schedule.GPIPE, Sync.PS, Runtime.DECENTRALIZED)


def test_random_layout_is_deterministic_per_seed() -> None:
    assert random_layout(64, 24, 8, 8, 5) == random_layout(64, 24, 8, 8, 5)


def test_random_layouts_differ_across_seeds() -> None:
    layouts = {random_layout(64, 24, 8, 8, seed).devices for seed in range(5)}
    assert len(layouts) == 5
    assert random_layout(64, 24, 8, 8, 0).devices != megatron_layout(64, 24, 8, 1).devices


def test_blocks_layout_cuts_consecutive_blocks() -> None:
    order = list(reversed(range(16)))
    placement = blocks_layout(order, 8, 4, 4)
    assert placement.devices[0] == ((15,), (14,), (13,), (12,))
    assert pipeline(placement, 1) == [(14,), (10,), (6,), (2,)]
    with pytest.raises(InputError):
        blocks_layout(order[:15], 8, 4, 4)


def test_even_layers() -> None:
    assert even_layers(24, 8) == tuple((3 * i, 3 * i + 3) for i in range(8))
    assert even_layers(32, 8)[-1] == (28, 32)
    assert even_layers(40, 8)[0] == (0, 5)
    assert even_layers(7, 1) == ((0, 7),)


@pytest.mark.parametrize(("layers", "pp"), [(7, 8), (25, 8), (24, 5), (3, 4)])
def test_even_layers_rejects_non_divisible(layers: int, pp: int) -> None:
    with pytest.raises(InputError, match=f"{layers} layers"):
        even_layers(layers, pp)


# -- Placement validation ----------------------------------------------------------------------
def make(**changes) -> Placement:
    fields = dict(pp=2, dp=2, tp=1, stage_layers=((0, 2), (2, 4)),
                  devices=(((0,), (1,)), ((2,), (3,))),
                  schedule=Schedule.GPIPE, sync=Sync.PS, runtime=Runtime.DECENTRALIZED)
    return Placement(**(fields | changes))


def test_valid_placement() -> None:
    placement = make()
    assert placement.layers == 4 and placement.device_count == 4 and placement.config == "P2T1D2"
    placement.check_layers(4)
    with pytest.raises(InputError, match="4 layers"):
        placement.check_layers(5)


@pytest.mark.parametrize(("changes", "words"), [
    (dict(devices=(((0,), (1,)), ((2,), (1,)))), "device 1 is used twice"),
    (dict(devices=(((0,), (1,)), ((2,),))), "stage 1 has 1 replicas"),
    (dict(devices=(((0,), (1,), (4,)), ((2,), (3,)))), "stage 0 has 3 replicas"),
    (dict(devices=(((0, 5), (1,)), ((2,), (3,)))), "expected tp=1"),
    (dict(stage_layers=((0, 2), (3, 4))), "does not continue"),
    (dict(stage_layers=((1, 2), (2, 4))), "does not continue"),
    (dict(stage_layers=((0, 2), (2, 2))), r"\[2, 2\)"),
    (dict(stage_layers=((0, 4),)), "expected pp=2"),
    (dict(devices=(((0,), (1,)),)), "expected pp=2"),
    (dict(dp=0), "positive"),
])
def test_placement_rejects(changes: dict, words: str) -> None:
    with pytest.raises(InputError, match=words):
        make(**changes)


@pytest.mark.parametrize("placement", [
    megatron_layout(64, 24, 2, 4), megatron_layout(64, 40, 8, 1), random_layout(64, 32, 8, 8, 1), make()],
    ids=["P2T4", "P8T1", "random", "small"])
def test_placement_json_round_trip(placement: Placement) -> None:
    assert Placement.from_json(placement.to_json()) == placement
    assert Placement.from_json(json.loads(json.dumps(placement.to_json()))) == placement
