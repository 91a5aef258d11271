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
from scheduler.time_bound import time_bound
from scheduler.methods import SearchSettings, plan_search
from scheduler.search import Problem, problem_for, random_search
from scheduler.time_search import stage_placement
from simulator.planning import evaluator, time_bound_inputs

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


def shared_nic(big: int, singles: int):
    """A host of ``big`` NVLink GPUs behind one 10 Gbit/s NIC, beside single-GPU hosts (spot, small)."""
    def host(name: str) -> Host:
        return Host(name=name, region="dc", interconnect=Interconnect.NVLINK, interconnect_bandwidth_bytes_per_s=5e10,
                    interconnect_latency_s=5e-6, uplink_bandwidth_bytes_per_s=1.25e9)
    names = ["big"] * big + [f"one-{i}" for i in range(singles)]
    return Cluster(name="shared-nic", devices=tuple(Device(id=i, gpu="V100-SXM2-16GB", host=n) for i, n in enumerate(names)),
                   hosts=tuple(host(n) for n in dict.fromkeys(names)),
                   links=(Link(a="dc", b="dc", latency_s=1e-4, bandwidth_bytes_per_s=1.25e9),))


def far_regions():
    return geo("far", {"a": 2, "b": 2, "c": 2}, (10, 2),
               {("a", "b"): (143, 0.524), ("a", "c"): (67, 0.79), ("b", "c"): (34, 1.1)})


def fastest_by_pattern(placements, cls: dict[int, int], evaluate) -> dict:
    """The fastest estimate of each pattern: (each stage's sorted classes, each stage's server class)."""
    best: dict = {}
    for placement in placements:
        grid = [[replica[0] for replica in stage] for stage in placement.devices]
        key = (tuple(tuple(sorted(cls[d] for d in row)) for row in grid),
               tuple(cls[row[placement.server_of(s)]] for s, row in enumerate(grid)))
        best[key] = min(best.get(key, float("inf")), evaluate(placement))
    return best


def pattern_model(inputs, pp: int, dp: int, classes, counts, server_classes):
    """The bound MILP with each stage's class counts and server class fixed."""
    from scheduler.time_bound import time_bound_model

    built, servers = time_bound_model(inputs, pp, dp, classes)
    for g, row in enumerate(counts):
        for r in range(len(classes)):
            built.count[g, r].lowBound = built.count[g, r].upBound = row.count(r)
            servers[g][r].lowBound = servers[g][r].upBound = int(server_classes[g] == r and dp > 1)
    return built.model


@pytest.mark.parametrize("make,pp,dp,batch", [
    (lambda: shared_nic(2, 2), 2, 2, 64), (lambda: shared_nic(3, 3), 3, 2, 64), (lambda: shared_nic(3, 3), 2, 3, 96),
    (two_regions, 4, 1, 8), (three_regions, 3, 2, 8), (far_regions, 3, 2, 64), (far_regions, 2, 3, 96),
    (lambda: geo("two", {"o": 3, "v": 3}, (1, 5), {("o", "v"): (11, 1.12)}), 3, 2, 128)])
def test_the_bound_with_counts_and_servers_fixed_is_below_their_every_placement(make, pp, dp, batch):
    """Sharper than the minimum: fix how many devices of each class every stage holds and each
    stage's server class, and the bound MILP still stays under the estimator of every placement
    with that pattern (shared NICs, late pipelines on slow links, TCP-capped flows)."""
    from scheduler.classes import device_classes
    from scheduler.ilp import solve

    cluster, model, training = make(), gpt3_xl(pp), TrainingSpec(global_batch=batch)
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    best = fastest_by_pattern(every_placement(problem), classes.index, evaluator(cluster, model, training))
    checked = 0
    for (counts, server_classes), value in best.items():
        milp = pattern_model(inputs, pp, dp, classes, counts, server_classes)
        optimal, bound = solve(milp, "highs", 30, 0.0)
        if milp.status != 1:
            continue  # a relabelling of interchangeable classes that the model orders away; its image is checked
        assert optimal and bound <= value * (1 + 1e-9), (counts, server_classes)
        checked += 1
    assert checked >= len(best) / 2


