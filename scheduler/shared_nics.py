"""The time bound's terms for hosts whose GPUs share one NIC (scheduler.time_bound): the
streaming periods its transfers lengthen, and the sync rings it carries."""

from __future__ import annotations

import math

import numpy as np
import pulp

from scheduler.ilp import CompositionModel


def nic_sync_load(built: CompositionModel, inputs, every: list, iteration: pulp.LpVariable,
                   final: list[float]) -> None:
    """A host of several GPUs behind one NIC (a class on one host) that holds part of a stage
    (never all of it: no more than D − 2 devices) passes the stage's ring through its NIC: the
    reduce and the broadcast together cross it at least once each way and three times in all
    where it holds two replicas or more, each crossing the whole buffer, and no sooner than the
    stage is ready; stages are ready in reverse order, stage 0 last."""
    m, classes, hosts, D = built.model, built.classes, inputs.hosts, built.group_size
    sizes = inputs.grad_bytes
    for r, members in enumerate(classes.members):
        home = {hosts[d] for d in members}
        if len(home) > 1 or len(members) < 2 or len(members) > D - 2:
            continue
        away = [d for d in range(len(hosts)) if hosts[d] not in home]
        capacity = []
        for pairs in ([(a, b) for a in members for b in away], [(b, a) for a in members for b in away]):
            common = common_resources(inputs, pairs)
            capacity.append(min(inputs.capacities[x] for x in common) if common else math.inf)
        if not all(math.isfinite(c) for c in capacity):
            continue
        twice = {g: built.at_least(g, r, 2) for g in range(len(sizes))}
        for g in range(len(sizes)):
            held = pulp.lpSum(sizes[h] * built.present[h, r] for h in range(g + 1))
            crossings = pulp.lpSum(sizes[h] * (2 * built.present[h, r] + (twice[h] if twice[h] is not None else 0))
                                   for h in range(g + 1))
            for way, c in zip(("out", "in"), capacity):
                m += iteration >= every[g] + held / c + final[g], f"nic_sync_{way}_c{r}_g{g}"
            m += iteration >= every[g] + crossings / sum(capacity) + final[g], f"nic_sync_c{r}_g{g}"


def streaming_ceiling_s(inputs) -> float:
    """No transfer of GPipe's streaming phases takes longer than this in any round of the
    estimator's mean field (simulator.estimator.streaming.streaming_times): a flow always gets at least
    capacity / users of every resource it crosses, and no resource has more users in a phase
    than the GPUs of the host it belongs to (a device sends one transfer a phase and receives one)."""
    hosts = np.asarray(inputs.hosts)
    on_host = np.bincount(hosts)[hosts]
    users = np.where(hosts[:, None] == hosts[None, :], 1, np.maximum(on_host[:, None], on_host[None, :]))
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = inputs.latency_s + users * inputs.activation_bytes / inputs.rate_bytes_per_s
    np.fill_diagonal(seconds, 0.0)
    return float(np.nanmax(seconds))


def shared_nic_periods(built: CompositionModel, inputs, phase: list[dict], period: pulp.LpVariable, base_s: float,
                        ceiling_s: float, tag: str) -> None:
    """period ≥ τ(k) once k of a phase's transfers (``phase[h][src class, dst class]``, one dict
    per boundary) leave, or enter, the host of a class through a resource x of capacity C that all
    of them cross (its NIC). The estimator cuts each transfer on x to max(C − (k−1)·bytes / the
    other pipelines' periods, C / k) and occupies the link for bytes / that; no period is ever
    longer than ``ceiling_s`` (the slowest compute, or streaming_ceiling_s), so every one of those
    transfers occupies its link at least τ(k) = bytes / max(C − (k−1)·bytes / ceiling, C / k)."""
    m, classes, hosts = built.model, built.classes, inputs.hosts
    size = inputs.activation_bytes
    for r, members in enumerate(classes.members):
        home = {hosts[d] for d in members}
        if len(home) > 1 or len(members) < 2:
            continue
        away = [d for d in range(len(hosts)) if hosts[d] not in home]
        if not away:
            continue
        outside = [q for q, others in enumerate(classes.members) if all(hosts[d] not in home for d in others)]
        for way, pairs, key in (("out", [(a, b) for a in members for b in away], lambda q: (r, q)),
                                ("in", [(b, a) for a in members for b in away], lambda q: (q, r))):
            common = common_resources(inputs, pairs)
            if not common:
                continue
            capacity = min(inputs.capacities[x] for x in common)
            steps, last = [], base_s
            for k in range(1, len(members) + 1):
                tau = size / max(capacity - (k - 1) * size / ceiling_s, capacity / k)
                if tau > last:
                    steps.append((k, tau))
                    last = tau
            if not steps:
                continue
            users = pulp.lpSum(flows[key(q)] for flows in phase for q in outside if key(q) in flows)
            rises, last = [], base_s
            for k, tau in steps:
                shared = m.add_variable(f"{tag}_{way}_c{r}_k{k}", 0, 1, pulp.LpInteger)
                m += len(members) * shared >= users - (k - 1), f"{tag}_{way}_c{r}_k{k}"
                rises.append((tau - last) * shared)
                last = tau
            m += period >= base_s + pulp.lpSum(rises), f"{tag}_{way}_period_c{r}"


def common_resources(inputs, pairs) -> set[int]:
    """The resources every one of these device pairs' routes crosses."""
    common: set[int] | None = None
    for a, b in pairs:
        common = set(inputs.resources(a, b)) if common is None else common & set(inputs.resources(a, b))
        if not common:
            return set()
    return common or set()
