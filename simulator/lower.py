"""Lower a placement of a job into the engine's program: every stream's ops in order.

Megatron (blocking p2p, 1F1B): one stream per worker; each batched isend/irecv is a comm op the
stream waits on. The study's runtime (GPipe): a compute stream plus a send and a receive stream,
so transfers overlap compute; receives are posted ahead in micro-batch order. Both sync the data-
parallel gradients after the last backward, without overlap, then take the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.placement import Placement, Schedule, Sync
from simulator.job import Job, WorkerCost, check_runtime, stage_costs
from simulator.program import Category, Op, Program, Stream, Transfer
from simulator.runtime import TRAITS
from simulator.topology import Topology


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


def _compute(b: _Builder, cost: WorkerCost, forward: bool, m: int, deps: tuple[int, ...] = ()) -> Op:
    if forward:
        return b.op(Category.FORWARD, f"F{m}", duration_s=cost.forward_s, tp_comm_s=cost.forward_tp_s, deps=deps)
    return b.op(Category.BACKWARD, f"B{m}", duration_s=cost.backward_s, tp_comm_s=cost.backward_tp_s, deps=deps)


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


def _gpipe(b: _Builder, placement: Placement, s: int, r: int, M: int, ids: dict,
           cost: WorkerCost) -> tuple[list[Op], list[Op], list[Op]]:
    """(compute, send, receive) streams of GPipe: all forwards, then all backwards."""
    first, last = s == 0, s == placement.pp - 1
    compute, sends, recvs = [], [], []
    for direction, upstream in (("f", not first), ("b", not last)):
        for m in range(M):
            key = ("f", s - 1, r, m) if direction == "f" else ("b", s, r, m)
            got = None
            if upstream:
                got = b.op(Category.PIPELINE, f"recv {direction.upper()}{m}", recvs=ids[key])
                recvs.append(got)
            op = _compute(b, cost, direction == "f", m, deps=(got.id,) if got else ())
            compute.append(op)
            downstream = not last if direction == "f" else not first
            if downstream:
                out = ("f", s, r, m) if direction == "f" else ("b", s - 1, r, m)
                sends.append(b.op(Category.PIPELINE, f"send {direction.upper()}{m}", sends=ids[out], deps=(op.id,)))
    return compute, sends, recvs


# A sync step of one member: (label, transfer ids it sends, transfer ids it receives).
Step = tuple[str, tuple[int, ...], tuple[int, ...]]


def _ring(b: _Builder, members: list[int], size: float) -> list[list[Step]]:
    """NCCL's ring all-reduce: 2(k-1) steps, each sending size/k to the next member."""
    k = len(members)
    steps: list[list[Step]] = [[] for _ in range(k)]
    for step in range(2 * (k - 1)):
        ids = [b.transfer(members[i], members[(i + 1) % k], size / k, Category.DP_SYNC) for i in range(k)]
        for i in range(k):
            steps[i].append((f"ring step {step}", (ids[i],), (ids[i - 1],)))
    return steps


def _parameter_server(b: _Builder, members: list[int], size: float, server: int = 0) -> list[list[Step]]:
    """Member ``server`` serves: every other member sends its gradient, the server sends the
    reduced gradient back. Steps in member order."""
    clients = [m for i, m in enumerate(members) if i != server]
    up = tuple(b.transfer(c, members[server], size, Category.DP_SYNC) for c in clients)
    down = tuple(b.transfer(members[server], c, size, Category.DP_SYNC) for c in clients)
    steps = [[("ps push", (u,), ()), ("ps pull", (), (d,))] for u, d in zip(up, down)]
    steps.insert(server, [("ps reduce", (), up), ("ps broadcast", down, ())])
    return steps


