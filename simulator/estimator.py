"""Estimate of one iteration from the schedules' structure, fast enough for a search loop.

It reads the same cost tables as the engine's program (simulator.job) and replaces the event
simulation by the structure of each schedule:
- transfer rates are the max-min fair shares of all transfers a phase keeps in flight at once
  (every pipeline moves in lockstep); a transfer takes latency + bytes / rate;
- GPipe with separate compute / send / receive streams is a flow shop whose machines are the
  stages and the links (a link serialises its transfers: a receive is posted when the previous
  one is delivered). For identical jobs a flow shop finishes after Σ p + (M-1)·max p;
- Megatron's 1F1B with blocking exchanges is timed by its own op order without an event queue
  (simulator.blocking), on a few dozen micro-batches, and its periodic steady state extended;
- the gradient sync of all stages is evaluated together, each phase as a fluid max-min set of
  flows (simulator.fluid), so stages that share a host share its NIC;
- where workers share a compute unit (simulator.sharing: ranks on one host's cores, or on one
  GPU) no closed form holds, so the engine's whole program is timed as tasks with the units
  shared, each pipeline transfer taking the time found above, each sync transfer its share of its
  step's, and a loopback transfer on a CPU unit copying there too (simulator.sharing.run_tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler.placement import Placement, Schedule, Sync
from simulator.blocking import schedule_ends, transfer_windows
from simulator.fluid import Phase, fluid_finish_s, fluid_phases_s
from simulator.job import Job, WorkerCost, check_runtime, stage_costs
from simulator.lower import lower
from simulator.prediction import BREAKDOWN_KEYS
from simulator.program import Category, Op
from simulator.runtime import TRAITS
from simulator.sharing import Task, Unit, run_tasks
from simulator.topology import Topology, route_rates


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    iteration_s: float
    breakdown: dict[str, float]  # as Prediction.breakdown: mean over workers, sums to iteration_s


def _flow_shop(times: list[float], jobs: int) -> float:
    return sum(times) + (jobs - 1) * max(times, default=0.0)


def _transfer_times(job: Job, topology: Topology, placement: Placement, flows: list[tuple],
                    capacities: list[float] | None = None) -> dict:
    """Time of each (direction, boundary, replica) transfer, all of ``flows`` in flight at once;
    the tensor-parallel ranks' pieces go together and the slowest sets the time."""
    size = job.model.activation_bytes(job.training.micro_batch, job.training.precision) / placement.tp
    routes = [topology.route(src, dst) for _, src, dst in flows]
    rates = route_rates(routes, capacities or topology.capacities)
    out: dict = {}
    for (key, _, _), route, rate in zip(flows, routes, rates):
        out[key] = max(out.get(key, 0.0), route.latency_s + size / rate)
    return out


def _streaming_times(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]],
                     direction: str) -> dict:
    """GPipe's transfers of one phase. Every pipeline streams one transfer per boundary per
    period (its slowest stage or link); on a shared resource the other flows take their
    time-average bandwidth, one activation per period each, and never leave a flow less than the
    fair share it would get were they all in flight (a mean-field fixed point, three rounds)."""
    flows = _pipeline_flows(placement, direction)
    size = job.model.activation_bytes(job.training.micro_batch, job.training.precision) / placement.tp
    routes = [topology.route(src, dst) for _, src, dst in flows]
    c = _transfer_times(job, topology, placement, flows)
    compute = [max(getattr(costs[s][r], "forward_s" if direction == "f" else "backward_s")
                   for s in range(placement.pp)) for r in range(placement.dp)]
    for _ in range(3):
        period = [max(compute[r], max((t for (d, _, rr), t in c.items() if rr == r), default=0.0))
                  for r in range(placement.dp)]
        load = [0.0] * len(topology.capacities)
        users = [0] * len(topology.capacities)
        for (key, _, _), route in zip(flows, routes):
            for resource in route.resources:
                load[resource] += size / period[key[2]]
                users[resource] += 1
        updated: dict = {}
        for (key, src, dst), route in zip(flows, routes):
            mine = size / period[key[2]]
            capacities = list(topology.capacities)
            for resource in route.resources:
                full = topology.capacities[resource]
                capacities[resource] = max(full - (load[resource] - mine), full / users[resource])
            rate = route_rates([route], capacities)[0]
            updated[key] = max(updated.get(key, 0.0), route.latency_s + size / rate)
        c = updated
    return c


