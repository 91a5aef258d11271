"""A proven lower bound on the study runtime's iteration, minimised over every placement of the
degrees by a MILP over twin classes (scheduler.ilp.CompositionModel), for the ``time`` objective.

It bounds the analytic estimator (simulator.estimator.study) term by term. With M micro-batches in
G rounds, per stage forward f and backward b:

- *Rounds.* Each phase of a round is a flow shop of stages and links: every transfer crosses its
  link in at least latency + bytes / lone rate, and a link is busy at least bytes / lone rate a
  micro-batch, so a phase lasts at least its fill plus (m − 1) of its slowest period; the rounds
  together pay G fills and M − G periods, and a barrier after every forward half. Two readiness
  figures per stage: one every replica reaches no sooner (compute, the cheapest hops), one the
  slowest replica does (through the forward links' bottleneck, the backward's, a link both
  ways, or the mean hop of the boundaries' transports, since the slowest pipeline's fill is no
  shorter than the mean pipeline's). Shared NICs lengthen the periods (shared_nic_periods).
- *Barriers.* gloo's dissemination barrier moves every rank's time on by the latency of the
  message it receives in each of its ⌈log2 n⌉ rounds, each from another rank: no barrier costs a
  rank less than the sum of the ⌈log2 n⌉ smallest latencies into its device (``barrier_s``).
  Every rank hears from every other through a chain of those messages, so the last barrier,
  which a stage's ranks enter together when its sync ends, lasts no less than the shortest way
  from each class the stage holds to the class farthest from it (``_farthest_barriers``).
- *Sync.* NCCL's reduce runs along the ring of the stage's replicas less the edge out of the
  server, its broadcast along the ring less the edge into it; a chain takes at least its buffer
  over its slowest hop. So one chain pays the ring's slowest edge w1 and the other at least its
  second slowest w2 (_chain_seconds): w1 is slow where the group's devices cannot be joined, or a
  device cannot find two neighbours, over fast pairs; w2 where they cannot be joined at all (over
  the classes of the cluster, or because a class present has no fast pair with any other class
  present: the ring enters and leaves it over slower edges), or a device has no fast neighbour.
  A chain's last hop also waits for the first chunk to cross the
  D − 2 hops before it. A host's NIC carries every stage it holds part of at least once
  each way (three times in all where it holds two replicas or more), after those stages are
  ready (nic_sync_load).
- *Step.* The optimizer step follows the sync, or runs beside it where it is offloaded; a last
  barrier ends the iteration.
- *Sharper terms* (``strong``), valid but slower to prove (time_bound solves them second, with
  the time left): each barrier on the critical path no shorter than the mean of the messages
  into its stage's ranks (``_message_chains``: across regions where neighbouring stages sit in
  distant ones).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pulp

from scheduler.classes import DeviceClasses, device_classes
from scheduler.ilp import CompositionModel, solve
from scheduler.pure_pipelines import pure_pipelines_bound
from scheduler.runtimes import NCCL_CHUNK_BYTES
from scheduler.shared_nics import nic_sync_load, shared_nic_periods, streaming_ceiling_s


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeBound:
    groups: list[list[int]] | None  # the model's best stage groups, in pipeline order (None: none found in time)
    servers: list[int] | None  # per stage, the class its parameter server should come from
    bound: float  # proven: the estimator gives no placement of these degrees less
    optimal: bool
    solver_s: float


@dataclass(frozen=True, slots=True)
class _Readiness:
    every: list[pulp.LpAffineExpression]  # [g]: no replica of stage g is ready for its sync sooner
    slowest: list[pulp.LpVariable]  # [g]: the slowest replica of stage g is ready no sooner


def barrier_rounds(n: int) -> int:
    """The rounds of a dissemination barrier over n ranks: ⌈log2 n⌉ (simulator.estimator.study.barrier_leave)."""
    return math.ceil(math.log2(n)) if n > 1 else 0


def barrier_s(latency_s: np.ndarray) -> float:
    """The least any rank spends in a dissemination barrier over all devices: ⌈log2 n⌉ rounds, in
    each a message from a different rank (simulator.estimator.study.barrier_leave)."""
    n = latency_s.shape[0]
    rounds = barrier_rounds(n)
    if rounds == 0:
        return 0.0
    into = np.sort(np.where(np.eye(n, dtype=bool), np.inf, latency_s), axis=0)[:rounds]
    return float(into.sum(axis=0).min())


def time_bound_model(inputs, pp: int, dp: int, classes: DeviceClasses,
                     crossing: bool = False, strong: bool = False) -> tuple[CompositionModel, dict]:
    """The bound MILP (see the module docstring): class counts per stage, the boundaries'
    transports, each stage's server class, and the iteration as the objective. With
    ``crossing``, only over placements where some pipeline crosses from one class to another
    (scheduler.pure_pipelines bounds the others)."""
    P, D = pp, dp
    built = CompositionModel.build("study_runtime_iteration_bound", classes, P, D)
    m = built.model
    floor = barrier_s(inputs.latency_s)
    mid, final = _barriers(built, inputs, floor, strong)
    ready = _readiness(built, inputs, P, D, floor, mid, crossing)
    iteration = m.add_variable("iteration", 0)
    sizes, o = inputs.grad_bytes, inputs.optimizer_s
    servers = {}
    fastest = _finite_max(inputs.rate_bytes_per_s)
    nearest = float(np.nanmin(np.where(inputs.latency_s > 0, inputs.latency_s, np.nan))) if D > 1 else 0.0
    for g in range(P):
        servers[g] = _servers(built, g, D)
        if D == 1:
            m += iteration >= ready.slowest[g] + o[g] + final[g], f"step_g{g}"
            continue
        slowest_chain, second_chain = _chain_seconds(built, g, sizes[g], _hop_fill_s(inputs, sizes[g]))
        hops = 2 * nearest  # each chain's slowest hop delivers its last byte a latency after it leaves
        step = 0.0 if inputs.offloaded else o[g]
        m += iteration >= (ready.every[g] + slowest_chain + second_chain + hops + step + final[g]), f"sync_g{g}"
        m += iteration >= (ready.slowest[g] + sizes[g] / fastest + second_chain + hops + step + final[g]), \
            f"sync_after_slowest_g{g}"
        if inputs.offloaded:
            m += iteration >= ready.slowest[g] + o[g] + floor, f"offloaded_step_g{g}"
    if D > 1:
        nic_sync_load(built, inputs, ready.every, iteration, [floor] * P)
    m += iteration, "iteration_bound"
    return built, servers


def _barriers(built: CompositionModel, inputs, floor: float, strong: bool) -> tuple:
    """(what a barrier after a forward half adds on the critical path, through the last stage's
    ranks; what the last barrier adds after each stage's sync): ``barrier_s``, or with
    ``strong`` no less than the mean of the messages into the end stages' ranks
    (``_message_chains``); the last barrier also no less than the way from the stage's classes
    to the farthest class (``_farthest_barriers``)."""
    if not strong:
        return floor, _farthest_barriers(built, [floor] * built.positions)
    chains = _message_chains(built, inputs, floor)
    return chains[-1], _farthest_barriers(built, chains)


def _farthest_barriers(built: CompositionModel, base: list) -> list:
    """Per stage g, what the last barrier adds after g's sync: no less than ``base[g]`` nor, for
    each class a present in g, than the shortest way (over any classes) from a to the class
    farthest from it. Every rank of g enters at g's sync end, and in a dissemination barrier
    every rank hears from every other through a chain of messages, one per round whose bit the
    difference of their ranks has (simulator.estimator.study.barrier_leave): the rank farthest
    from a rank of a leaves no sooner than that rank entered plus the chain's latencies. Every
    class holds some rank, since the placement takes every device."""
    farthest = _shortest_paths(built.classes.latency_s).max(axis=1)
    m, out = built.model, []
    for g, least in enumerate(base):
        lowest = least.lowBound if isinstance(least, pulp.LpVariable) else least
        above = [(a, float(v)) for a, v in enumerate(farthest) if v - lowest >= CHAIN_RELEVANCE_S]
        if not above:
            out.append(least)
            continue
        var = m.add_variable(f"last_barrier_g{g}", lowest)
        m += var >= least, f"last_barrier_g{g}_base"
        for a, v in above:
            m += var >= v * built.present[g, a], f"last_barrier_g{g}_from_c{a}"
        out.append(var)
    return out


def _barriers_matter(classes: DeviceClasses, floor: float, n: int) -> bool:
    """Whether a barrier of n ranks whose every message took the slowest latency between two
    classes would take CHAIN_RELEVANCE_S longer than its floor."""
    rounds = barrier_rounds(n)
    finite = classes.latency_s[np.isfinite(classes.latency_s)]
    return rounds > 0 and finite.size > 0 and rounds * float(finite.max()) - floor >= CHAIN_RELEVANCE_S


def _shortest_paths(cost: np.ndarray) -> np.ndarray:
    """Floyd–Warshall over a class table (NaN or inf: no edge; staying in a class costs 0)."""
    dist = np.where(np.isfinite(cost), cost, np.inf)
    np.fill_diagonal(dist, 0.0)
    for k in range(dist.shape[0]):
        dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
    return dist


def _potentials(excess: np.ndarray) -> list[np.ndarray]:
    """Potentials φ with φ[c] − φ[a] ≤ excess[a, c] for every pair (Kantorovich's dual of a
    transport): from each class, the shortest-path excess to every class, and the negated
    shortest-path excess from every class to it. Any one of them bounds a transport's cost
    below by Σ φ·(arrivals − departures); at a whole group moved from class a to class c the
    one from a gives the shortest path, the direct excess where that is shortest."""
    dist = _shortest_paths(excess)
    out = []
    for r in range(dist.shape[0]):
        for phi in (dist[r], -dist[:, r]):
            if np.all(np.isfinite(phi)) and np.any(phi):
                out.append(phi)
    return out


# Barriers whose every message costs within this of the floor are left at the floor: the data
# centres' barriers cost microseconds a message, and the terms would only slow their MILP down.
CHAIN_RELEVANCE_S = 1e-3


def _message_chains(built: CompositionModel, inputs, floor: float) -> list[pulp.LpVariable]:
    """Per stage g, a variable no less than ``floor`` and, for the first and the last stage (the
    last barrier follows stage 0's sync, the last to end; a barrier after a forward half holds
    the last stage's backward), no less than the mean over g's replicas of the latencies of the
    ⌈log2 n⌉ messages their ranks receive in a dissemination barrier (round k from rank
    i − 2^k). No rank leaves sooner than it entered plus those
    (simulator.estimator.study.barrier_leave), so where a stage's replicas enter together (the
    sync ends on all of them at once) the last leaves no sooner than that plus the mean, and
    the slowest pipeline no sooner than the mean pipeline. Rank r·P + s receives in round k from
    stage s − 2^k mod P, one message into each replica from a different one: the latencies sum to
    no less than the cheapest transport of that stage's class counts onto g's, which is no less
    than Σ φ·(arrivals − departures) for any potential φ (``_potentials``); where 2^k is a
    multiple of P the message comes from g's own replicas, no cheaper than the nearest device
    into its class."""
    P, D, m = built.positions, built.group_size, built.model
    n = P * D
    rounds = barrier_rounds(n)
    chains = [m.add_variable(f"barrier_chain_g{g}", floor) for g in range(P)]
    if not _barriers_matter(built.classes, floor, n):
        return chains
    lat = built.classes.latency_s  # NaN within a class of one
    R = len(built.classes)
    nearest_into = np.nanmin(lat, axis=0)
    potentials = _potentials(np.where(np.isfinite(lat), lat - nearest_into[None, :], np.inf))
    for g in (0, P - 1) if P > 1 else (0,):
        sources = [(g - (2 ** k) % P) % P for k in range(rounds) if (2 ** k) % P]
        nearest = pulp.lpSum(rounds * float(nearest_into[c]) * built.count[g, c] for c in range(R))
        for i, phi in enumerate(potentials):
            beyond = pulp.lpSum(float(phi[c]) * (len(sources) * built.count[g, c]
                                                 - pulp.lpSum(built.count[h, c] for h in sources))
                                for c in range(R) if phi[c])
            m += chains[g] >= (nearest + beyond) / D, f"barrier_chain_g{g}_p{i}"
    return chains


def _finite_max(values: np.ndarray) -> float:
    return float(np.nanmax(np.where(np.isfinite(values), values, np.nan)))


def _readiness(built: CompositionModel, inputs, P: int, D: int, barrier: float, mean_barrier: pulp.LpVariable,
               crosses: bool = False) -> _Readiness:
    """When each stage's replicas are ready for the sync (the module docstring's rounds); with
    ``crosses``, some pipeline crosses between classes, both ways, at a boundary's occupancy no
    shorter than the cheapest between two classes. ``barrier``: what a barrier adds to any rank;
    ``mean_barrier``: to the mean pipeline, through its last stage's rank (_barriers)."""
    M, G = inputs.micro_batches, inputs.rounds
    f_total, f_max = inputs.forward_total_s, inputs.forward_period_s
    b_tail, b_max = inputs.backward_tail_s, inputs.backward_period_s
    classes, m = built.classes, built.model
    alpha, rate = classes.latency_s, classes.bandwidth_bytes_per_s
    with np.errstate(divide="ignore", invalid="ignore"):
        busy = inputs.activation_bytes / rate  # a link's occupancy per transfer
        act = alpha + busy  # a transfer's crossing
    alone = len(classes) > 1 or classes.sizes[0] > 1
    t_min = float(np.nanmin(act)) if alone else 0.0
    busy_min = float(np.nanmin(busy)) if alone else 0.0
    if P > 1:  # every pipeline streams through transfers, none busier than busy_min: periods are no shorter
        f_max = max(f_max, busy_min)
        b_max = [max(b, busy_min) if g < P - 1 else b for g, b in enumerate(b_max)]
    forward_links = [built.bottleneck(g, busy, "forward_link") for g in range(P - 1)]
    symmetric = np.allclose(np.nan_to_num(busy), np.nan_to_num(busy.T))
    backward_links = forward_links if symmetric else [built.bottleneck(g, busy.T, "backward_link")
                                                     for g in range(P - 1)]
    slowest_forward = m.add_variable("slowest_forward_period", f_max)
    forward_periods = []
    for g, link in enumerate(forward_links):
        m += slowest_forward >= link.cost, f"forward_period_link{g}"
        forward_periods.append(m.add_variable(f"forward_period_via_link{g}", f_max))
        m += forward_periods[-1] >= link.cost, f"forward_period_via_link{g}"
    if crosses:
        R = len(classes)
        m += pulp.lpSum(v for link in forward_links for (r, q), v in link.flow.items() if r != q) >= 1, \
            "some_pipeline_crosses"
        across = min((float(busy[r, q]) for r in range(R) for q in range(R) if r != q and np.isfinite(busy[r, q])),
                     default=f_max)
        slowest_forward.lowBound = max(f_max, across)
    transfer_ceiling = streaming_ceiling_s(inputs) if P > 1 else 0.0
    if P > 1:
        shared_nic_periods(built, inputs, [link.flow for link in forward_links], slowest_forward, f_max,
                            max(transfer_ceiling, inputs.forward_ceiling_s), "forward_nic")
    crossing = np.nan_to_num(act, nan=0.0)
    mean_forward = [pulp.lpSum(crossing[r, q] * v for (r, q), v in link.flow.items()) / D for link in forward_links]
    mean_backward = [pulp.lpSum(crossing[q, r] * v for (r, q), v in link.flow.items()) / D for link in forward_links]
    last = M - ((G - 1) * M) // G  # micro-batches of the last round (scheduler.runtimes.accumulation_rounds)
    early = (M - G) - (last - 1)  # periods of the rounds before it, per phase
    fill_f, fill_b = f_total + (P - 1) * t_min, b_tail[0] + (P - 1) * t_min
    # Every rank leaves a barrier no sooner than every other rank entered it: the last round's
    # backward starts, on every replica, after the slowest pipeline's forwards of every round and
    # its backwards of the rounds before (through its slowest forward link, its slowest backward
    # link, a link both ways, or no slower than the mean pipeline).
    last_forward = m.add_variable("last_forward_end", 0)
    m += last_forward >= (G * fill_f + (M - G) * slowest_forward + (G - 1) * (fill_b + barrier)
                          + early * b_max[0]), "last_forward_via_slowest_forward"
    m += last_forward >= (G * fill_f + (M - G) * f_max + (G - 1) * (fill_b + barrier)
                          + early * _slowest_backward(built, backward_links, 0, b_max[0], "early")), \
        "last_forward_via_slowest_backward"
    # No pipeline's period is shorter than its slowest link's occupancy: the mean pipeline's is no
    # shorter than any boundary's mean occupancy.
    busy_of = np.nan_to_num(busy, nan=0.0)
    mean_forward_period = m.add_variable("mean_forward_period", f_max)
    for h, link in enumerate(forward_links):
        m += mean_forward_period >= pulp.lpSum(busy_of[r, q] * v for (r, q), v in link.flow.items()) / D, \
            f"mean_forward_period_link{h}"
    mean_backward_period = []
    for g in range(P):
        period = m.add_variable(f"mean_backward_period_g{g}", b_max[g])
        for h in range(g, P - 1):
            m += period >= pulp.lpSum(busy_of[q, r] * v for (r, q), v in forward_links[h].flow.items()) / D, \
                f"mean_backward_period_g{g}_link{h}"
        mean_backward_period.append(period)
    m += last_forward >= (G * (f_total + pulp.lpSum(mean_forward)) + (M - G) * mean_forward_period
                          + (G - 1) * (b_tail[0] + pulp.lpSum(mean_backward) + mean_barrier)
                          + early * mean_backward_period[0]), "last_forward_mean"
    if crosses and P > 1:  # the crossing pipeline, its forwards and its backwards of the rounds before
        m += last_forward >= (G * fill_f + (M - G) * max(f_max, across) + (G - 1) * (fill_b + barrier)
                              + early * max(b_max[0], across)), "last_forward_via_the_crossing"
    if symmetric:
        for h in range(P - 1):
            m += last_forward >= (G * fill_f + (M - G) * forward_periods[h] + (G - 1) * (fill_b + barrier)
                                  + early * _slowest_backward(built, backward_links, h, b_max[0], f"early_link{h}")), \
                f"last_forward_via_link{h}_both_ways"
    every, slowest = [], []
    for g in range(P):
        tail = range(g, P - 1)  # backward links from the last stage down to g
        slowest_backward = _slowest_backward(built, backward_links, g, b_max[g], f"g{g}")
        if g == 0 and P > 1:  # stage 0's readiness waits on every backward transfer and every stage's compute
            shared_nic_periods(built, inputs, [{(q, r): v for (r, q), v in link.flow.items()} for link in backward_links],
                                slowest_backward, b_max[0], max(transfer_ceiling, inputs.backward_ceiling_s),
                                "backward_nic")
        fills = G * (f_total + (P - 1) * t_min + b_tail[g] + len(tail) * t_min + barrier)
        every.append(last_forward + barrier + b_tail[g] + len(tail) * t_min + (last - 1) * b_max[g])
        ready = m.add_variable(f"slowest_ready_g{g}", 0)
        m += ready >= every[-1], f"slowest_after_every_g{g}"
        m += ready >= fills + (M - G) * (slowest_forward + b_max[g]), f"through_forward_g{g}"
        m += ready >= fills + (M - G) * (f_max + slowest_backward), f"through_backward_g{g}"
        m += ready >= (G * (f_total + b_tail[g] + mean_barrier + pulp.lpSum(mean_forward) + pulp.lpSum(mean_backward[h]
                                                                                               for h in tail))
                       + (M - G) * (mean_forward_period + mean_backward_period[g])), f"mean_pipeline_g{g}"
        if symmetric:  # the replica slowest across link h forward is the slowest back across it too
            for h in tail:
                both = m.add_variable(f"backward_period_g{g}_via_link{h}", b_max[g])
                m += both >= backward_links[h].cost, f"backward_period_g{g}_via_link{h}"
                m += ready >= fills + (M - G) * (forward_periods[h] + both), f"through_link{h}_both_ways_g{g}"
        slowest.append(ready)
    return _Readiness(every=every, slowest=slowest)