def every_placement_up_to_twins(problem: Problem, classes):
    """Every placement, twins (devices that relabel into one another) taken as one: every
    arrangement of the class multiset over the (stage, replica) slots, with every server choice."""
    labels = [c for c, members in enumerate(classes.members) for _ in members]
    for arrangement in sorted(set(permutations(labels))):
        left = [list(members) for members in classes.members]
        order = [left[c].pop(0) for c in arrangement]
        grid = [order[s * problem.dp:(s + 1) * problem.dp] for s in range(problem.pp)]
        for servers in product(range(problem.dp), repeat=problem.pp):
            yield stage_placement(problem, grid, list(servers))


@pytest.mark.parametrize("pp,dp,layers,batch", [(2, 4, 2, 512), (4, 2, 4, 512), (4, 2, 8, 256)])
def test_the_shared_nic_terms_hold_and_bite_on_a_spot_like_host(pp, dp, layers, batch, monkeypatch):
    """A host of 4 GPUs behind one NIC beside 4 single-GPU hosts, as on spot: with the host's
    transfers crowding its NIC, the bound rises (periods through the NIC) and still stays under
    the estimator of every placement of each pattern."""
    from scheduler import ilp, time_bound
    from scheduler.classes import device_classes

    cluster, model, training = shared_nic(4, 4), gpt3_xl(layers), TrainingSpec(global_batch=batch)
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    best = fastest_by_pattern(every_placement_up_to_twins(problem, classes), classes.index,
                              evaluator(cluster, model, training))

    def pattern_bound(counts, server_classes) -> float:
        optimal, bound = ilp.solve(pattern_model(inputs, pp, dp, classes, counts, server_classes), "highs", 30, 0.0)
        assert optimal
        return bound

    bounds = {key: pattern_bound(*key) for key in best}
    for key, value in best.items():
        assert bounds[key] <= value * (1 + 1e-9), key
    monkeypatch.setattr(time_bound, "shared_nic_periods", lambda *args: None)
    raised = sum(bounds[key] > pattern_bound(*key) * (1 + 1e-6) for key in best)
    assert raised >= 1


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
    import scheduler.time_bound

    monkeypatch.setattr(scheduler.time_bound, "solve", lambda *args, **kwargs: (False, 0.0))
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


def test_the_deterministic_search_keeps_no_clock_and_proves_no_bound(monkeypatch):
    """`sim report`'s search: the same plan whatever the time limit or the machine's speed (a
    clock that jumps an hour at every reading changes nothing), no MILP, no bound."""
    import scheduler.time_search as time_search

    cluster, pp, dp, layers = three_regions(), 3, 2, 3
    problem = problem_of(cluster, pp, dp, layers)
    evaluate = evaluator(cluster, gpt3_xl(layers), TRAINING)
    inputs = lambda uneven: time_bound_inputs(cluster, gpt3_xl(layers), TRAINING, pp, dp, uneven)
    settings = SearchSettings(time_limit_s=0.001, deterministic=True, uneven=True)
    first = plan_search(problem, settings, evaluate, inputs)
    monkeypatch.setattr(time_search, "time_bound", lambda *a, **k: pytest.fail("no MILP in deterministic mode"))
    ticks = iter(range(0, 10**9, 3600))
    monkeypatch.setattr(time_search.time, "perf_counter", lambda: float(next(ticks)))
    again = plan_search(problem, dataclasses.replace(settings, time_limit_s=100.0), evaluate, inputs)
    assert first.placement == again.placement and first.value == again.value
    assert first.bound is None and first.gap is None
    assert first.value == pytest.approx(evaluate(first.placement))
    for seed in range(3):
        assert first.value <= random_search(problem, "time", evaluate, samples=20, seed=seed).value
