"""The bound's sync and barrier terms, each held to what it stands for: the chain term to every
ring of the group's devices, the NIC term to every placement of a host of two GPUs beside
single-GPU hosts, the barrier floor to the estimator's barrier; and each is shown to bite."""

from __future__ import annotations

from itertools import permutations, product

import numpy as np
import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import geo
from scheduler import time_bound
from scheduler.candidates import ring_seconds
from scheduler.classes import DeviceClasses
from scheduler.ilp import CompositionModel, solve
from scheduler.search import problem_for
from scheduler.time_search import stage_placement
from simulator.planning import evaluator, time_bound_inputs


def class_table(rates: list[list[float]], sizes: list[int]) -> DeviceClasses:
    """Classes of ``sizes`` devices with these lone rates between them (within: the diagonal;
    NaN for a class of one)."""
    members, first = [], 0
    for size in sizes:
        members.append(tuple(range(first, first + size)))
        first += size
    rate = np.array(rates, dtype=float)
    for r, size in enumerate(sizes):
        if size == 1:
            rate[r, r] = np.nan
        elif np.isnan(rate[r, r]):
            rate[r, r] = 2 * GBIT
    return DeviceClasses(members=tuple(members), latency_s=np.where(np.isnan(rate), np.nan, 0.0),
                         bandwidth_bytes_per_s=rate)


def fastest_ring_s(classes: DeviceClasses, counts: list[int], size: float) -> float:
    """Brute force: the quickest reduce + broadcast of ``size`` bytes around any ring of a group
    holding ``counts[r]`` devices of class r, over its slowest hop each (no latency, no fill)."""
    labels = [r for r, n in enumerate(counts) for _ in range(n)]
    best = np.inf
    for order in set(permutations(labels[1:])):
        ring = [labels[0], *order]
        rates = np.array([[classes.bandwidth_bytes_per_s[a, b] for a, b in zip(ring, ring[1:] + ring[:1])]])
        best = min(best, float(ring_seconds(size, np.zeros_like(rates), rates)[0][0]))
    return best


def chain_bound(classes: DeviceClasses, counts: list[int], size: float) -> float:
    """The chain term's least value for one group holding ``counts[r]`` devices of class r (the
    classes cut down to what the group holds, so that the model has one group)."""
    keep = [r for r, n in enumerate(counts) if n]
    rates = classes.bandwidth_bytes_per_s[np.ix_(keep, keep)]
    held = class_table(rates.tolist(), [counts[r] for r in keep])
    built = CompositionModel.build("chain", held, 1, sum(counts))
    once, twice = time_bound._chain_seconds(built, 0, size)
    built.model += once + twice
    optimal, bound = solve(built.model, "highs", 30, 0.0)
    assert optimal
    return bound


GBIT = 1.25e8
WIDE = class_table([[2 * GBIT, 1.1 * GBIT, 0.5 * GBIT, 0.4 * GBIT],
                    [1.1 * GBIT, 2 * GBIT, 0.7 * GBIT, 0.5 * GBIT],
                    [0.5 * GBIT, 0.7 * GBIT, 2 * GBIT, 1.1 * GBIT],
                    [0.4 * GBIT, 0.5 * GBIT, 1.1 * GBIT, 2 * GBIT]], [4, 4, 4, 4])


@pytest.mark.parametrize("counts", [(1, 1, 1, 1), (2, 1, 1, 0), (1, 0, 0, 2), (0, 0, 3, 1), (2, 2, 0, 0), (0, 1, 0, 1),
                                    (4, 0, 0, 0), (1, 1, 1, 2), (3, 0, 0, 1)])
def test_the_chain_term_is_below_every_ring_of_the_group(counts):
    size = 3e8
    assert chain_bound(WIDE, list(counts), size) <= fastest_ring_s(WIDE, list(counts), size) * (1 + 1e-9)


def test_the_chain_term_bites_where_a_device_has_one_fast_peer():
    """One device in each of four regions, two pairs joined inside by 1.1 Gbit/s and across by
    0.7 at best: every ring crosses between the pairs twice, and no device has two peers at 0.7
    or faster, so the second crossing is slower than the first (the bound: 0.7 and 0.5; the
    best ring: 0.7 and 0.4)."""
    size = 3e8
    bound = chain_bound(WIDE, [1, 1, 1, 1], size)
    assert bound == pytest.approx(size / (0.7 * GBIT) + size / (0.5 * GBIT))
    assert bound > 2 * size / (0.7 * GBIT) * (1 + 1e-6)  # more than the best crossing twice
    assert bound < fastest_ring_s(WIDE, [1, 1, 1, 1], size)


