"""Routes through the network model: which shared resources a transfer crosses.

The engine's network is a fluid max-min fair-share model (the steady state of TCP and NCCL
flows sharing bottlenecks): every resource (a host's NIC egress, a host's NIC ingress, a
sender's egress class to a region, a GPU's NVLink port, ...) has a capacity, every active flow
gets a max-min fair share of each resource it crosses, capped by its own ``flow_cap``
(e.g. TCP window / RTT), and its last byte is delivered ``latency_s`` after it leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    resources: tuple[int, ...]  # indices into Network.capacities_bytes_per_s
    flow_cap_bytes_per_s: float  # per-flow ceiling; math.inf where there is none
    latency_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """Resources and the route between every ordered pair of devices (src != dst)."""

    resource_names: tuple[str, ...]
    capacities_bytes_per_s: tuple[float, ...]
    routes: dict[tuple[int, int], Route]

    def __post_init__(self) -> None:
        if len(self.resource_names) != len(self.capacities_bytes_per_s):
            raise ValueError("resource_names and capacities_bytes_per_s differ in length")
        for name, cap in zip(self.resource_names, self.capacities_bytes_per_s):
            if not cap > 0:
                raise ValueError(f"resource {name!r} has non-positive capacity {cap}")

    def route(self, src: int, dst: int) -> Route:
        return self.routes[(src, dst)]

# Relative slack when deciding which resources are bottlenecked at the current fill level, so
# that ties computed in different orders freeze together instead of in two rounds.
_TIE_FRACTION = 1e-12


def max_min_rates(
    flows: Sequence[tuple[tuple[int, ...], float]], capacities_bytes_per_s: Sequence[float]
) -> list[float]:
    """Max-min fair rates by progressive filling.

    ``flows`` are (distinct resource indices, per-flow cap) pairs. Each round raises all
    unfrozen flows to the lowest level at which a resource saturates or a flow reaches its cap,
    and freezes the flows that stop there. Every round freezes at least one flow, so it ends in
    len(flows) rounds.
    """
    left, users = _resource_users(flows, capacities_bytes_per_s)
    count = {resource: len(members) for resource, members in users.items()}
    capped = sorted((cap, index) for index, (_, cap) in enumerate(flows) if cap < math.inf)
    next_capped = 0
    rates: list[float | None] = [None] * len(flows)  # None while unfrozen
    unfrozen = len(flows)
    while unfrozen:
        while next_capped < len(capped) and rates[capped[next_capped][1]] is not None:
            next_capped += 1
        level = capped[next_capped][0] if next_capped < len(capped) else math.inf
        for resource, n in count.items():
            if left[resource] / n < level:
                level = left[resource] / n
        if level == math.inf:
            raise ValueError("a flow has neither a resource nor a finite per-flow cap")
        threshold = level * (1.0 + _TIE_FRACTION)
        stopped = []
        while next_capped < len(capped) and capped[next_capped][0] <= threshold:
            stopped.append(capped[next_capped][1])
            next_capped += 1
        for resource, n in count.items():
            if left[resource] / n <= threshold:
                stopped.extend(users[resource])
        for index in stopped:
            if rates[index] is not None:
                continue  # frozen earlier, or on two bottlenecks at once
            resources, cap = flows[index]
            rate = rates[index] = level if level < cap else cap
            unfrozen -= 1
            for resource in resources:
                remaining = left[resource] - rate
                left[resource] = remaining if remaining > 0.0 else 0.0
                if count[resource] == 1:
                    del count[resource]  # no unfrozen flow left on it
                else:
                    count[resource] -= 1
    return rates  # type: ignore[return-value]  # all frozen by now


def _resource_users(
    flows: Sequence[tuple[tuple[int, ...], float]], capacities_bytes_per_s: Sequence[float]
) -> tuple[dict[int, float], dict[int, list[int]]]:
    """Capacity and flow indices of each resource that some flow crosses."""
    left: dict[int, float] = {}
    users: dict[int, list[int]] = {}
    for index, (resources, _cap) in enumerate(flows):
        for resource in resources:
            members = users.get(resource)
            if members is None:
                users[resource] = [index]
                left[resource] = capacities_bytes_per_s[resource]
            elif members[-1] == index:
                raise ValueError(f"flow {index} lists resource {resource} twice")
            else:
                members.append(index)
    return left, users