def _exchange_times(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]]) -> dict:
    """1F1B's blocking exchanges. One boundary's exchange moves both directions of every
    pipeline at once. Whether other boundaries' transfers overlap it depends on how the schedule
    falls into step, so the schedule is timed (simulator.blocking) and the overlap read off it:
    on each shared resource a boundary's flows meet, on average over their time, k flows of
    other boundaries, and are timed with the resource cut to their share n / (n + k). Three
    rounds of this fixed point."""
    both = _pipeline_flows(placement, "f") + _pipeline_flows(placement, "b")
    by_boundary: dict[int, list[tuple]] = {}
    for flow in both:
        by_boundary.setdefault(flow[0][1], []).append(flow)
    c: dict = {}
    for flows in by_boundary.values():
        c |= _transfer_times(job, topology, placement, flows)
    probe = min(job.micro_batches(placement), 4 * placement.pp + 4)
    for _ in range(3 if both else 0):
        meets = _meetings(topology, placement, costs, c, probe, both)
        updated: dict = {}
        for boundary, flows in by_boundary.items():
            capacities = list(topology.capacities)
            for resource, (own, others) in meets.get(boundary, {}).items():
                capacities[resource] *= own / (own + others)
            updated |= _transfer_times(job, topology, placement, flows, capacities)
        c = updated
    return c


def _meetings(topology: Topology, placement: Placement, costs: list[list[WorkerCost]], c: dict, probe: int,
              flows: list[tuple]) -> dict[int, dict[int, tuple[float, float]]]:
    """boundary -> resource -> (its own flows on the resource at once, the time-average number of
    other boundaries' flows it meets there), from the schedule timed over ``probe`` micro-batches."""
    P = placement.pp
    events: dict[int, list[tuple[float, int, int]]] = {}  # resource -> (time, +1/-1, boundary)
    own: dict[tuple[int, int], int] = {}
    timed: dict[tuple, dict[tuple[str, int], list[tuple[float, float]]]] = {}
    by_replica: dict[int, list[tuple]] = {}
    for flow in flows:
        by_replica.setdefault(flow[0][2], []).append(flow)
    crossing: dict[int, set[int]] = {}  # resource -> boundaries whose flows cross it
    for flow, src, dst in flows:
        for resource in topology.route(src, dst).resources:
            crossing.setdefault(resource, set()).add(flow[1])
    # Neighbouring boundaries never overlap (the stage between them exchanges with one, then the
    # other), so only resources that boundaries two or more apart cross can be contended.
    shared = {resource for resource, boundaries in crossing.items() if max(boundaries) - min(boundaries) > 1}
    if not shared:
        return {}
    for r in range(placement.dp):
        forward = tuple(costs[s][r].forward_s for s in range(P))
        backward = tuple(costs[s][r].backward_s for s in range(P))
        transfer_s = {(d, b): c[d, b, r] for d in ("f", "b") for b in range(P - 1)}
        key = (forward, backward, tuple(transfer_s.items()))
        if key not in timed:  # replicas with equal costs fall into the same step
            by_link: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for (d, b, _), window in transfer_windows(list(forward), list(backward), transfer_s, probe).items():
                by_link.setdefault((d, b), []).append(window)
            timed[key] = by_link
        for (flow, src, dst) in by_replica.get(r, ()):
            resources = topology.route(src, dst).resources
            for resource in resources:
                if resource not in shared:
                    continue
                own[flow[1], resource] = own.get((flow[1], resource), 0) + 1
                events.setdefault(resource, []).extend(
                    mark for start, end in timed[key][flow[:2]] for mark in ((start, 1, flow[1]), (end, -1, flow[1])))
    out: dict[int, dict[int, tuple[float, float]]] = {}
    for resource, marks in events.items():
        for boundary, others in _others_met(marks).items():
            out.setdefault(boundary, {})[resource] = (own[boundary, resource], others)
    return out