# Rates within this share of a faster level count as that level (rounded up, so the bound stays
# below the estimator): a third of the levels on the world-wide cluster, its MILP several times
# faster, a chain term at most that share lower where a rate is merged.
LEVEL_SPACING = 0.1


def _slowest_backward(built: CompositionModel, links: list, g: int, floor: float, tag: str) -> pulp.LpVariable:
    """The slowest backward period of a pipeline from the last stage down to g: no shorter than
    ``floor`` (compute) or any of those links' bottleneck."""
    period = built.model.add_variable(f"slowest_backward_period_{tag}", floor)
    for h in range(g, len(links)):
        built.model += period >= links[h].cost, f"backward_period_{tag}_link{h}"
    return period


def _rate_levels(classes: DeviceClasses) -> tuple[list[float], np.ndarray]:
    """The lone rates between classes (and within them), fastest first, merged where they lie
    within LEVEL_SPACING of a faster one; and the class rates rounded up to those levels (a
    chain over a pair is then never slower than over the pair it stands for)."""
    rates = classes.bandwidth_bytes_per_s
    levels: list[float] = []
    for v in sorted({float(v) for v in rates[np.isfinite(rates)]}, reverse=True):
        if not levels or v < levels[-1] * (1 - LEVEL_SPACING):
            levels.append(v)
    rounded = np.full(rates.shape, np.nan)
    for index, v in np.ndenumerate(rates):
        if np.isfinite(v):
            rounded[index] = min(level for level in levels if level >= v * (1 - 1e-12))
    return levels, rounded