def test_the_chain_term_bites_where_a_class_is_cut_off_from_those_present():
    """Three regions in a row (a and c joined only through b at 2 Gbit/s, 0.4 across): a group
    holding a and c but not b rings across the slow pair twice, though the cluster's classes
    are joined at 2 Gbit/s; the bound is the best ring's, but for its first chunk's latency."""
    size = 3e8
    chained = class_table([[2 * GBIT, 2 * GBIT, 0.4 * GBIT], [2 * GBIT, 2 * GBIT, 2 * GBIT],
                           [0.4 * GBIT, 2 * GBIT, 2 * GBIT]], [2, 2, 2])
    built = CompositionModel.build("cut_off", chained, 2, 3)
    for g, row in enumerate(((2, 0, 1), (0, 2, 1))):
        for r, n in enumerate(row):
            built.count[g, r].lowBound = built.count[g, r].upBound = n
    once, twice = time_bound._chain_seconds(built, 0, size)
    built.model += once + twice
    optimal, bound = solve(built.model, "highs", 30, 0.0)
    assert optimal
    assert bound == pytest.approx(2 * size / (0.4 * GBIT))  # joined through b it would be 2 × size / 2 Gbit/s
    assert bound <= fastest_ring_s(chained, [2, 0, 1], size)


def two_gpu_host_beside_singles():
    """A host of 2 GPUs behind one 10 Gbit/s NIC and 6 single-GPU hosts, 0.1 ms apart."""
    from profiler.cluster import Cluster, Device, Host, Interconnect, Link

    def host(name: str) -> Host:
        return Host(name=name, region="dc", interconnect=Interconnect.NVLINK, interconnect_bandwidth_bytes_per_s=5e10,
                    interconnect_latency_s=5e-6, uplink_bandwidth_bytes_per_s=1.25e9)
    names = ["pair", "pair"] + [f"one-{i}" for i in range(6)]
    return Cluster(name="nic", devices=tuple(Device(id=i, gpu="V100-SXM2-16GB", host=n) for i, n in enumerate(names)),
                   hosts=tuple(host(n) for n in dict.fromkeys(names)),
                   links=(Link(a="dc", b="dc", latency_s=1e-4, bandwidth_bytes_per_s=1.25e9),))


def test_the_nic_sync_term_holds_on_every_placement_and_raises_the_bound(monkeypatch):
    """P2D4 on a host of two GPUs beside six single-GPU hosts: with both of the host's GPUs in
    one stage (its ring through the NIC three times) or one in each (each stage's once each way),
    the bound with the host's counts fixed stays under the estimator of every placement of
    those counts (twins taken as one, every server), and without the NIC term it is lower."""
    from scheduler.classes import device_classes

    cluster, model, training = two_gpu_host_beside_singles(), gpt3_xl(2), TrainingSpec(global_batch=64)
    pp, dp = 2, 4
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    evaluate = evaluator(cluster, model, training)
    pair = next(r for r, members in enumerate(classes.members) if set(members) == {0, 1})
    best: dict[tuple[int, int], float] = {}
    for slots in {tuple(sorted(c)) for c in permutations(range(8), 2)}:  # where the host's two GPUs go
        order = [0 if i == slots[0] else 1 if i == slots[1] else None for i in range(8)]
        singles = iter(range(2, 8))
        order = [d if d is not None else next(singles) for d in order]
        grid = [order[:dp], order[dp:]]
        counts = (sum(d < 2 for d in grid[0]), sum(d < 2 for d in grid[1]))
        for servers in product(range(dp), repeat=pp):
            value = evaluate(stage_placement(problem, grid, list(servers)))
            best[counts] = min(best.get(counts, np.inf), value)

    def bound(counts: tuple[int, int], nic: bool) -> float:
        if not nic:
            monkeypatch.setattr(time_bound, "nic_sync_load", lambda *args: None)
        built, _ = time_bound.time_bound_model(inputs, pp, dp, classes)
        monkeypatch.undo()
        for g, n in enumerate(counts):
            built.count[g, pair].lowBound = built.count[g, pair].upBound = n
        optimal, value = solve(built.model, "highs", 30, 0.0)
        assert optimal
        return value

    assert set(best) == {(2, 0), (1, 1), (0, 2)}
    for counts, value in best.items():
        assert bound(counts, True) <= value * (1 + 1e-9), counts