def _others_met(marks: list[tuple[float, int, int]]) -> dict[int, float]:
    """Sweep (time, +1/-1, boundary) marks of one resource: for each boundary, how many flows of
    other boundaries its flows share the resource with, averaged over its flows' time there."""
    marks.sort()  # at equal times an end (-1) comes before a start
    count: dict[int, int] = {}
    total, last = 0, marks[0][0]
    mine: dict[int, float] = {}
    met: dict[int, float] = {}
    for time, step, b in marks:
        span = time - last
        for boundary, n in count.items():
            if n:
                mine[boundary] = mine.get(boundary, 0.0) + n * span
                met[boundary] = met.get(boundary, 0.0) + n * (total - n) * span
        count[b] = count.get(b, 0) + step
        total += step
        last = time
    return {boundary: met[boundary] / weight for boundary, weight in mine.items() if weight > 0}


def _pipeline_flows(placement: Placement, direction: str) -> list[tuple]:
    flows = []
    for s in range(placement.pp - 1):
        for r in range(placement.dp):
            for up, down in zip(placement.devices[s][r], placement.devices[s + 1][r]):
                src, dst = (up, down) if direction == "f" else (down, up)
                flows.append(((direction, s, r), src, dst))
    return flows


def _gpipe_ready(placement: Placement, costs: list[list[WorkerCost]], c: dict, M: int, r: int) -> list[float]:
    """When each stage of pipeline r may start its sync: its last gradient has left."""
    P = placement.pp
    forward = []
    for s in range(P):
        forward.append(costs[s][r].forward_s)
        if s < P - 1:
            forward.append(c["f", s, r])
    forward_end = _flow_shop(forward, M)
    ready, chain = [0.0] * P, []
    for s in reversed(range(P)):
        chain.append(costs[s][r].backward_s)
        if s > 0:  # the stage is done when its last gradient has been delivered upstream
            chain.append(c["b", s - 1, r])
        ready[s] = forward_end + _flow_shop(chain, M)
    return ready


def _one_f_one_b_ready(placement: Placement, costs: list[list[WorkerCost]], c: dict, M: int, r: int) -> list[float]:
    P = placement.pp
    transfer_s = tuple(((d, b), c[d, b, r]) for d in ("f", "b") for b in range(P - 1))
    return list(schedule_ends(tuple(costs[s][r].forward_s for s in range(P)),
                              tuple(costs[s][r].backward_s for s in range(P)), transfer_s, M))


def _sync_phases(topology: Topology, placement: Placement, size_of: list[float],
                 ready: list[list[float]]) -> list[list[Phase]]:
    """Each stage's parameter-server or sharded sync as phases of flows (the ring has its own
    recurrence); a stage's tensor-parallel ranks sync in separate groups side by side, so their
    flows share each phase. A first-phase flow starts once both its ends are ready."""
    D, out = placement.dp, []
    route = topology.route
    for s in range(placement.pp):
        members = [[(placement.devices[s][r][t], r) for r in range(D)] for t in range(placement.tp)]
        if D == 1:
            out.append([])
            continue
        if placement.sync is Sync.PS:
            k = placement.server_of(s)
            pairs = [[(m[i], m[k]) for m in members for i in range(D) if i != k],
                     [(m[k], m[i]) for m in members for i in range(D) if i != k]]
            chunk = size_of[s]
        else:
            a2a = [(m[i], m[j]) for m in members for i in range(D) for j in range(D) if i != j]
            pairs, chunk = [a2a, a2a], size_of[s] / D
        first = tuple(max(ready[a[1]][s], ready[b[1]][s]) for a, b in pairs[0])
        out.append([Phase(routes=tuple(route(a[0], b[0]) for a, b in phase), sizes_bytes=(chunk,) * len(phase),
                          not_before_s=first if k == 0 else ()) for k, phase in enumerate(pairs)])
    return out


