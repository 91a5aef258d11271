"""Fluid max-min model of communication phases, for the analytic estimator.

Groups of flows (say, the gradient sync of each stage) run phases in sequence: a group's next
phase starts when every flow of its current phase has been delivered. All flows in flight share
resources max-min fairly; rates are recomputed whenever a flow starts or finishes. This is the
engine's network model without its streams and ops, cheap enough for a search loop.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from profiler.network.routes import Route
from profiler.network.topology import route_rates


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    routes: tuple[Route, ...]
    sizes_bytes: tuple[float, ...]
    # Absolute earliest start of each flow (both its ends must be ready); empty: when the phase starts.
    not_before_s: tuple[float, ...] = ()
    # Each flow starts this long after the phase does (a chain's hop after the chunks before it); empty: at once.
    delays_s: tuple[float, ...] = ()


def fluid_finish_s(routes: list[Route], sizes: list[float], capacities: list[float]) -> list[float]:
    """Delivery time of each flow (last byte + its route's latency), all starting at 0."""
    n = len(routes)
    remaining = list(sizes)
    done = [route.latency_s for route in routes]
    active = [i for i in range(n) if remaining[i] > 0]
    now = 0.0
    while active:
        rates = route_rates([routes[i] for i in active], capacities)
        step = min(remaining[i] / rate for i, rate in zip(active, rates))
        now += step
        still = []
        for i, rate in zip(active, rates):
            remaining[i] -= rate * step
            if remaining[i] <= 1e-9 * sizes[i]:
                done[i] = now + routes[i].latency_s
            else:
                still.append(i)
        active = still
    return done


def fluid_phases_s(starts: list[float], phases: list[list[Phase]], capacities: list[float]) -> list[float]:
    """When each group's last phase is delivered; group g starts its first phase at starts[g]."""
    finish = list(starts)
    next_phase = [0] * len(phases)
    outstanding = [0] * len(phases)
    launches = [(start, g) for g, start in enumerate(starts)]
    heapq.heapify(launches)
    deliveries: list[tuple[float, int]] = []
    pending: list[tuple[float, int, list]] = []  # flows waiting for their own start
    active: list[list] = []  # [route, remaining bytes, group, size]
    now, rates, changed = 0.0, [], False
    while launches or deliveries or active or pending:
        if changed:  # the shares change only when a flow starts or ends
            rates, changed = route_rates([f[0] for f in active], capacities) if active else [], False
        byte_done = min((f[1] / r for f, r in zip(active, rates)), default=math.inf)
        candidates = [now + byte_done, launches[0][0] if launches else math.inf,
                      deliveries[0][0] if deliveries else math.inf, pending[0][0] if pending else math.inf]
        later = max(min(candidates), now)
        for flow, rate in zip(active, rates):
            flow[1] -= rate * (later - now)
        now = later
        still = []
        for flow in active:
            if flow[1] <= 1e-9 * max(1.0, flow[3]):
                heapq.heappush(deliveries, (now + flow[0].latency_s, flow[2]))
            else:
                still.append(flow)
        changed = changed or len(still) < len(active)
        active = still
        while deliveries and deliveries[0][0] <= now:
            _, g = heapq.heappop(deliveries)
            outstanding[g] -= 1
            if outstanding[g] == 0:
                heapq.heappush(launches, (now, g))
        while launches and launches[0][0] <= now:
            _, g = heapq.heappop(launches)
            if next_phase[g] == len(phases[g]):
                finish[g] = now
                continue
            phase = phases[g][next_phase[g]]
            next_phase[g] += 1
            outstanding[g] = len(phase.routes)
            if not phase.routes:
                heapq.heappush(launches, (now, g))
            for i, (route, size) in enumerate(zip(phase.routes, phase.sizes_bytes)):
                start = max(phase.not_before_s[i] if phase.not_before_s else now,
                            now + (phase.delays_s[i] if phase.delays_s else 0.0))
                if start > now:
                    heapq.heappush(pending, (start, len(pending) + len(active), [route, size, g, size]))
                else:
                    active.append([route, size, g, size])
                    changed = True
        while pending and pending[0][0] <= now:
            active.append(heapq.heappop(pending)[2])
            changed = True
    return finish
