"""Compute that several devices of a cluster share: ranks on one host's CPU cores, or ranks on
one GPU.

A *unit* is what they share, with a capacity counted in ranks running at full speed: a host's (or
its machine's) ``cpu_cores`` over the intra-op threads each rank computes with (the profile's
``threads``: a rank is timed alone with that many threads), times the share of them that busy cores
deliver (``CPU_BUSY_SHARE``), or 1 for a GPU that several ranks share. The units process-share:
while n ranks compute on a unit of capacity c, each runs at min(1, c / n) of its speed alone (each
rank of a tensor-parallel worker counts; the worker's op ends with its slowest rank). Measured on
this project's 2-core machine (``python benchmarks/bench_validation.py sharing``): 1, 2, 3 and 4
one-thread processes each doing a gpt-small layer's forward and backward ran at a mean 1.00, 1.01,
0.64 and 0.48 of the speed of one alone (a second run: 1.00, 0.94, 0.64, 0.46), against
min(1, 1.9 / n) = 1, 0.95, 0.63, 0.48. Ranks sharing a GPU are modelled the same way (capacity 1);
that has not been measured (no GPU was at hand).

A transfer between two ranks of one CPU unit goes through the machine's loopback, and the kernel
copies its bytes on the same cores, in the sender's thread and in the receiver's: such a transfer is
also work on the unit, two more flows (one a side) that at full speed (the loopback's rate: the
hosts' interconnect bandwidth) keep ``LOOPBACK_COPY_CORES`` busy between them, and share the unit
max-min fairly with the ranks' compute, thread by thread as the kernel schedules. It is delivered
when its network flow and both its sides are done (under `executor run --emulate-network` a slow
link's bytes are copied at once and then held).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from profiler.cluster import Cluster
from profiler.network.routes import max_min_rates
from profiler.profile import Profile
from simulator.cost.compute import profile_for

# Cores one loopback transfer keeps busy at full speed, its two sides together. Measured (``python
# benchmarks/bench_validation.py loopback``: gloo, 32 MB fp32 sends between one-thread processes on
# this project's 2-core machine): one transfer alone moved 1.79 GB/s, two at once 1.25 GB/s each,
# 0.70 of full speed; two transfers that each keep k cores busy share 2 cores at 2 / 2k, so k = 1.43
# (a second run: 1.63 and 1.20 GB/s, k = 1.36).
LOOPBACK_COPY_CORES = 1.43

# What a machine's cores deliver, as a share of their number, once more one-thread ranks than
# cores compute on them (context switches, caches shared by more working sets). Measured (``python
# benchmarks/bench_validation.py sharing``, a gpt-small layer's forward and backward in n processes
# on this project's 2 cores): n x speed / 2 = 0.96 and 0.96 for n = 3 and 4 in one run, 0.96 and
# 0.91 in another; their mean is 0.95. (Two processes on the two cores: 1.01 and 0.94.)
CPU_BUSY_SHARE = 0.95


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    name: str
    capacity: float  # ranks at full speed at once
    devices: tuple[int, ...]
    # A CPU unit's loopback: the rate of a transfer between two of its ranks at full speed, and the
    # capacity (in ranks) each of its two sides then keeps busy; None where transfers take no
    # compute (a GPU).
    copy_bytes_per_s: float | None = None
    copy_ranks: float = 0.0

    def copy_s(self, size_bytes: float) -> float:
        """Seconds at full speed of each side of a loopback transfer of ``size_bytes`` (0: none)."""
        return size_bytes / self.copy_bytes_per_s if self.copy_bytes_per_s and self.copy_ranks else 0.0


def cpu_unit(name: str, cores: int, threads: int, devices: tuple[int, ...], loopback_bytes_per_s: float) -> Unit:
    """The unit of CPU ranks, each computing with ``threads``, that share ``cores`` (delivering
    ``CPU_BUSY_SHARE`` of them) and a loopback of ``loopback_bytes_per_s``."""
    return Unit(name=name, capacity=cores * CPU_BUSY_SHARE / threads, devices=devices,
                copy_bytes_per_s=loopback_bytes_per_s, copy_ranks=LOOPBACK_COPY_CORES / 2 / threads)


def shared_units(cluster: Cluster, profiles: tuple[Profile, ...] = ()) -> tuple[Unit, ...]:
    """The units of two devices or more: ranks sharing a GPU, and CPU ranks sharing a host's (or
    machine's) cores, where they may compute at once and their transfers copy; a device belongs to
    at most one. A CPU unit's loopback is its hosts' slowest interconnect."""
    members: dict[str, list[int]] = {}
    hosts = {host.name: host for host in cluster.hosts}
    for device in cluster.devices:
        host = hosts[device.host]
        if device.gpu_index is not None:
            members.setdefault(f"{host.name}:gpu{device.gpu_index}", []).append(device.id)
        elif host.cpu_cores is not None and device.gpu == "CPU":
            members.setdefault(f"{host.machine or host.name}:cpu", []).append(device.id)
    profile = profile_for("CPU", profiles)
    threads = profile.threads if profile is not None and profile.threads > 0 else 1
    units = []
    for name, devices in members.items():
        first = hosts[cluster.devices[devices[0]].host]
        if first.cpu_cores is None or cluster.devices[devices[0]].gpu != "CPU":
            unit = Unit(name=name, capacity=1.0, devices=tuple(devices))
        else:
            loopback = min(hosts[cluster.devices[d].host].interconnect_bandwidth_bytes_per_s for d in devices)
            unit = cpu_unit(name, first.cpu_cores, threads, tuple(devices), loopback)
        if len(devices) > 1:  # they may compute at once, or copy on the cores; one alone runs as profiled
            units.append(unit)
    return tuple(units)


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A piece of work for ``run_tasks``: ``work_s`` at full speed on ``unit`` (an index into the
    capacities; None: on a device of its own, at full speed), where full speed takes ``demand`` of
    the unit's capacity (1: one rank's compute), once every task in ``after`` has ended and not
    before ``release_s``."""

    work_s: float
    unit: int | None = None
    after: tuple[int, ...] = ()
    release_s: float = 0.0
    demand: float = 1.0