def _ring_sync_end(topology: Topology, placement: Placement, ready: list[list[float]],
                   size_of: list[float]) -> list[float]:
    """When each stage's ring all-reduces end. Every ring edge carries a flow nearly all the
    time, so edges take their max-min share with all rings' edges in flight. Members start when
    their own replica is ready and step as the engine does: member i's step j sends to i+1 once
    both have finished step j-1, and is done when its send and its receive are delivered."""
    D = placement.dp
    edges = [(s, t, i) for s in range(placement.pp) for t in range(placement.tp) for i in range(D)]
    pairs = [(placement.devices[s][i][t], placement.devices[s][(i + 1) % D][t]) for s, t, i in edges]
    routes = [topology.route(a, b) for a, b in pairs] if D > 1 else []
    rates = route_rates(routes, topology.capacities) if routes else []
    edge_s = {key: route.latency_s + size_of[key[0]] / D / rate for key, route, rate in zip(edges, routes, rates)}
    ends = []
    for s in range(placement.pp):
        end = max(ready[r][s] for r in range(D))
        for t in range(placement.tp):
            done = [ready[r][s] for r in range(D)]
            for _ in range(2 * (D - 1) if D > 1 else 0):
                sent = [max(done[i], done[(i + 1) % D]) + edge_s[s, t, i] for i in range(D)]
                done = [max(sent[i], sent[i - 1]) for i in range(D)]
            end = max(end, max(done))
        ends.append(end)
    return ends


def _embedding_sync_s(job: Job, topology: Topology, placement: Placement) -> float:
    traits = TRAITS[placement.runtime]
    if not traits.tied_embedding or placement.pp == 1:
        return 0.0
    size = job.model.vocab * job.model.d_model / placement.tp * traits.grad_bytes_per_param
    pairs = [(placement.devices[0][r][t], placement.devices[-1][r][t]) for r in range(placement.dp)
             for t in range(placement.tp)]
    routes = [topology.route(a, b) for a, b in pairs] + [topology.route(b, a) for a, b in pairs]
    finish = fluid_finish_s(routes, [size / 2] * len(routes), topology.capacities)
    return 2 * max(finish)  # a ring of two: two steps of half the gradient each way


def estimate(job: Job, topology: Topology, placement: Placement,
             costs: list[list[WorkerCost]] | None = None) -> Estimate:
    """The iteration, in closed form (or, where ranks share compute, as timed tasks); ``costs``
    replaces the computed per-worker costs (tests)."""
    placement.check_layers(job.model.layers)
    check_runtime(placement)
    M = job.micro_batches(placement)
    costs = costs or stage_costs(job, topology, placement)
    units = _units_used(placement, job.compute_units)
    c = _pipeline_times(job, topology, placement, costs)
    if units:
        per_replica, synced, steps, mean = _shared_schedule(job, topology, placement, costs, c, units)
        costs = [[replace(cost, forward_s=mean[s, r][0], backward_s=mean[s, r][1],
                          optimizer_s=steps[s][r] - synced[s][r]) for r, cost in enumerate(row)]
                 for s, row in enumerate(costs)]
    else:
        per_replica, stage_synced = _timed(job, topology, placement, costs, c, M)
        synced = [[end] * placement.dp for end in stage_synced]
        steps = [[synced[s][r] + cost.optimizer_s for r, cost in enumerate(row)] for s, row in enumerate(costs)]
    iteration = max(max(row) for row in steps)
    return Estimate(iteration_s=iteration,
                    breakdown=_breakdown(placement, costs, per_replica, synced, M, iteration))


