"""Collectives as the point-to-point steps their libraries run, for the lowering.

- NCCL's ring all-reduce (Megatron's gradients): 2(k − 1) steps, each member sending size / k to
  the next.
- NCCL's reduce and broadcast (the study's central parameter server, data_parallel/
  dist_dp_central_ps.py): pipelined chains around the ring (NCCL src/device/reduce.h, broadcast.h):
  the reduce runs from the member after the root round to the root, each member adding what it
  receives to its own and passing it on; the broadcast from the root round to the member before it.
  NCCL moves the buffer in chunks of one buffer slot (NCCL_BUFFSIZE 4 MiB over NCCL_STEPS 8;
  REDUCE_CHUNKSTEPS = BROADCAST_CHUNKSTEPS = 1), so every hop carries the buffer once and a hop
  starts as soon as the first chunk has crossed the one before. Here a hop is its first chunk, its
  body and its last chunk: the first chunk goes once the previous hop's has arrived, the body right
  after it, the last chunk once the previous hop's last chunk has arrived.
- The study's sharded server (data_parallel/dist_dp_sharded_ps.py): every member sends each other
  member that member's 1/k of the buffer, sums its own, and sends the sum back: two all-to-alls.
- gloo's barrier (gloo/barrier.cc): a dissemination barrier; in round j member i sends to i + 2^j
  and waits for i − 2^j, ceil(log2 k) rounds.

Each builder returns, per member, the steps it runs in order on its stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from profiler.trace import Category
from scheduler.runtimes import NCCL_CHUNK_BYTES


@dataclass(frozen=True, slots=True)
class Step:
    """One op of a member: its sends, its receives (posted and not waited for, when
    ``nonblocking``), and the transfers whose arrival it waits for first."""

    label: str
    sends: tuple[int, ...] = ()
    recvs: tuple[int, ...] = ()
    arrivals: tuple[int, ...] = ()
    nonblocking: bool = False


class Transfers(Protocol):
    def transfer(self, src: int, dst: int, size: float, category: Category) -> int: ...


def ring_allreduce(b: Transfers, members: list[int], size: float, category: Category = Category.DP_SYNC) -> list[list[Step]]:
    """NCCL's ring all-reduce: 2(k-1) steps, each sending size/k to the next member."""
    k = len(members)
    steps: list[list[Step]] = [[] for _ in range(k)]
    for step in range(2 * (k - 1)):
        ids = [b.transfer(members[i], members[(i + 1) % k], size / k, category) for i in range(k)]
        for i in range(k):
            steps[i].append(Step(f"ring step {step}", sends=(ids[i],), recvs=(ids[i - 1],)))
    return steps


def _pieces(size: float) -> list[float]:
    """A hop's first chunk, body and last chunk (one piece where the buffer is two chunks or less)."""
    return [NCCL_CHUNK_BYTES, size - 2 * NCCL_CHUNK_BYTES, NCCL_CHUNK_BYTES] if size > 2 * NCCL_CHUNK_BYTES else [size]


def chain(b: Transfers, order: list[int], size: float, label: str) -> list[list[Step]]:
    """A pipelined chain from ``order[0]`` to ``order[-1]``; steps by position in the chain."""
    hops = [[b.transfer(order[i], order[i + 1], piece, Category.DP_SYNC) for piece in _pieces(size)]
            for i in range(len(order) - 1)]
    steps: list[list[Step]] = []
    for i in range(len(order)):
        mine: list[Step] = []
        upstream = hops[i - 1] if i > 0 else None
        if upstream:
            mine.append(Step(f"{label} receive", recvs=tuple(upstream), nonblocking=True))
        if i < len(hops):
            out = hops[i]
            first, last = (upstream[0], upstream[-1]) if upstream else (None, None)
            for j, transfer in enumerate(out):
                wait = first if j == 0 else last if j == len(out) - 1 else None
                mine.append(Step(f"{label} send", sends=(transfer,), arrivals=() if wait is None else (wait,)))
        else:
            mine.append(Step(f"{label} done", arrivals=(upstream[-1],)))
        steps.append(mine)
    return steps


def reduce_broadcast(b: Transfers, members: list[int], size: float, root: int = 0) -> list[list[Step]]:
    """NCCL's reduce to ``members[root]`` then its broadcast from there, around the ring of the
    members in order; steps per member."""
    k = len(members)
    around = [(root + 1 + i) % k for i in range(k)]  # the reduce ends at the root
    reduce = chain(b, [members[i] for i in around], size, "ps reduce")
    broadcast = chain(b, [members[(root + i) % k] for i in range(k)], size, "ps broadcast")
    steps: list[list[Step]] = [[] for _ in range(k)]
    for position, member in enumerate(around):
        steps[member] += reduce[position]
    for position in range(k):
        steps[(root + position) % k] += broadcast[position]
    return steps


def sharded(b: Transfers, members: list[int], size: float) -> list[list[Step]]:
    """Each member owns 1/k of the gradient: all-to-all of shards to their owners, then back."""
    k = len(members)
    steps: list[list[Step]] = [[] for _ in range(k)]
    for phase in ("reduce", "gather"):
        ids = {(i, j): b.transfer(members[i], members[j], size / k, Category.DP_SYNC)
               for i in range(k) for j in range(k) if i != j}
        for i in range(k):
            steps[i].append(Step(f"sharded {phase}", sends=tuple(ids[i, j] for j in range(k) if j != i),
                                 recvs=tuple(ids[j, i] for j in range(k) if j != i)))
    return steps


def barrier(b: Transfers, members: list[int], label: str) -> list[list[Step]]:
    """gloo's dissemination barrier over ``members`` in rank order; steps per member."""
    k = len(members)
    steps: list[list[Step]] = [[] for _ in range(k)]
    d = 1
    while d < k:
        ids = [b.transfer(members[i], members[(i + d) % k], 0.0, Category.BARRIER) for i in range(k)]
        for i in range(k):
            steps[i].append(Step(f"{label} {d}", sends=(ids[i],), recvs=(ids[(i - d) % k],)))
        d *= 2
    return steps