def _components(rates: np.ndarray, level: float) -> list[list[int]]:
    """Classes joined by pairs at ``level`` or faster."""
    R = rates.shape[0]
    root = list(range(R))

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    for a in range(R):
        for b in range(a + 1, R):
            if rates[a, b] >= level or rates[b, a] >= level:
                root[find(a)] = find(b)
    out: dict[int, list[int]] = {}
    for a in range(R):
        out.setdefault(find(a), []).append(a)
    return list(out.values())


def _chain_seconds(built: CompositionModel, g: int, size: float,
                   hop_fill_s: float = 0.0) -> tuple[pulp.LpVariable, pulp.LpVariable]:
    """(w1, w2) as seconds: stage g's buffer over the slowest and over the second slowest edge of
    the ring of its replicas (the module docstring's sync). Level k (θ_k, fastest first) is
    *slow once* when some ring edge must be slower than θ_k, *slow twice* when two must: twice
    where the classes present fall apart over pairs of θ_k or faster (a ring crosses every cut
    twice), or where a class present has no pair at θ_k or faster with any other class present
    (the classes that would join it are not in the group); once where, with three replicas or
    more, some device has fewer than two peers at θ_k or faster, twice where it has none."""
    classes, m, D = built.classes, built.model, built.group_size
    levels, rates = _rate_levels(classes)
    R = len(classes)
    seconds = []
    for times in ("once", "twice"):
        seconds.append(m.add_variable(f"chain_{times}_g{g}", size / levels[0]))
    slow = {(n, k): m.add_variable(f"slow_{n}_g{g}_l{k}", 0, 1, pulp.LpInteger)
            for n in (1, 2) for k in range(len(levels) - 1)}
    others: dict[int, pulp.LpVariable] = {}  # [r]: 1 where group g holds a class other than r

    def other_than(r: int) -> pulp.LpVariable:
        if r not in others:
            others[r] = built.model.add_variable(f"others_than_g{g}_c{r}", 0, 1)
            for q in range(R):
                if q != r:
                    built.model += others[r] >= built.present[g, q], f"others_than_g{g}_c{r}_c{q}"
        return others[r]

    for k, level in enumerate(levels[:-1]):
        m += slow[1, k] >= slow[2, k], f"slow_twice_is_once_g{g}_l{k}"
        if k:
            for n in (1, 2):
                m += slow[n, k - 1] >= slow[n, k], f"slow_{n}_staircase_g{g}_l{k}"
        parts = _components(rates, level)
        if len(parts) > 1:
            touched = [m.add_variable(f"part_g{g}_l{k}_p{i}", 0, 1) for i in range(len(parts))]
            for i, part in enumerate(parts):
                for r in part:
                    m += touched[i] >= built.present[g, r], f"part_g{g}_l{k}_p{i}_c{r}"
            for i in range(len(parts)):
                for j in range(i + 1, len(parts)):
                    m += slow[2, k] >= touched[i] + touched[j] - 1, f"apart_g{g}_l{k}_p{i}_p{j}"
        for r in range(R):
            # Class r's devices cut off from every other class present (no pair at θ_k or
            # faster with any of them): the ring enters and leaves them over slower edges. With
            # no such pair at all, r is a part of its own and the "apart" rule says as much.
            near = [q for q in range(R) if q != r and (rates[r, q] >= level or rates[q, r] >= level)]
            if 0 < len(near) < R - 1:
                m += (slow[2, k] >= built.present[g, r] + other_than(r) - 1
                      - pulp.lpSum(built.present[g, q] for q in near)), f"cut_off_g{g}_l{k}_c{r}"
            inside = bool(rates[r, r] >= level)  # NaN (a class of one) compares False
            if classes.sizes[r] >= D and not inside:  # the group could be this class alone, whose pairs are slower
                m += slow[2, k] >= built.present[g, r] - pulp.lpSum(built.present[g, q] for q in range(R) if q != r), \
                    f"alone_g{g}_l{k}_c{r}"
            if D < 3:
                continue
            peers = pulp.lpSum(built.count[g, q] for q in range(R) if q != r and rates[r, q] >= level)
            if inside:
                peers += built.count[g, r] - built.present[g, r]
            m += 2 * slow[1, k] >= 2 * built.present[g, r] - peers, f"one_peer_g{g}_l{k}_c{r}"
            m += slow[2, k] >= built.present[g, r] - peers, f"no_peer_g{g}_l{k}_c{r}"
    for n, var in zip((1, 2), seconds):
        # A chain's last hop starts once the first chunk has crossed the D − 2 hops before it.
        m += var >= (D - 2) * hop_fill_s + size / levels[0], f"chain_{n}_last_hop_g{g}"
        m += var >= size / levels[0] + pulp.lpSum(size * (1 / levels[k + 1] - 1 / levels[k]) * slow[n, k]
                                                  for k in range(len(levels) - 1)), f"chain_{n}_g{g}"
    return seconds[0], seconds[1]