def _pipeline_times(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]]) -> dict:
    """The time of each pipeline transfer, keyed (direction, boundary or stage, replica)."""
    if placement.schedule is Schedule.GPIPE:
        return (_streaming_times(job, topology, placement, costs, "f")
                | _streaming_times(job, topology, placement, costs, "b"))
    return _exchange_times(job, topology, placement, costs)


def _timed(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]], c: dict,
           M: int) -> tuple[list[list[float]], list[float]]:
    """(per replica each stage's readiness for the sync, each stage's end of sync)."""
    ready_of = _gpipe_ready if placement.schedule is Schedule.GPIPE else _one_f_one_b_ready
    per_replica = [ready_of(placement, costs, c, M, r) for r in range(placement.dp)]
    return per_replica, _sync_ends(job, topology, placement, costs, per_replica)


def _sync_ends(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]],
               per_replica: list[list[float]], embedding: bool = True) -> list[float]:
    """When each stage's sync ends, its workers ready as ``per_replica`` says (without
    ``embedding``, the data-parallel sync alone)."""
    P, traits = placement.pp, TRAITS[placement.runtime]
    sizes = [costs[s][0].params * traits.grad_bytes_per_param for s in range(P)]
    if placement.sync is Sync.RING:
        synced = _ring_sync_end(topology, placement, per_replica, sizes)
    else:
        synced = fluid_phases_s([min(r[s] for r in per_replica) for s in range(P)],
                                _sync_phases(topology, placement, sizes, per_replica), topology.capacities)
    embedding = embedding and _embedding_sync_s(job, topology, placement)
    if embedding:
        both = max(synced[0], synced[-1]) + embedding
        synced[0] = synced[-1] = both
    return synced


def _units_used(placement: Placement, units: tuple[Unit, ...]) -> tuple[list[Unit], dict[int, int]] | None:
    """(the units on which the placement puts more ranks than run at full speed, or two ranks
    whose transfers copy on it; the index of each device's there); None where there are none."""
    used = {d for replicas in placement.devices for group in replicas for d in group}
    crowded: list[Unit] = []
    unit_of: dict[int, int] = {}
    for unit in units:
        mine = [d for d in unit.devices if d in used]
        if len(mine) > unit.capacity or (len(mine) > 1 and unit.copy_s(1.0) > 0):
            unit_of.update((d, len(crowded)) for d in mine)
            crowded.append(unit)
    return (crowded, unit_of) if crowded else None


