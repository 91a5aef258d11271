"""The time objective's MILP bound never exceeds the estimator on any placement (checked over
every placement of small clusters), and the ilp method's plan is deterministic and no worse
than its candidates or random search."""

from __future__ import annotations

import dataclasses
from itertools import permutations, product

import pytest

from profiler.cluster import Cluster, Device, Host, Interconnect, Link
from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import geo, spot
from scheduler.ilp import time_bound
from scheduler.methods import SearchSettings, plan_search
from scheduler.search import Problem, problem_for, random_search
from scheduler.time_search import stage_placement
from simulator.predict import evaluator, time_bound_inputs

TRAINING = TrainingSpec(global_batch=8)


def two_regions():
    return geo("two", {"near": 2, "far": 2}, (1, 5), {("near", "far"): (40, 0.3)})


def three_regions():
    return geo("three", {"a": 2, "b": 2, "c": 2}, (2, 4),
               {("a", "b"): (20, 1.0), ("a", "c"): (80, 0.4), ("b", "c"): (30, 0.7)})


def every_placement(problem: Problem):
    """Every assignment of devices to (stage, replica) slots, with every server choice."""
    for order in permutations(range(problem.device_count)):
        grid = [list(order[s * problem.dp:(s + 1) * problem.dp]) for s in range(problem.pp)]
        for servers in product(range(problem.dp), repeat=problem.pp):
            yield stage_placement(problem, grid, list(servers))


def problem_of(cluster, pp: int, dp: int, layers: int) -> Problem:
    return problem_for(cluster, gpt3_xl(layers), TRAINING, pp, dp)


@pytest.mark.parametrize("make,pp,dp", [(two_regions, 2, 2), (two_regions, 4, 1), (two_regions, 1, 4)])
def test_the_bound_is_below_every_placement(make, pp, dp):
    cluster = make()
    layers = 4
    problem = problem_of(cluster, pp, dp, layers)
    inputs = time_bound_inputs(cluster, gpt3_xl(layers), TRAINING, pp, dp)
    bound = time_bound(inputs, pp, dp, time_limit_s=30, gap=0.0)
    evaluate = evaluator(cluster, gpt3_xl(layers), TRAINING)
    best = min(evaluate(p) for p in every_placement(problem))
    assert bound.optimal
    assert 0 < bound.bound <= best * (1 + 1e-9)


def test_the_bound_is_below_every_placement_of_three_regions():
    cluster, pp, dp = three_regions(), 3, 2
    problem = problem_of(cluster, pp, dp, 3)
    inputs = time_bound_inputs(cluster, gpt3_xl(3), TRAINING, pp, dp)
    bound = time_bound(inputs, pp, dp, time_limit_s=30, gap=0.0)
    evaluate = evaluator(cluster, gpt3_xl(3), TRAINING)
    seen = [evaluate(p) for p in every_placement(problem)]
    assert bound.bound <= min(seen) * (1 + 1e-9)


def search(cluster, pp: int, dp: int, layers: int, seed: int = 0, limit: float = 20.0):
    problem = problem_of(cluster, pp, dp, layers)
    evaluate = evaluator(cluster, gpt3_xl(layers), TRAINING)
    settings = SearchSettings(method="ilp", objective="time", time_limit_s=limit, seed=seed, max_evaluations=60)
    return problem, evaluate, plan_search(problem, settings, evaluate,
                                          lambda uneven: time_bound_inputs(cluster, gpt3_xl(layers), TRAINING, pp, dp, uneven))


def test_the_ilp_plan_is_deterministic_bounded_and_beats_random():
    problem, evaluate, first = search(three_regions(), 3, 2, 3)
    _, _, again = search(three_regions(), 3, 2, 3)
    assert first.placement == again.placement and first.value == again.value
    assert first.value == pytest.approx(evaluate(first.placement))
    assert first.bound <= first.value
    for seed in range(3):
        assert first.value <= random_search(problem, "time", evaluate, samples=20, seed=seed).value


def test_spot_plan_spreads_parameter_servers_over_hosts():
    """Spot's p3.8xlarge hosts hold 4 GPUs behind one 10 Gbit/s NIC: stages whose servers share a
    host share its NIC, so the plan records a server per stage (Placement.ps_servers)."""
    cluster = spot()
    _, evaluate, result = search(cluster, 8, 8, 24, limit=20)
    placement = result.placement
    assert len(placement.ps_servers) == 8
    hosts = [cluster.devices[placement.devices[s][placement.server_of(s)][0]].host for s in range(8)]
    assert len(set(hosts)) == 8
    assert result.bound <= result.value