def _hop_fill_s(inputs, size: float) -> float:
    """The least time a chain's first chunk takes over one hop (latency + chunk / lone rate), the
    chunk NCCL's slot (scheduler.runtimes.NCCL_CHUNK_BYTES) or the whole buffer if smaller."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hop = inputs.latency_s + min(NCCL_CHUNK_BYTES, size) / inputs.rate_bytes_per_s
    np.fill_diagonal(hop, np.inf)
    return float(np.min(hop))


def _servers(built: CompositionModel, g: int, D: int) -> dict:
    """Stage g's parameter server: one class present in its group (no cost of its own in the
    bound; the search weighs where it goes with the estimator)."""
    m, R = built.model, len(built.classes)
    server = {r: m.add_variable(f"server_g{g}_c{r}", 0, 1, pulp.LpInteger) for r in range(R)}
    m += pulp.lpSum(server.values()) == (1 if D > 1 else 0), f"one_server_g{g}"
    for r in range(R):
        m += server[r] <= built.present[g, r], f"server_present_g{g}_c{r}"
    return server


# Time left after the model is solved from which the bound solves it again with the sharper
# terms (``time_bound_model(strong=True)``): measured, their MILP took 174 s more on 256 devices
# where the plain one took 26 s (docs/scheduler.md, "Gaps"), so short limits leave it out; and a
# bound within SHARPER_GAP of the best placement is left as it is.
SHARPER_MIN_S = 20.0
SHARPER_GAP = 0.01


def time_bound(inputs, pp: int, dp: int, *, solver: str = "highs", time_limit_s: float = 20.0,
               gap: float = 1e-3, classes: DeviceClasses | None = None,
               start: tuple[list[list[int]], list[int]] | None = None, best_s: float | None = None,
               progress: Callable[[str], None] | None = None) -> TimeBound:
    """Solve the bound MILP; ``start`` = (stage groups in order, each stage's server device), a
    placement the solver may start from (HiGHS: its bound value prunes the search). Where it is
    solved with SHARPER_MIN_S or more of the limit left, the barriers cross wide-area links
    (``_barriers_matter``), its bound is below the pipelines-in-their-class family's (which
    caps it) and more than SHARPER_GAP under ``best_s`` (the best
    placement's seconds so far, if given), it is solved again with the sharper terms in what is
    left (said to ``progress``); the larger of the two proven bounds holds."""
    started = time.perf_counter()
    classes = classes or device_classes(inputs.tables, inputs.kinds)
    floor = barrier_s(inputs.latency_s)
    family = pure_pipelines_bound(inputs, pp, dp, classes, floor) if pp > 1 else None

    def solved(strong: bool, limit_s: float) -> tuple[CompositionModel, dict, bool, float]:
        built, servers = time_bound_model(inputs, pp, dp, classes, crossing=family is not None, strong=strong)
        if start is not None:
            cls = classes.index
            groups, serving = start
            relabel = built.start_from([[sum(cls[d] == r for d in group) for r in range(len(classes))]
                                        for group in groups])
            if dp > 1:
                for g, device in enumerate(serving):
                    for r in range(len(classes)):
                        servers[g][r].setInitialValue(int(relabel[cls[device]] == r))
        optimal, bound = solve(built.model, solver, limit_s, gap)
        if family is not None:  # every placement is in the family or crosses
            infeasible = built.model.status == pulp.LpStatusInfeasible
            bound = family if infeasible else min(family, bound)
            optimal = optimal or infeasible
        return built, servers, optimal, bound if np.isfinite(bound) and bound > 0 else 0.0

    built, servers, optimal, bound = solved(False, time_limit_s)
    left = time_limit_s - (time.perf_counter() - started)
    capped = family is not None and bound >= family  # the family's own bound caps what a sharper MILP adds
    if (optimal and dp > 1 and not capped and left >= SHARPER_MIN_S and _barriers_matter(classes, floor, pp * dp)
            and (best_s is None or bound < best_s * (1 - SHARPER_GAP))):
        if progress is not None:
            progress(f"bound {bound:.3f} s proven; the sharper terms (barrier messages) for up to {left:.0f} s more")
        bound = max(bound, solved(True, left)[3])
    if built.model.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        # The dual bound holds without a placement; the search goes on from its other candidates.
        return TimeBound(groups=None, servers=None, bound=bound, optimal=False, solver_s=time.perf_counter() - started)
    chosen = [max(range(len(classes)), key=lambda r: (servers[g][r].varValue or 0.0, -r)) for g in range(pp)]
    return TimeBound(groups=built.groups(), servers=chosen, bound=bound, optimal=optimal,
                     solver_s=time.perf_counter() - started)