def _shared_schedule(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]], c: dict,
                     units: tuple[list[Unit], dict[int, int]]) -> tuple[list[list[float]], list[list[float]],
                                                                        list[list[float]], dict]:
    """The engine's program (simulator.lower) timed as tasks (simulator.sharing.run_tasks) as the
    engine runs it: a compute op is a task per rank of its worker, each shared on its device's
    unit (or at full speed on a device of its own), and done when all are; a transfer takes its
    time once both its sides are posted (a pipeline transfer its time in ``c``; a sync transfer
    latency + bytes at its max-min share among the transfers its stage's step sends at once), and
    between two ranks of a CPU unit also its two sides' copies on the unit. Stages whose syncs
    meet on the network slow each other: a second pass stretches each stage's sync transfers by
    how much longer the fluid sync model (``_sync_ends``, each stage ready when the first pass's
    last replica is) takes than the stage's steps alone. Returns per replica each stage's
    readiness for the sync, each worker's end of sync, when each worker's optimizer step ends, and
    each worker's mean (forward, backward) duration."""
    crowded, unit_of = units
    program = lower(job, topology, placement, costs=costs)
    at = {d: (s, r) for s in range(placement.pp) for r in range(placement.dp) for d in placement.devices[s][r]}
    tasks: list[Task] = []
    end_of: dict[int, int] = {}  # op id -> the task that ends it
    ranks_of: dict[int, list[int]] = {}  # compute op id -> its ranks' tasks
    posted: dict[int, list[int]] = {}  # transfer id -> the post tasks of its sides
    step_of: dict[int, tuple[int, int]] = {}  # sync transfer id -> (stage, its sender's sync step)
    stages: dict[tuple[int, int], list] = {}  # worker -> [its sync's start (deps, previous), last sync op, optimizer]
    pending: list[tuple[int, Op, int | None]] = []  # (task index, op, previous task) to fill in

    for stream in program.streams:
        worker, previous, step = at[stream.devices[0]], None, 0
        marks = stages.setdefault(worker, [None, None, None]) if stream.main else [None] * 3
        for op in stream.ops:
            if op.category in (Category.DP_SYNC, Category.OPTIMIZER) and marks[0] is None:
                marks[0] = (op.deps, previous)
            if op.is_comm:
                tasks.append(Task(work_s=0.0))  # placeholder: posted after previous and deps
                pending.append((len(tasks) - 1, op, previous))
                for transfer in op.sends + op.recvs:
                    posted.setdefault(transfer, []).append(len(tasks) - 1)
                if op.category is Category.DP_SYNC:
                    step_of.update((transfer, (worker[0], step)) for transfer in op.sends)
                    step += 1
            else:
                ranks_of[op.id] = []
                for device in stream.devices:
                    tasks.append(Task(work_s=op.duration_s, unit=unit_of.get(device)))
                    pending.append((len(tasks) - 1, op, previous))
                    ranks_of[op.id].append(len(tasks) - 1)
            tasks.append(Task(work_s=0.0))  # placeholder: ends after the op's transfers or ranks
            end_of[op.id] = len(tasks) - 1
            previous = end_of[op.id]
            if op.category is Category.DP_SYNC:
                marks[1] = previous
            elif op.category is Category.OPTIMIZER:
                marks[2] = previous
    for index, op, previous in pending:
        after = tuple(end_of[d] for d in op.deps) + ((previous,) if previous is not None else ())
        tasks[index] = replace(tasks[index], after=after)
    network_s = _transfer_s(program, topology, c, at, step_of)
    flows: dict[int, list[int]] = {}
    network_task: dict[int, int] = {}  # transfer id -> its network task
    for t in program.transfers:
        sides = tuple(posted[t.id])
        network_task[t.id] = len(tasks)
        tasks.append(Task(work_s=network_s[t.id], after=sides))
        for side in sides:
            flows.setdefault(side, []).append(len(tasks) - 1)
        unit = unit_of.get(t.src_device)
        copy_s = crowded[unit].copy_s(t.size_bytes) if unit is not None and unit == unit_of.get(t.dst_device) else 0
        for _ in range(2 if copy_s > 0 else 0):  # its sender's side and its receiver's
            tasks.append(Task(work_s=copy_s, unit=unit, after=sides, demand=crowded[unit].copy_ranks))
            for side in sides:
                flows[side].append(len(tasks) - 1)
    for index, op, _ in pending:
        if op.is_comm:
            tasks[end_of[op.id]] = Task(work_s=0.0, after=tuple(flows[index]))
        else:
            tasks[end_of[op.id]] = Task(work_s=0.0, after=tuple(ranks_of[op.id]))
    capacities = [unit.capacity for unit in crowded]

    def ready_of(times: list[tuple[float, float]]) -> list[list[float]]:
        ready = [[0.0] * placement.pp for _ in range(placement.dp)]
        for (s, r), ((deps, previous), _, _) in stages.items():
            ready[r][s] = max((times[task][1] for task in (*(end_of[d] for d in deps),
                                                           *((previous,) if previous is not None else ()))), default=0.0)
        return ready

    times = run_tasks(tasks, capacities)
    ready = ready_of(times)
    # Everyone of a stage ready with its last replica: the fluid model's sync then takes what the
    # network adds, not the wait for a late replica (the tasks already wait for both sides).
    latest = [max(r[s] for r in ready) for s in range(placement.pp)]
    ends = _sync_ends(job, topology, placement, costs, [latest] * placement.dp, embedding=False)
    # Each stage's data-parallel sync steps (not the tied embedding's), each as long as its slowest transfer.
    data_parallel = {t.id: key for t in program.transfers if (key := step_of.get(t.id))
                     and at[t.src_device][0] == at[t.dst_device][0]}
    alone = [0.0] * placement.pp
    steps_s: dict[tuple[int, int], float] = {}
    for transfer, key in data_parallel.items():
        steps_s[key] = max(steps_s.get(key, 0.0), network_s[transfer])
    for (s, _), length in steps_s.items():
        alone[s] += length
    stretch = [max(1.0, (ends[s] - latest[s]) / alone[s]) if alone[s] > 0 else 1.0
               for s in range(placement.pp)]
    if any(x > 1.0 + 1e-9 for x in stretch):
        for transfer, (s, _) in data_parallel.items():
            tasks[network_task[transfer]] = replace(tasks[network_task[transfer]],
                                                    work_s=network_s[transfer] * stretch[s])
        times = run_tasks(tasks, capacities)
        ready = ready_of(times)
    synced = [[0.0] * placement.dp for _ in range(placement.pp)]
    steps = [[0.0] * placement.dp for _ in range(placement.pp)]
    for (s, r), (_, last_sync, optimizer) in stages.items():
        synced[s][r] = times[last_sync][1] if last_sync is not None else ready[r][s]
        steps[s][r] = times[optimizer][1]
    durations: dict[tuple[int, int], dict[Category, list[float]]] = {}
    for stream in program.streams:
        for op in stream.ops:
            if op.category in (Category.FORWARD, Category.BACKWARD) and op.id in ranks_of:
                start = min(times[task][0] for task in ranks_of[op.id])
                durations.setdefault(at[stream.devices[0]], {}).setdefault(op.category, []).append(
                    times[end_of[op.id]][1] - start)
    mean = {w: tuple(sum(d.get(k, [0.0])) / max(1, len(d.get(k, ()))) for k in (Category.FORWARD, Category.BACKWARD))
            for w, d in durations.items()}
    return ready, synced, steps, mean


