"""Compute that several devices of a cluster share: ranks on one host's CPU cores, or ranks on
one GPU.

A *unit* is what they share, with a capacity counted in ranks running at full speed: a host's
(or its machine's) ``cpu_cores`` over the intra-op threads each rank computes with (the
profile's ``threads``: a rank is timed alone with that many threads), or 1 for a GPU that several
ranks share. The units process-share: while n ranks compute on a unit of capacity c, each runs at
min(1, c / n) of its speed alone (each rank of a tensor-parallel worker counts; the worker's op
ends with its slowest rank). Measured on this project's 2-core machine (``python
benchmarks/bench_validation.py sharing``): 1, 2, 3 and 4 one-thread processes each doing a
gpt-small layer's forward and backward ran at a mean 1.00, 1.01, 0.64 and 0.48 of the speed of one
alone, against min(1, 2/n) = 1, 1, 0.67, 0.5. Ranks sharing a GPU are modelled the same way; that
has not been measured (no GPU was at hand).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from profiler.cluster import Cluster
from profiler.profile import Profile
from simulator.compute import profile_for


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    name: str
    capacity: float  # ranks at full speed at once
    devices: tuple[int, ...]


def shared_units(cluster: Cluster, profiles: tuple[Profile, ...] = ()) -> tuple[Unit, ...]:
    """The units on which more devices may compute at once than run at full speed; a device
    belongs to at most one."""
    members: dict[str, list[int]] = {}
    capacity: dict[str, float] = {}
    hosts = {host.name: host for host in cluster.hosts}
    for device in cluster.devices:
        host = hosts[device.host]
        if device.gpu_index is not None:
            name = f"{host.name}:gpu{device.gpu_index}"
            capacity[name] = 1.0
        elif host.cpu_cores is not None and device.gpu == "CPU":
            profile = profile_for(device.gpu, profiles)
            threads = profile.threads if profile is not None and profile.threads > 0 else 1
            name = f"{host.machine or host.name}:cpu"
            capacity[name] = host.cpu_cores / threads
        else:
            continue
        members.setdefault(name, []).append(device.id)
    return tuple(Unit(name=name, capacity=capacity[name], devices=tuple(devices))
                 for name, devices in members.items() if len(devices) > capacity[name])


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A piece of work for ``run_tasks``: ``work_s`` at full speed on ``unit`` (an index into the
    capacities; None: on a device of its own, at full speed) by one rank, once every task in
    ``after`` has ended and not before ``release_s``."""

    work_s: float
    unit: int | None = None
    after: tuple[int, ...] = ()
    release_s: float = 0.0


def run_tasks(tasks: list[Task], capacities: list[float]) -> list[tuple[float, float]]:
    """(start, end) of each task, the units process-shared as the engine shares them: while k
    tasks run on a unit of capacity c each progresses at min(1, c / k). RuntimeError if some
    tasks wait for each other in a cycle."""
    count = len(tasks)
    children: list[list[int]] = [[] for _ in range(count)]
    waiting = [0] * count
    for index, task in enumerate(tasks):
        for before in task.after:
            children[before].append(index)
        waiting[index] = len(task.after)
    start, end = [0.0] * count, [0.0] * count
    released = [task.release_s for task in tasks]
    pending = [(task.release_s, index) for index, task in enumerate(tasks) if not task.after]
    heapq.heapify(pending)
    own: list[tuple[float, int]] = []  # (end, task) of tasks on devices of their own
    active: list[dict[int, float]] = [{} for _ in capacities]  # per unit: task -> work left
    now, done = 0.0, 0
    while done < count:
        speeds = [min(1.0, capacity / len(running)) if running else 0.0
                  for capacity, running in zip(capacities, active)]
        next_s = min(pending[0][0] if pending else math.inf, own[0][0] if own else math.inf,
                     *(now + min(running.values()) / speed for speed, running in zip(speeds, active) if running))
        if next_s == math.inf:
            raise RuntimeError(f"{count - done} tasks wait for each other in a cycle")
        # Those due by next_s end there (a relative tolerance: far from 0, ``now`` can be too
        # coarse a float to step by what such a task has left).
        due = next_s + 1e-12 * max(1.0, abs(next_s))
        finished = []
        for speed, running in zip(speeds, active):
            for task in list(running):
                if now + running[task] / speed <= due:
                    del running[task]
                    finished.append(task)
                else:
                    running[task] -= speed * (next_s - now)
        now = next_s
        while own and own[0][0] <= now:
            finished.append(heapq.heappop(own)[1])
        for task in finished:
            end[task] = now
            done += 1
            for child in children[task]:
                released[child] = max(released[child], now)
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(pending, (released[child], child))
        while pending and pending[0][0] <= now:
            _, task = heapq.heappop(pending)
            start[task] = now
            unit = tasks[task].unit
            if tasks[task].work_s <= 0:
                heapq.heappush(own, (now, task))
            elif unit is None:
                heapq.heappush(own, (now + tasks[task].work_s, task))
            else:
                active[unit][task] = tasks[task].work_s
    return list(zip(start, end))

