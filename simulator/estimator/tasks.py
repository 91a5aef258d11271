"""The engine's program timed as tasks where workers share compute (ranks on one host's cores, or
on one GPU), for the analytic estimator: no closed form holds there, so every op of the lowered
program (simulator.lowering.lower) becomes tasks of simulator.cost.sharing.run_tasks, run as the engine runs
them.

- A compute op is a task per rank of its worker, each shared on its device's unit (or at full
  speed on a device of its own); the op is done when all are.
- A comm op posts its sides after its stream's previous op, its deps and its arrivals; a
  nonblocking one is then done, another when its sends have left and its receives arrived.
- A transfer, once both sides are posted, holds its route for its occupancy (a pipeline transfer
  the occupancy the schedule's rates give it; any other its bytes at its max-min share among the
  transfers of its kind: each collective's hops or steps of every stage at once) and arrives its
  latency later; between two ranks of a CPU unit both sides also copy on the unit's cores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from profiler.network.topology import Topology, route_rates
from profiler.trace import Category
from scheduler.placement import Placement
from simulator.cost.job import Job
from simulator.cost.sharing import Task, Unit, run_tasks
from simulator.lowering.program import Op, Program


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskTimes:
    ready: list[list[float]]  # [r][s]: the worker's last backward is done
    synced: list[list[float]]  # [s][r]: its last sync op is done
    step: list[list[tuple[float, float]]]  # [s][r]: its optimizer step
    iteration_s: float
    mean: dict[tuple[int, int], tuple[float, float]]  # worker -> its mean (forward, backward) op


class _Tasks:
    """The task list as it is built, with the index of each op's end and each transfer's sides."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.end_of: dict[int, int] = {}  # op id -> the task that ends it
        self.posted: dict[int, list[int]] = {}  # transfer id -> the post tasks of its sides
        self.sides: dict[int, list[tuple[int, bool]]] = {}  # op's end task -> (transfer, is send)
        self.ranks: dict[int, list[int]] = {}  # compute op id -> its ranks' tasks
        self.pending: list[tuple[int, Op, int | None]] = []  # (task, op, previous task)

    def add(self, task: Task) -> int:
        self.tasks.append(task)
        return len(self.tasks) - 1


def _op_tasks(t: _Tasks, op: Op, devices: tuple[int, ...], unit_of: dict[int, int], previous: int | None) -> int:
    """An op's tasks; returns its end task (filled in later)."""
    if op.is_comm:
        post = t.add(Task(work_s=0.0))
        t.pending.append((post, op, previous))
        for transfer in op.sends + op.recvs:
            t.posted.setdefault(transfer, []).append(post)
        end = t.add(Task(work_s=0.0, after=(post,)))
        if not op.nonblocking:
            t.sides[end] = [(x, True) for x in op.sends] + [(x, False) for x in op.recvs]
    else:
        t.ranks[op.id] = []
        for device in devices:
            rank = t.add(Task(work_s=op.duration_s, unit=unit_of.get(device)))
            t.pending.append((rank, op, previous))
            t.ranks[op.id].append(rank)
        end = t.add(Task(work_s=0.0, after=tuple(t.ranks[op.id])))
    t.end_of[op.id] = end
    return end


def occupancies(program: Program, topology: Topology, c: dict, at: dict) -> dict[int, float]:
    """Each transfer's occupancy of its route: a pipeline transfer its occupancy in ``c`` (keyed
    (direction, boundary, replica)); any other its bytes at its max-min share among the distinct
    routes of its kind (the op label that sends it, within a stage or between two)."""
    sender: dict[int, str] = {}
    for stream in program.streams:
        for op in stream.ops:
            sender.update((x, op.label) for x in op.sends)
    out: dict[int, float] = {}
    kinds: dict[tuple[str, bool], dict[tuple[int, int], list]] = {}
    for x in program.transfers:
        (s1, r), (s2, _) = at[x.src_device], at[x.dst_device]
        if x.category is Category.PIPELINE:
            out[x.id] = c[("f", s1, r) if s2 == s1 + 1 else ("b", s2, r)][0]
        elif x.size_bytes <= 0:
            out[x.id] = 0.0
        else:
            kinds.setdefault((sender[x.id], s1 == s2), {}).setdefault((x.src_device, x.dst_device), []).append(x)
    for routes in kinds.values():
        rates = route_rates([topology.route(*pair) for pair in routes], topology.capacities)
        for pieces, rate in zip(routes.values(), rates):
            out.update((x.id, x.size_bytes / rate) for x in pieces)
    return out