def _transfer_s(program, topology: Topology, c: dict, at: dict, step_of: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Each transfer's network time: a pipeline transfer its time in ``c``; a sync transfer
    latency + bytes at its max-min share among those of its stage's sync step."""
    out: dict[int, float] = {}
    together: dict[tuple[int, int], list] = {}
    for t in program.transfers:
        if t.id in step_of:
            together.setdefault(step_of[t.id], []).append(t)
            continue
        (s1, r), (s2, _) = at[t.src_device], at[t.dst_device]
        out[t.id] = c[("f", s1, r) if s2 == s1 + 1 else ("b", s2, r)]
    for group in together.values():
        routes = [topology.route(t.src_device, t.dst_device) for t in group]
        for t, route, rate in zip(group, routes, route_rates(routes, topology.capacities)):
            out[t.id] = route.latency_s + t.size_bytes / rate
    return out


def _breakdown(placement: Placement, costs: list[list[WorkerCost]], ready: list[list[float]],
               synced: list[list[float]], M: int, iteration: float) -> dict[str, float]:
    """As the engine counts it: a blocking runtime's worker is inside a pipeline exchange
    whenever its schedule is not computing; a worker is in the sync from its own readiness to its
    end of sync (``synced[s][r]``; waiting for its peers included); the rest is idle."""
    totals = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    blocking = not TRAITS[placement.runtime].overlap_p2p
    workers = 0
    for s, row in enumerate(costs):
        for r, cost in enumerate(row):
            tp = M * (cost.forward_tp_s + cost.backward_tp_s)
            work = M * (cost.forward_s + cost.backward_s)
            totals["compute_s"] += work - tp + cost.optimizer_s
            totals["tp_comm_s"] += tp
            totals["pipeline_s"] += max(0.0, ready[r][s] - work) if blocking else 0.0
            totals["dp_sync_s"] += synced[s][r] - ready[r][s]
            workers += 1
    totals["idle_s"] = workers * iteration - sum(totals.values())
    return {key: value / workers for key, value in totals.items()}
