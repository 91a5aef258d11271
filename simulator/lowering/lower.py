"""Lower a placement of a job into the engine's program: every stream's ops in order.

Megatron (blocking p2p, 1F1B): one stream per worker; each batched isend/irecv is a comm op the
stream waits on; after the schedule the ring all-reduce of the gradients, the tied embedding's,
and the optimizer step, all on that stream.

The study's runtime (pipeline_parallel/dist_gpipe_pipeline_async.py, docs/facts.md §4): per worker a
compute stream, a send and a receive stream, and a data-parallel stream. The micro-batches run in
gradient-accumulation rounds; each round is every forward, a barrier across all ranks (gloo's, on
the compute stream's host thread), every backward. A round's receives are all posted when it
starts (the host enqueues them far ahead of the GPU, and NCCL's proxy takes the data as it comes),
so a link streams one transfer after another; each forward or backward waits for its input to
arrive. After the last round the data-parallel stream syncs the stage's gradients once the last
backward is done, and the optimizer step runs on the compute stream: after the sync, or, with the
fp32 master weights offloaded, on the host at once (its copies do not wait for the sync's stream).
The iteration ends with one more barrier, after every stream is done (torch.cuda.synchronize()).
The runtime's default profiling (--profiling tidy_profiling) synchronises the device after every
forward and backward half, so the barrier, the next round, the sync and the step also wait until
the worker's sends have left.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from profiler.network.topology import Topology
from profiler.trace import Category
from scheduler.placement import Placement, Schedule, Sync
from scheduler.runtimes import ties_embedding
from simulator.cost.job import Job, WorkerCost, check_runtime, stage_costs
from simulator.lowering import collectives
from simulator.lowering.collectives import Step
from simulator.lowering.program import Op, Program, Stream, Transfer


@dataclass
class _Builder:
    transfers: list[Transfer] = field(default_factory=list)
    next_op: int = 0

    def op(self, category: Category, label: str, **kwargs) -> Op:
        op = Op(id=self.next_op, category=category, label=label, **kwargs)
        self.next_op += 1
        return op

    def transfer(self, src: int, dst: int, size: float, category: Category) -> int:
        self.transfers.append(Transfer(id=len(self.transfers), src_device=src, dst_device=dst,
                                       size_bytes=size, category=category))
        return len(self.transfers) - 1

    def steps(self, steps: list[Step], category: Category, deps: tuple[int, ...] = ()) -> list[Op]:
        """Ops of a member's collective steps; the first also waits for ``deps``. A step that only
        waits for arrivals is a zero-length op."""
        return [self.op(category, step.label, sends=step.sends, recvs=step.recvs, arrivals=step.arrivals,
                        nonblocking=step.nonblocking, deps=deps if i == 0 else ())
                for i, step in enumerate(steps)]


def _p2p(b: _Builder, placement: Placement, micro_batches: int, size: float) -> dict:
    """Transfer ids keyed (direction, stage boundary, replica, micro-batch): one transfer per
    tensor-parallel rank, each 1/t of the activation (Megatron's scatter-gather optimisation)."""
    ids = {}
    for s in range(placement.pp - 1):
        for r in range(placement.dp):
            up, down = placement.devices[s][r], placement.devices[s + 1][r]
            for m in range(micro_batches):
                ids["f", s, r, m] = tuple(b.transfer(u, d, size / placement.tp, Category.PIPELINE)
                                          for u, d in zip(up, down))
                ids["b", s, r, m] = tuple(b.transfer(d, u, size / placement.tp, Category.PIPELINE)
                                          for u, d in zip(up, down))
    return ids


def _compute(b: _Builder, cost: WorkerCost, forward: bool, m: int, arrivals: tuple[int, ...] = ()) -> Op:
    if forward:
        return b.op(Category.FORWARD, f"F{m}", duration_s=cost.forward_s, tp_comm_s=cost.forward_tp_s,
                    arrivals=arrivals)
    return b.op(Category.BACKWARD, f"B{m}", duration_s=cost.backward_s, tp_comm_s=cost.backward_tp_s,
                arrivals=arrivals)


def _one_f_one_b(b: _Builder, placement: Placement, s: int, r: int, M: int, ids: dict, cost: WorkerCost) -> list[Op]:
    """Megatron's non-interleaved schedule with its blocking, batched p2p calls."""
    first, last = s == 0, s == placement.pp - 1
    ops: list[Op] = []

    def comm(label: str, sends: tuple = (), recvs: tuple = ()) -> None:
        if sends or recvs:
            ops.append(b.op(Category.PIPELINE, label, sends=sends, recvs=recvs))

    recv_f = lambda m: () if first else ids["f", s - 1, r, m]
    send_f = lambda m: () if last else ids["f", s, r, m]
    recv_b = lambda m: () if last else ids["b", s, r, m]
    send_b = lambda m: () if first else ids["b", s - 1, r, m]
    warmup = min(placement.pp - s - 1, M)
    for m in range(warmup):
        comm(f"recv F{m}", recvs=recv_f(m))
        ops.append(_compute(b, cost, True, m))
        comm(f"send F{m}", sends=send_f(m))
    if warmup < M:
        comm(f"recv F{warmup}", recvs=recv_f(warmup))
    for i in range(M - warmup):
        fm, bm = warmup + i, i
        ops.append(_compute(b, cost, True, fm))
        comm(f"send F{fm} recv B{bm}", sends=send_f(fm), recvs=recv_b(bm))
        ops.append(_compute(b, cost, False, bm))
        if fm + 1 < M:
            comm(f"send B{bm} recv F{fm + 1}", sends=send_b(bm), recvs=recv_f(fm + 1))
        else:
            comm(f"send B{bm}", sends=send_b(bm))
    for bm in range(M - warmup, M):
        comm(f"recv B{bm}", recvs=recv_b(bm))
        ops.append(_compute(b, cost, False, bm))
        comm(f"send B{bm}", sends=send_b(bm))
    return ops


def _sync_steps(b: _Builder, placement: Placement, job: Job, costs: list[list[WorkerCost]]) -> dict:
    """Sync steps per (stage, replica, tp rank): the data-parallel gradient sync of every stage
    (gradients in the model's precision: Megatron's fp16, the study's model.half()), then
    Megatron's all-reduce of the tied word-embedding gradient between the first and last stage."""
    element = job.training.element_bytes
    out: dict[tuple[int, int, int], list[Step]] = {}
    for s in range(placement.pp):
        size = costs[s][0].params * element
        for t in range(placement.tp):
            members = [placement.devices[s][r][t] for r in range(placement.dp)]
            if len(members) == 1:
                per_member: list[list[Step]] = [[]]
            elif placement.sync is Sync.PS:
                per_member = collectives.reduce_broadcast(b, members, size, placement.server_of(s))
            elif placement.sync is Sync.SHARDED:
                per_member = collectives.sharded(b, members, size)
            else:
                per_member = collectives.ring_allreduce(b, members, size)
            for r, steps in enumerate(per_member):
                out[s, r, t] = list(steps)
    if ties_embedding(placement.runtime, job.model) and placement.pp > 1:
        size = job.model.vocab * job.model.d_model / placement.tp * element
        last = placement.pp - 1
        for r in range(placement.dp):
            for t in range(placement.tp):
                pair = [placement.devices[0][r][t], placement.devices[last][r][t]]
                first_steps, last_steps = collectives.ring_allreduce(b, pair, size)
                out[0, r, t] += first_steps
                out[last, r, t] += last_steps
    return out


def _merged(steps: dict, s: int, r: int, tp: int) -> list[Step]:
    """The tensor-parallel ranks of a worker sync in separate groups at the same time: step k of
    every rank is one step of the worker."""
    count = max(len(steps[s, r, t]) for t in range(tp))
    merged = []
    for k in range(count):
        parts = [steps[s, r, t][k] for t in range(tp) if k < len(steps[s, r, t])]
        merged.append(Step(parts[0].label, sends=tuple(x for p in parts for x in p.sends),
                           recvs=tuple(x for p in parts for x in p.recvs),
                           arrivals=tuple(x for p in parts for x in p.arrivals), nonblocking=parts[0].nonblocking))
    return merged


@dataclass
class _Worker:
    """The streams of one worker of the study's runtime as they are built."""

    main: list[Op] = field(default_factory=list)
    send: list[Op] = field(default_factory=list)
    recv: list[Op] = field(default_factory=list)
    sync: list[Op] = field(default_factory=list)


def _receives(b: _Builder, transfers: list[tuple[str, tuple[int, ...]]], deps: tuple[int, ...]) -> list[Op]:
    """A round's receives of one direction, all posted at once (once ``deps`` are done)."""
    return [b.op(Category.PIPELINE, label, recvs=ids, nonblocking=True, deps=deps if i == 0 else ())
            for i, (label, ids) in enumerate(transfers)]


def _study_round(b: _Builder, placement: Placement, s: int, r: int, span: tuple[int, int], ids: dict,
                 cost: WorkerCost, worker: _Worker, barrier: list[Step]) -> None:
    """One gradient-accumulation round of a worker: its forwards, the barrier, its backwards."""
    first, last = s == 0, s == placement.pp - 1
    micro = range(*span)
    started = _synchronised(worker)
    if not first:
        worker.recv += _receives(b, [(f"recv F{m}", ids["f", s - 1, r, m]) for m in micro], started)
    for m in micro:
        op = _compute(b, cost, True, m, () if first else ids["f", s - 1, r, m])
        if m == span[0] and started:
            op = replace(op, deps=started)
        worker.main.append(op)
        if not last:
            worker.send.append(b.op(Category.PIPELINE, f"send F{m}", sends=ids["f", s, r, m], deps=(op.id,)))
    worker.main += b.steps(barrier, Category.BARRIER, _synchronised(worker))
    if not last:
        worker.recv += _receives(b, [(f"recv B{m}", ids["b", s, r, m]) for m in micro], (worker.main[-1].id,))
    for m in micro:
        op = _compute(b, cost, False, m, () if last else ids["b", s, r, m])
        worker.main.append(op)
        if not first:
            worker.send.append(b.op(Category.PIPELINE, f"send B{m}", sends=ids["b", s - 1, r, m], deps=(op.id,)))


def _synchronised(worker: _Worker) -> tuple[int, ...]:
    """What a device synchronisation after the worker's work so far waits for: its compute stream's
    last op and its last send."""
    return tuple(ops[-1].id for ops in (worker.main, worker.send) if ops)


def _study(b: _Builder, job: Job, placement: Placement, costs: list[list[WorkerCost]], ids: dict,
           steps: dict) -> list[Stream]:
    """Every worker's four streams under the study's runtime."""
    P, D = placement.pp, placement.dp
    rounds = job.rounds(placement)
    ranks = [placement.devices[s][r][0] for r in range(D) for s in range(P)]  # global rank = r·P + s
    barriers = [collectives.barrier(b, ranks, f"barrier {k}") for k in range(len(rounds) + 1)]
    workers = {(s, r): _Worker() for r in range(D) for s in range(P)}
    for k, span in enumerate(rounds):
        for (s, r), worker in workers.items():
            _study_round(b, placement, s, r, span, ids, costs[s][r], worker, barriers[k][r * P + s])
    offloaded = job.offloaded(placement)
    streams = []
    for (s, r), worker in workers.items():
        done = _synchronised(worker)
        worker.sync = b.steps(_merged(steps, s, r, placement.tp), Category.DP_SYNC, done)
        after = done if offloaded or not worker.sync else (worker.sync[-1].id,)
        worker.main.append(b.op(Category.OPTIMIZER, "optimizer", duration_s=costs[s][r].optimizer_s, deps=after))
        everything = tuple(ops[-1].id for ops in (worker.send, worker.sync) if ops)
        worker.main += b.steps(barriers[-1][r * P + s], Category.BARRIER, everything)
        name, group = f"s{s}r{r}", placement.devices[s][r]
        streams.append(Stream(name=name, devices=group, main=True, ops=tuple(worker.main)))
        streams += [Stream(name=f"{name}/{kind}", devices=group, main=False, ops=tuple(ops))
                    for kind, ops in (("send", worker.send), ("recv", worker.recv), ("sync", worker.sync)) if ops]
    return streams


def _megatron(b: _Builder, job: Job, placement: Placement, costs: list[list[WorkerCost]], ids: dict,
              steps: dict) -> list[Stream]:
    """Every worker's one stream under Megatron: the schedule, the syncs, the optimizer step."""
    M = job.micro_batches(placement)
    streams = []
    for s in range(placement.pp):
        for r in range(placement.dp):
            ops = _one_f_one_b(b, placement, s, r, M, ids, costs[s][r])
            ops += b.steps(_merged(steps, s, r, placement.tp), Category.DP_SYNC)
            ops.append(b.op(Category.OPTIMIZER, "optimizer", duration_s=costs[s][r].optimizer_s))
            streams.append(Stream(name=f"s{s}r{r}", devices=placement.devices[s][r], main=True, ops=tuple(ops)))
    return streams


def lower(job: Job, topology: Topology, placement: Placement,
          costs: list[list[WorkerCost]] | None = None) -> Program:
    """The program of one iteration; ``costs`` replaces the computed per-worker costs (tests)."""
    placement.check_layers(job.model.layers)
    check_runtime(placement)
    M = job.micro_batches(placement)
    b = _Builder()
    ids = _p2p(b, placement, M, job.model.activation_bytes(job.training.micro_batch, job.training.precision))
    costs = costs or stage_costs(job, topology, placement)
    steps = _sync_steps(b, placement, job, costs)
    build = _megatron if placement.schedule is Schedule.ONE_F_ONE_B else _study
    return Program(streams=tuple(build(b, job, placement, costs, ids, steps)), transfers=tuple(b.transfers))
