"""The bound over one family of placements exactly enough: every pipeline inside one twin class.

Where every class holds whole pipelines (its size a multiple of the stages, a region of 8 GPUs
on the world-wide cluster), the placements whose pipelines all stay inside their class differ
only in the order of the pipelines (the classes the replicas' positions hold: the rank order of
the barriers and the rings of the syncs) and in the servers: twins are interchangeable. The
class-count MILP sees such a placement as one pattern and bounds its barriers and rings without
their order (scheduler.time_bound); here every order is timed, so the family's bound follows
what the estimator does with it:

- readiness: each round's forward on the slowest pipeline (a barrier after it holds every rank),
  the backward of the rounds before on it, the barriers after the forward halves as their
  longest path from the last stage's ranks (all entering at once: the pipelines are alike) to
  that pipeline's last rank, then each replica's own last backward;
- the sync: each stage's reduce and broadcast around its ring in that order, the server where
  they end soonest (scheduler.candidates.ring_seconds), from the earliest replica's readiness;
- the last barrier: its longest path from the ranks of the stage whose sync ends it.

The barriers are timed this way only where every class's pipelines cost alike (the same links
inside each class); else each barrier counts its floor (scheduler.time_bound.barrier_s).
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.candidates import EXHAUSTIVE_ORDERS, dissemination, ring_seconds
from scheduler.classes import DeviceClasses


def pure_counts(classes: DeviceClasses, pp: int, dp: int) -> list[int] | None:
    """Pipelines per class where every class holds whole pipelines (and there are dp of them)."""
    if any(size % pp for size in classes.sizes):
        return None
    counts = [size // pp for size in classes.sizes]
    return counts if sum(counts) == dp else None


def pipeline_orders(counts: list[int]) -> np.ndarray | None:
    """Every order of the pipelines' classes up to a turn of the ring (the first pipeline is of
    the first class present), or None if there are more than EXHAUSTIVE_ORDERS."""
    left = list(counts)
    first = next(c for c, n in enumerate(left) if n)
    left[first] -= 1
    total = math.factorial(sum(left))
    for n in left:
        total //= math.factorial(n)
    if total > EXHAUSTIVE_ORDERS:
        return None
    orders: list[tuple[int, ...]] = []

    def extend(prefix: list[int]) -> None:
        if not any(left):
            orders.append((first, *prefix))
            return
        for c, n in enumerate(left):
            if n:
                left[c] -= 1
                extend(prefix + [c])
                left[c] += 1

    extend([])
    return np.array(orders)


def pure_pipelines_bound(inputs, pp: int, dp: int, classes: DeviceClasses, floor_s: float) -> float | None:
    """The least the estimator gives any placement of the family (see the module docstring), or
    None where there is no such family or too many orders to time. ``floor_s``: the least a
    barrier costs a rank (scheduler.time_bound.barrier_s)."""
    counts = pure_counts(classes, pp, dp)
    if counts is None or dp < 2:
        return None
    orders = pipeline_orders(counts)
    if orders is None:
        return None
    P, M, G = pp, inputs.micro_batches, inputs.rounds
    present = [c for c, n in enumerate(counts) if n]
    lat, rate = classes.latency_s, classes.bandwidth_bytes_per_s
    crossing = {c: lat[c, c] + inputs.activation_bytes / rate[c, c] for c in present}  # a hop inside the class
    busy = {c: inputs.activation_bytes / rate[c, c] for c in present}
    last = M - ((G - 1) * M) // G  # micro-batches of the last round (scheduler.runtimes.accumulation_rounds)
    early = (M - G) - (last - 1)
    f_max, b_max, b_tail = inputs.forward_period_s, inputs.backward_period_s, inputs.backward_tail_s
    forward = {c: max(f_max, busy[c]) for c in present}
    backward = {c: [max(b, busy[c]) if g < P - 1 else b for g, b in enumerate(b_max)] for c in present}
    fill_f = {c: inputs.forward_total_s + (P - 1) * crossing[c] for c in present}
    fill_b = {c: [b_tail[g] + (P - 1 - g) * crossing[c] for g in range(P)] for c in present}
    alike = len({(crossing[c], busy[c]) for c in present}) == 1
    # No pipeline's last forward ends sooner (each barrier before it holds every rank that long).
    forwards_end = np.max([G * fill_f[c] + (M - G) * forward[c] + (G - 1) * fill_b[c][0] + early * backward[c][0]
                           for c in present])
    here, there = orders, np.roll(orders, -1, axis=1)
    syncs = [ring_seconds(inputs.grad_bytes[g], lat[here, there], rate[here, there])[0] for g in range(P)]
    slowest = [max(G * (fill_f[c] + fill_b[c][g]) + (M - G) * (forward[c] + backward[c][g]) for c in present)
               for g in range(P)]
    own = [min(fill_b[c][g] + (last - 1) * backward[c][g] for c in present) for g in range(P)]

    def bound(rows: np.ndarray, mid_every: np.ndarray, mid_slowest: np.ndarray, finals: list[np.ndarray]) -> np.ndarray:
        out = np.full(len(rows), -np.inf)
        for g in range(P):
            step = 0.0 if inputs.offloaded else inputs.optimizer_s[g]
            out = np.maximum(out, forwards_end + G * mid_every + own[g] + syncs[g][rows] + step + finals[g])
            if inputs.offloaded:
                out = np.maximum(out, slowest[g] + (G - 1) * mid_every + mid_slowest + inputs.optimizer_s[g] + finals[g])
        return out

    every = np.arange(len(orders))
    floor = np.full(len(orders), floor_s)
    floors = bound(every, floor, floor, [floor] * P)  # each barrier at its floor: valid, and no higher
    if not alike:
        return float(floors.min())
    best = np.inf
    for rows in np.array_split(np.argsort(floors, kind="stable"), max(1, len(orders) // 256)):
        if floors[rows[0]] >= best:
            break  # no order left whose floors could beat the best timed one
        ranks = np.repeat(orders[rows], P, axis=1)  # rank r·P + s holds a device of its pipeline's class
        last_stage = _barrier_from(ranks, lat, P - 1, P)[:, P - 1::P]  # the last stage's ranks at once
        finals = [_barrier_from(ranks, lat, g, P).max(axis=1) for g in range(P)]
        best = min(best, float(bound(rows, last_stage.min(axis=1), last_stage.max(axis=1), finals).min()))
    return best


def _barrier_from(ranks: np.ndarray, latency_s: np.ndarray, stage: int, pp: int) -> np.ndarray:
    """Each rank's leaving time of the barrier with the ranks of ``stage`` entering at 0 and no
    other rank holding anybody up: its longest path from them, rank to rank by the rounds'
    messages (scheduler.candidates.dissemination)."""
    entries = np.full(ranks.shape, -np.inf)
    entries[:, stage::pp] = 0.0
    return dissemination(ranks, latency_s, entries)