def time_tasks(job: Job, topology: Topology, placement: Placement, program: Program, c: dict,
               units: tuple[list[Unit], dict[int, int]]) -> TaskTimes:
    """The program's ops timed as tasks with the crowded units shared (see the module docstring)."""
    crowded, unit_of = units
    at = {d: (s, r) for s in range(placement.pp) for r in range(placement.dp) for d in placement.devices[s][r]}
    t = _Tasks()
    marks: dict[tuple[int, int], dict[str, int]] = {}
    for stream in program.streams:
        worker, previous = at[stream.devices[0]], None
        mine = marks.setdefault(worker, {})
        for op in stream.ops:
            if stream.main and op.category in (Category.DP_SYNC, Category.OPTIMIZER) and "ready" not in mine:
                mine["ready"] = previous  # the schedule is done: the op before its sync or step
            previous = _op_tasks(t, op, stream.devices, unit_of, previous)
            if op.category is Category.DP_SYNC:
                mine["synced"] = previous
            elif op.category is Category.OPTIMIZER:
                mine["step"] = previous
    occupied = occupancies(program, topology, c, at)
    left, arrived = _transfers(t, program, occupied, topology, crowded, unit_of)
    for task, op, previous in t.pending:
        after = tuple(t.end_of[d] for d in op.deps) + tuple(arrived[x] for x in op.arrivals)
        t.tasks[task] = replace(t.tasks[task], after=after + ((previous,) if previous is not None else ()))
    for end, sides in t.sides.items():
        t.tasks[end] = replace(t.tasks[end], after=t.tasks[end].after + tuple(
            left[x] if is_send else arrived[x] for x, is_send in sides))
    times = run_tasks(t.tasks, [unit.capacity for unit in crowded])
    return _result(placement, program, t, times, marks, at)


def _transfers(t: _Tasks, program: Program, occupied: dict[int, float], topology: Topology,
               crowded: list[Unit], unit_of: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """Each transfer's tasks once both its sides are posted; (its 'left' task, its 'arrived' task)."""
    left, arrived = {}, {}
    for x in program.transfers:
        sides = tuple(t.posted[x.id])
        network = t.add(Task(work_s=x.startup_s + occupied[x.id], after=sides))
        delay = t.add(Task(work_s=topology.route(x.src_device, x.dst_device).latency_s, after=(network,)))
        unit = unit_of.get(x.src_device)
        copy_s = crowded[unit].copy_s(x.size_bytes) if unit is not None and unit == unit_of.get(x.dst_device) else 0.0
        if copy_s > 0:  # its sender's side and its receiver's copy on the unit's cores too
            copies = [t.add(Task(work_s=copy_s, unit=unit, after=sides, demand=crowded[unit].copy_ranks))
                      for _ in range(2)]
            left[x.id] = t.add(Task(work_s=0.0, after=(network, copies[0])))
            arrived[x.id] = t.add(Task(work_s=0.0, after=(delay, *copies)))
        else:
            left[x.id], arrived[x.id] = network, delay
    return left, arrived


def _result(placement: Placement, program: Program, t: _Tasks, times: list[tuple[float, float]],
            marks: dict, at: dict) -> TaskTimes:
    P, D = placement.pp, placement.dp
    ready = [[0.0] * P for _ in range(D)]
    synced = [[0.0] * D for _ in range(P)]
    step = [[(0.0, 0.0)] * D for _ in range(P)]
    for (s, r), mine in marks.items():
        ready[r][s] = times[mine["ready"]][1] if mine.get("ready") is not None else 0.0
        synced[s][r] = times[mine["synced"]][1] if "synced" in mine else ready[r][s]
        if "step" in mine:
            end = times[mine["step"]][1]
            ranks = [task for task in t.tasks[mine["step"]].after]
            step[s][r] = (min(times[task][0] for task in ranks), end)
    durations: dict[tuple[int, int], dict[Category, list[float]]] = {}
    for stream in program.streams:
        for op in stream.ops:
            if op.category in (Category.FORWARD, Category.BACKWARD) and op.id in t.ranks:
                start = min(times[task][0] for task in t.ranks[op.id])
                durations.setdefault(at[stream.devices[0]], {}).setdefault(op.category, []).append(
                    times[t.end_of[op.id]][1] - start)
    mean = {w: tuple(sum(d.get(k, [0.0])) / max(1, len(d.get(k, ()))) for k in (Category.FORWARD, Category.BACKWARD))
            for w, d in durations.items()}
    return TaskTimes(ready=ready, synced=synced, step=step, iteration_s=max(end for _, end in times), mean=mean)