def run_tasks(tasks: list[Task], capacities: list[float]) -> list[tuple[float, float]]:
    """(start, end) of each task, the units shared as the engine shares them: max-min fairly,
    each task's share capped by its demand (while k one-rank tasks run on a unit of capacity c,
    each progresses at min(1, c / k)). RuntimeError if some tasks wait for each other in a
    cycle."""
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
        speeds = [dict(zip(running, fair_speeds(capacity, [tasks[t].demand for t in running])))
                  for capacity, running in zip(capacities, active)]
        next_s = min(pending[0][0] if pending else math.inf, own[0][0] if own else math.inf,
                     *(now + left / speed[task] for speed, running in zip(speeds, active)
                       for task, left in running.items()))
        if next_s == math.inf:
            raise RuntimeError(f"{count - done} tasks wait for each other in a cycle")
        # Those due by next_s end there (a relative tolerance: far from 0, ``now`` can be too
        # coarse a float to step by what such a task has left).
        due = next_s + 1e-12 * max(1.0, abs(next_s))
        finished = []
        for speed, running in zip(speeds, active):
            for task in list(running):
                if now + running[task] / speed[task] <= due:
                    del running[task]
                    finished.append(task)
                else:
                    running[task] -= speed[task] * (next_s - now)
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



def fair_speeds(capacity: float, demands: list[float]) -> list[float]:
    """The speed (of full speed) of each of the works sharing a unit of ``capacity`` max-min fairly,
    each one's share capped by its demand (the capacity it takes at full speed): the network's
    max-min filling (profiler.network.routes) over one resource."""
    rates = max_min_rates([((0,), demand) for demand in demands], [capacity])
    return [rate / demand if demand > 0 else 1.0 for rate, demand in zip(rates, demands)]  # 0: it takes nothing