def _sharded(b: _Builder, members: list[int], size: float) -> list[list[Step]]:
    """Each member owns 1/k of the gradient: all-to-all of shards to their owners, then back."""
    k = len(members)
    steps: list[list[Step]] = [[] for _ in range(k)]
    for phase in ("reduce", "gather"):
        ids = {(i, j): b.transfer(members[i], members[j], size / k, Category.DP_SYNC)
               for i in range(k) for j in range(k) if i != j}
        for i in range(k):
            steps[i].append((f"sharded {phase}", tuple(ids[i, j] for j in range(k) if j != i),
                             tuple(ids[j, i] for j in range(k) if j != i)))
    return steps


_SYNC_BUILDERS = {Sync.RING: _ring, Sync.PS: _parameter_server, Sync.SHARDED: _sharded}


def _sync_steps(b: _Builder, placement: Placement, job: Job, costs: list[list[WorkerCost]]) -> dict:
    """Sync steps per (stage, replica, tp rank): the data-parallel gradient sync of every
    stage, then Megatron's all-reduce of the tied word-embedding gradient between the first and
    last stage."""
    traits = TRAITS[placement.runtime]
    out: dict[tuple[int, int, int], list[Step]] = {}
    for s in range(placement.pp):
        size = costs[s][0].params * traits.grad_bytes_per_param
        for t in range(placement.tp):
            members = [placement.devices[s][r][t] for r in range(placement.dp)]
            if len(members) == 1:
                per_member: list[list[Step]] = [[]]
            elif placement.sync is Sync.PS:
                per_member = _parameter_server(b, members, size, placement.server_of(s))
            else:
                per_member = _SYNC_BUILDERS[placement.sync](b, members, size)
            for r, steps in enumerate(per_member):
                out[s, r, t] = list(steps)
    if traits.tied_embedding and placement.pp > 1:
        size = job.model.vocab * job.model.d_model / placement.tp * traits.grad_bytes_per_param
        last = placement.pp - 1
        for r in range(placement.dp):
            for t in range(placement.tp):
                pair = [placement.devices[0][r][t], placement.devices[last][r][t]]
                first_steps, last_steps = _ring(b, pair, size)
                out[0, r, t] += first_steps
                out[last, r, t] += last_steps
    return out


def _tail(b: _Builder, s: int, r: int, tp: int, steps: dict, cost: WorkerCost, after: tuple[int, ...]) -> list[Op]:
    """Sync and optimizer ops after the schedule. The tensor-parallel ranks of the worker sync in
    separate groups at the same time: step k of every rank is one comm op."""
    ops: list[Op] = []
    count = max(len(steps[s, r, t]) for t in range(tp))
    for k in range(count):
        parts = [steps[s, r, t][k] for t in range(tp) if k < len(steps[s, r, t])]
        ops.append(b.op(Category.DP_SYNC, parts[0][0], sends=tuple(x for p in parts for x in p[1]),
                        recvs=tuple(x for p in parts for x in p[2]), deps=after if k == 0 else ()))
    ops.append(b.op(Category.OPTIMIZER, "optimizer", duration_s=cost.optimizer_s, deps=() if ops else after))
    return ops


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
    streams: list[Stream] = []
    for s in range(placement.pp):
        for r in range(placement.dp):
            group, cost, name = placement.devices[s][r], costs[s][r], f"s{s}r{r}"
            if placement.schedule is Schedule.ONE_F_ONE_B:
                main, side = _one_f_one_b(b, placement, s, r, M, ids, cost), {}
            else:
                main, sends, recvs = _gpipe(b, placement, s, r, M, ids, cost)
                side = {"send": sends, "recv": recvs}
            # The sync starts once the last gradient has left for the previous stage.
            after = tuple(ops[-1].id for ops in side.values() if ops)
            main += _tail(b, s, r, placement.tp, steps, cost, after)
            streams.append(Stream(name=name, devices=group, main=True, ops=tuple(main)))
            streams += [Stream(name=f"{name}/{kind}", devices=group, main=False, ops=tuple(ops))
                        for kind, ops in side.items() if ops]
    return Program(streams=tuple(streams), transfers=tuple(b.transfers))