def mixed(kinds: dict[str, list[str]], links: dict[tuple[str, str], tuple[float, float]]):
    """One single-GPU host per device, ``kinds[region]`` its GPUs; links as (ms, Gbit/s), the
    first pair of a region with itself the link inside it."""
    hosts, devices = [], []
    for region, gpus in kinds.items():
        for i, gpu in enumerate(gpus):
            name = f"{region}-{i}"
            hosts.append(Host(name=name, region=region, interconnect=Interconnect.PCIE,
                              interconnect_bandwidth_bytes_per_s=16e9, interconnect_latency_s=1e-5,
                              uplink_bandwidth_bytes_per_s=1.25e9))
            devices.append(Device(id=len(devices), gpu=gpu, host=name))
    return Cluster(name="mixed", devices=tuple(devices), hosts=tuple(hosts),
                   links=tuple(Link(a=a, b=b, latency_s=ms * 1e-3, bandwidth_bytes_per_s=gbit * 1.25e8)
                               for (a, b), (ms, gbit) in links.items()))


def test_the_uneven_bound_is_below_every_split_of_a_mixed_cluster():
    cluster = mixed({"east": ["V100-SXM2-16GB", "A100-80GB"], "west": ["RTX-4090", "A100-80GB"]},
                    {("east", "east"): (1, 10), ("west", "west"): (1, 10), ("east", "west"): (30, 1)})
    pp, dp, layers = 2, 2, 4
    problem = problem_of(cluster, pp, dp, layers)
    model = gpt3_xl(layers)
    even = time_bound(time_bound_inputs(cluster, model, TRAINING, pp, dp), pp, dp, time_limit_s=30, gap=0.0)
    uneven = time_bound(time_bound_inputs(cluster, model, TRAINING, pp, dp, uneven=True), pp, dp,
                        time_limit_s=30, gap=0.0)
    evaluate = evaluator(cluster, model, TRAINING)
    best = {split: min(evaluate(dataclasses.replace(p, stage_layers=((0, split), (split, layers))))
                       for p in every_placement(problem)) for split in (1, 2, 3)}
    assert uneven.bound <= min(best.values()) * (1 + 1e-9)
    assert even.bound <= best[2] * (1 + 1e-9)
    assert uneven.bound <= even.bound + 1e-12


def test_mixed_gpus_get_an_uneven_split_that_beats_the_even_one():
    from pathlib import Path

    from profiler.cluster import load_cluster

    cluster = load_cluster(Path(__file__).resolve().parents[2] / "examples" / "mixed-gpus-cluster.json")
    layers, batch = 40, TrainingSpec(global_batch=1024)
    problem = problem_of(cluster, 8, 8, layers)
    evaluate = evaluator(cluster, gpt3_xl(layers), batch)
    settings = SearchSettings(time_limit_s=15, uneven=True, max_evaluations=100)
    result = plan_search(problem, settings, evaluate,
                         lambda uneven: time_bound_inputs(cluster, gpt3_xl(layers), batch, 8, 8, uneven))
    counts = [end - start for start, end in result.placement.stage_layers]
    even = dataclasses.replace(result.placement, stage_layers=tuple((5 * s, 5 * s + 5) for s in range(8)))
    assert sum(counts) == layers and len(set(counts)) > 1
    assert result.value == pytest.approx(evaluate(result.placement))
    assert result.value < evaluate(even) and result.bound <= result.value


def test_evolutionary_method_through_plan_search():
    problem = problem_of(three_regions(), 3, 2, 3)
    settings = SearchSettings(method="evolutionary", objective="comm", population=6, offspring=20, seed=2)
    first, again = plan_search(problem, settings, None), plan_search(problem, settings, None)
    assert first.placement == again.placement and first.bound is None


def test_the_search_goes_on_when_the_bound_finds_no_placement(monkeypatch):
    """A bound MILP stopped before any placement still bounds; the structured candidates and the
    local search give the plan."""
    import scheduler.ilp

    monkeypatch.setattr(scheduler.ilp, "solve", lambda *args, **kwargs: (False, 0.0))
    problem, evaluate, result = search(three_regions(), 3, 2, 3)
    assert result.bound == 0.0 and result.value == pytest.approx(evaluate(result.placement))


def test_twins_for_the_bound_share_their_nic():
    """Two hosts whose flows are capped by the same link look alike in latency and lone rate,
    but the bound reads the server's NIC off one of them: different NICs, different classes."""
    from scheduler.classes import device_classes

    cluster = mixed({"a": ["V100-SXM2-16GB"] * 3, "b": ["V100-SXM2-16GB"] * 3},
                    {("a", "a"): (50, 0.5), ("b", "b"): (50, 0.5), ("a", "b"): (80, 0.4)})
    hosts = tuple(dataclasses.replace(h, uplink_bandwidth_bytes_per_s=1.25e10) if h.name == "a-0" else h
                  for h in cluster.hosts)
    cluster = dataclasses.replace(cluster, hosts=hosts)
    inputs = time_bound_inputs(cluster, gpt3_xl(2), TrainingSpec(global_batch=6), 2, 3)
    assert inputs.rate_bytes_per_s[0, 1] == pytest.approx(inputs.rate_bytes_per_s[2, 1])  # the link caps both
    assert device_classes(inputs.tables, inputs.kinds).members == ((0,), (1, 2), (3, 4, 5))