def test_the_nic_sync_term_bites_where_a_host_serves_four_stages(monkeypatch):
    """Spot with each p3.8xlarge holding four consecutive stages of one pipeline (the other four
    pipelines on single-GPU hosts): four stages' rings pass each host's NIC, so the bound with
    that pattern rises over its value without the NIC term, and stays under the plan's estimate."""
    from profiler.scenarios import spot
    from scheduler.classes import device_classes

    cluster, model, training = spot(), gpt3_xl(24), TrainingSpec(global_batch=1024)
    problem = problem_for(cluster, model, training, 8, 8)
    inputs = time_bound_inputs(cluster, model, training, 8, 8)
    classes = device_classes(inputs.tables, inputs.kinds)
    grid = [[None] * 8 for _ in range(8)]
    for r in range(4):  # host r holds stages 0-3 of pipeline r, host 4 + r its stages 4-7 (the
        for k in range(4):  # hosts in the order the model asks of interchangeable ones)
            grid[k][r], grid[4 + k][r] = 4 * r + k, 16 + 4 * r + k
    singles = iter(range(32, 64))
    grid = [[d if d is not None else next(singles) for d in row] for row in grid]
    value = evaluator(cluster, model, training)(stage_placement(problem, grid, [4] * 8))

    def bound(nic: bool) -> float:
        if not nic:
            monkeypatch.setattr(time_bound, "nic_sync_load", lambda *args: None)
        built, _ = time_bound.time_bound_model(inputs, 8, 8, classes)
        monkeypatch.undo()
        cls = classes.index
        for g, row in enumerate(grid):
            for r in range(len(classes)):
                built.count[g, r].lowBound = built.count[g, r].upBound = sum(cls[d] == r for d in row)
        optimal, result = solve(built.model, "highs", 60, 1e-4)
        return result

    with_nic = bound(True)
    assert bound(False) * (1 + 1e-3) < with_nic <= value


def test_the_barrier_floor_is_below_the_estimators_barrier():
    """The least a rank spends in a barrier (scheduler.time_bound.barrier_s) never exceeds what
    the estimator's dissemination barrier takes, whoever enters last, on a world-like cluster."""
    from profiler.network.topology import Topology
    from simulator.estimator.study import barrier_leave

    cluster = geo("three", {"a": 3, "b": 3, "c": 2}, (10, 2), {("a", "b"): (40, 1), ("a", "c"): (90, 0.5),
                                                              ("b", "c"): (60, 0.7)})
    topology = Topology(cluster)
    latency = np.array([[topology.route(i, j).latency_s if i != j else 0.0 for j in range(8)] for i in range(8)])
    floor = time_bound.barrier_s(latency)
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = [int(d) for d in rng.permutation(8)]
        last = int(rng.integers(8))
        entries = [0.0] * 8
        entries[last] = 1.0
        assert max(barrier_leave(topology, order, entries)) >= 1.0 + floor - 1e-12
    assert floor >= 3 * 0.010  # three rounds, each at least a region's 10 ms


def test_the_last_barrier_lasts_the_way_to_the_farthest_class(monkeypatch):
    """Whichever stage's ranks enter the estimator's last barrier together, some rank leaves it no
    sooner than their entry plus the shortest way from each of their classes to the class
    farthest from it (scheduler.time_bound._farthest_barriers: every rank hears from every other
    through a chain of messages); and on three regions the bound of a pattern rises by it over
    the floor (the bound stays under the estimator: the sharper terms' test checks the plain
    model on every pattern)."""
    from profiler.network.topology import Topology
    from scheduler.classes import device_classes
    from simulator.estimator.study import barrier_leave

    cluster = geo("three", {"a": 3, "b": 3, "c": 2}, (10, 2), {("a", "b"): (40, 1), ("a", "c"): (90, 0.5),
                                                              ("b", "c"): (60, 0.7)})
    topology = Topology(cluster)
    model, training = gpt3_xl(2), TrainingSpec(global_batch=64)
    pp, dp = 2, 4
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    farthest = time_bound._shortest_paths(classes.latency_s).max(axis=1)
    assert farthest.min() >= 0.040 - 1e-12  # from every region some other is 40 ms or more away
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = [int(d) for d in rng.permutation(8)]
        for stage in range(pp):
            entries = [1.0 if rank % pp == stage else 0.0 for rank in range(8)]
            held = {classes.index[order[rank]] for rank in range(stage, 8, pp)}
            assert max(barrier_leave(topology, order, entries)) >= 1.0 + max(farthest[c] for c in held) - 1e-12
    split = ((3, 1, 0), (0, 2, 2))  # stage 0: all of a, one of b; stage 1: the rest
    with_term = _pattern_bound(inputs, classes, pp, dp, split, False)
    monkeypatch.setattr(time_bound, "_farthest_barriers", lambda built, base: base)
    floor = time_bound.barrier_s(inputs.latency_s)
    assert with_term >= _pattern_bound(inputs, classes, pp, dp, split, False) + 0.9 * (farthest[0] - floor)


def test_the_pure_pipelines_bound_is_below_every_placement_of_its_family_and_above_the_milps():
    """Three regions of three GPUs, P3D3 in two rounds: every pipeline inside a region, in every
    order of the regions and with every server, takes the estimator no less than the family's
    bound; and the bound, which times the barriers and rings in each order, is above what the
    class-count MILP proves for the same pattern."""
    from scheduler.classes import device_classes
    from scheduler.pure_pipelines import pure_pipelines_bound

    cluster = geo("three", {"a": 3, "b": 3, "c": 3}, (10, 2),
                  {("a", "b"): (40, 1.0), ("a", "c"): (120, 0.4), ("b", "c"): (70, 0.7)})
    model, training = gpt3_xl(3), TrainingSpec(global_batch=384)
    pp = dp = 3
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    assert inputs.rounds == 2
    classes = device_classes(inputs.tables, inputs.kinds)
    evaluate = evaluator(cluster, model, training)
    family = pure_pipelines_bound(inputs, pp, dp, classes, time_bound.barrier_s(inputs.latency_s))
    seen = []
    for order in permutations(range(3)):
        grid = [[classes.members[c][s] for c in order] for s in range(pp)]
        seen += [evaluate(stage_placement(problem, grid, list(servers))) for servers in product(range(dp), repeat=pp)]
    assert family <= min(seen) * (1 + 1e-9)
    built, _ = time_bound.time_bound_model(inputs, pp, dp, classes)
    for g in range(pp):
        for r in range(len(classes)):
            built.count[g, r].lowBound = built.count[g, r].upBound = 1
    optimal, pattern = solve(built.model, "highs", 30, 0.0)
    assert optimal and pattern < family


def _pattern_bound(inputs, classes, pp, dp, counts, strong):
    """The bound MILP (plain or with the sharper terms) with each stage's class counts fixed."""
    built, _ = time_bound.time_bound_model(inputs, pp, dp, classes, strong=strong)
    for g, row in enumerate(counts):
        for r in range(len(classes)):
            built.count[g, r].lowBound = built.count[g, r].upBound = row[r]
    optimal, value = solve(built.model, "highs", 30, 0.0)
    assert optimal
    return value


def test_the_bound_holds_on_every_pattern_of_three_regions():
    """P2D4 over three regions (4 + 2 + 2 GPUs, the two small ones far apart): for every split
    of the classes over the two stages, the bound, plain and with the sharper terms, stays under
    the estimator of every placement of that split (the second stage's devices in every order
    against the first's; twins are alike)."""
    from scheduler.classes import device_classes

    cluster = geo("cut", {"a": 4, "b": 2, "c": 2}, (10, 2), {("a", "b"): (30, 1.0), ("a", "c"): (40, 1.0),
                                                            ("b", "c"): (120, 0.3)})
    model, training = gpt3_xl(2), TrainingSpec(global_batch=64)
    pp, dp = 2, 4
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    evaluate = evaluator(cluster, model, training)
    cls = classes.index
    best: dict[tuple, float] = {}
    for first in {tuple(sorted(c)) for c in permutations(range(8), 4)}:
        second = [d for d in range(8) if d not in first]
        counts = tuple(tuple(sum(cls[d] == r for d in group) for r in range(len(classes))) for group in (first, second))
        if counts in best:
            continue
        best[counts] = min(evaluate(stage_placement(problem, [list(first), list(order)], [0, 0]))
                           for order in permutations(second))
    for counts, value in best.items():
        for strong in (False, True):
            assert _pattern_bound(inputs, classes, pp, dp, counts, strong) <= value * (1 + 1e-9), (counts, strong)


def test_the_sharper_terms_bite_where_every_barrier_message_between_stages_crosses_regions():
    """Two regions 150 ms apart, each holding one stage of P2D4: every rank's first barrier
    message comes from the other region, so the barriers through the mean pipeline and the last
    one last at least that and two of 10 ms (_message_chains) where the plain bound counts three
    of 10 ms; the sharper bound stays under the estimator of every placement of the split."""
    from scheduler.classes import device_classes

    cluster = geo("far", {"a": 4, "b": 4}, (10, 2), {("a", "b"): (150, 5.0)})
    model, training = gpt3_xl(2), TrainingSpec(global_batch=64)
    pp, dp = 2, 4
    problem = problem_for(cluster, model, training, pp, dp)
    inputs = time_bound_inputs(cluster, model, training, pp, dp)
    classes = device_classes(inputs.tables, inputs.kinds)
    split = ((4, 0), (0, 4))
    plain = _pattern_bound(inputs, classes, pp, dp, split, False)
    sharper = _pattern_bound(inputs, classes, pp, dp, split, True)
    assert sharper >= plain + 0.9 * (0.150 - 0.010)
    evaluate = evaluator(cluster, model, training)
    assert sharper <= min(evaluate(stage_placement(problem, [[0, 1, 2, 3], list(order)], [0, 0]))
                          for order in permutations(range(4, 8))) * (1 + 1e-9)
