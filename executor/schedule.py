"""One rank's part of a training iteration: its stage's forwards and backwards over the
micro-batches in the plan's schedule, the pipeline transfers with its neighbours, the gradient
sync with its stage's replicas, and the optimizer step.

Receives are posted ahead, all of an iteration's at its start (gloo's send waits until the peer
has posted its receive: posted late, the pipeline would serialise), and sends are waited for at
the end. NCCL runs the operations between two ranks in the order they are posted, where receives
posted ahead would stall the sends behind them: there each receive is posted when it is needed, a
send together with the receive right after it from the same peer (``Grouped``, as Megatron does).
Every op is recorded as a span (seconds since the iteration began) for the run report and the
trace.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.distributed as dist

from executor.model import Stage
from executor.shaper import Shaper
from scheduler.runtimes import NCCL_CHUNK_BYTES, NCCL_STEPS


@dataclass(slots=True, kw_only=True)
class Role:
    stage: int
    replica: int
    stages: int
    previous: int | None  # the rank holding this pipeline's previous stage
    following: int | None
    group: object | None  # this stage's data-parallel process group (None: one replica)
    peers: list[int]  # the ranks of this stage's replicas (this tensor-parallel rank's), in replica order
    server: int  # the rank that serves this stage's parameter-server sync
    tp: int = 1  # the tensor-parallel degree
    tp_rank: int = 0  # this rank's place in its tensor-parallel group
    tp_group: object | None = None  # this stage replica's tensor-parallel group (None: tp 1)
    tp_members: tuple[int, ...] = ()  # its ranks in the plan's order (tp rank t is the t-th)
    # Megatron's tied word embedding: the group of this pipeline's first and last stage (this tp
    # rank's), on those two stages where there are several; and its two ranks.
    embedding_group: object | None = None
    embedding_peers: list[int] = field(default_factory=list)

    def piece(self, activation: torch.Tensor) -> torch.Tensor:
        """What this rank sends of an activation (or its gradient) the tensor-parallel group holds
        whole: its 1/t of the flattened tensor (Megatron's scatter-gather of pipeline transfers)."""
        return activation if self.tp == 1 else activation.flatten().chunk(self.tp)[self.tp_rank].contiguous()

    def whole(self, piece: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The activation the group's received pieces make, gathered over the group."""
        if self.tp == 1:
            return piece
        pieces = [torch.empty_like(piece) for _ in range(self.tp)]
        dist.all_gather(pieces, piece, group=self.tp_group)
        # A process group numbers its members in ascending rank, the plan by tensor-parallel rank.
        ascending = sorted(self.tp_members)
        return torch.cat([pieces[ascending.index(rank)] for rank in self.tp_members]).view(shape)


@dataclass(slots=True)
class Recorder:
    """Spans of one iteration: (label, category, start_s, end_s), relative to ``origin``. On a
    GPU a span waits for the compute stream before it starts and before it ends (kernels run
    asynchronously: otherwise a span would time their launch); not for the whole device, whose
    NCCL streams may hold receives posted for later."""

    origin: float = 0.0
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)
    doing: str = "starting"  # the op under way, for the message of a rank that fails
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def now(self) -> float:
        """perf_counter once the device has done what it was given."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return time.perf_counter()

    def time(self, label: str, category: str, work: Callable[[], object]) -> object:
        self.doing = label
        begin = self.now()
        result = work()
        self.spans.append((label, category, begin - self.origin, self.now() - self.origin))
        return result


class Inbox:
    """Receives from one peer of the micro-batches ``micro`` (tagged ``tag`` + micro-batch), all
    posted ahead; with a shaper, each with its sender's stamp, and held until the emulated link has
    delivered it."""

    def __init__(self, peer: int | None, shape: tuple[int, ...], micro: range, tag: int, shaper: Shaper | None,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.peer, self.shaper = peer, shaper
        mine = micro if peer is not None else range(0)
        self.tensors = {m: torch.empty(shape, device=device, dtype=dtype) for m in mine}
        self.stamps = {m: torch.empty(2, dtype=torch.float64, device=device) for m in mine} if shaper else {}
        self.pending = {m: dist.irecv(t, peer, tag=tag + m) for m, t in self.tensors.items()}
        self.pending_stamps = {m: dist.irecv(t, peer, tag=STAMPS + tag + m) for m, t in self.stamps.items()}

    def take(self, m: int) -> torch.Tensor:
        self.pending[m].wait()
        if self.shaper:
            self.pending_stamps[m].wait()
            self.shaper.hold(self.peer, self.tensors[m], self.stamps[m])
        return self.tensors[m]


def send(tensor: torch.Tensor, dst: int, tag: int, shaper: Shaper | None) -> list:
    return shaper.send(tensor, dst, tag, STAMPS + tag) if shaper else [dist.isend(tensor, dst, tag=tag)]


# gloo tags: the pipeline's are 0 .. 2M − 1 (an activation m, its gradient M + m); each transfer's
# stamp has its tag plus STAMPS.
STAMPS = 1 << 20


def _sends(sends: list[tuple[torch.Tensor, int]], shaper: Shaper | None, group=None) -> list:
    """The point-to-point operations of ``sends`` (tensor, to); under a shaper each after its stamp."""
    ops = []
    for tensor, dst in sends:
        if shaper:
            ops.append(dist.P2POp(dist.isend, shaper.post(dst, tensor.numel() * tensor.element_size()), dst, group))
        ops.append(dist.P2POp(dist.isend, tensor, dst, group))
    return ops


def exchange(sends: list[tuple[torch.Tensor, int]], receives: list[tuple[tuple[int, ...], int]], shaper: Shaper | None,
             device: torch.device, dtype: torch.dtype, group=None) -> list[torch.Tensor]:
    """One step's sends (tensor, to) and receives (shape, from) as one group of point-to-point
    operations over ``group`` (None: all ranks'), as NCCL needs them: it runs a rank's grouped
    operations in posting order, so a receive posted alone ahead of a send would stall it, and it
    runs a bare isend on a communicator of its own, which a grouped receive never meets. Under a
    shaper each send goes with its stamp just before it, and each received tensor is held until
    its emulated link has delivered it. The received tensors."""
    ops, got, stamps = _sends(sends, shaper, group), [], []
    for shape, src in receives:
        if shaper:
            stamps.append(torch.empty(2, dtype=torch.float64, device=device))
            ops.append(dist.P2POp(dist.irecv, stamps[-1], src, group))
        got.append(torch.empty(shape, dtype=dtype, device=device))
        ops.append(dist.P2POp(dist.irecv, got[-1], src, group))
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    for (_, src), tensor, stamp in zip(receives, got, stamps):
        shaper.hold(src, tensor, stamp)
    return got


class Grouped:
    """The pipeline's sends and receives posted in program order, each receive when it is needed
    and a send together with the receive right after it from the same peer (``grouped``), as
    Megatron does for NCCL: NCCL runs the operations between two ranks in the order they are
    posted, so receives posted ahead would stall the sends behind them."""

    def __init__(self, role: Role, steps: list[tuple[str, str, int]], shape: tuple[int, ...],
                 device: torch.device | None, dtype: torch.dtype, shaper: Shaper | None = None,
                 halves: bool = False) -> None:
        self.role, self.shape, self.device, self.dtype, self.shaper = role, shape, device, dtype, shaper
        self.follows = {}  # send step -> the receive posted with it
        for group in grouped(steps):
            # With ``halves`` (GPipe's, a barrier between) a forward send never waits for a backward receive.
            if len(group) == 2 and not (halves and group[0][1] != group[1][1]):
                self.follows[group[0]] = group[1]
        self.held: dict[tuple[str, str, int], torch.Tensor] = {}  # a send waiting for its receive
        self.handles: list = []  # sends to wait for at the end of the iteration

    def _peer(self, op: str, what: str) -> int:
        return self.role.following if peer_of(op, what) == "following" else self.role.previous

    def send(self, what: str, m: int, tensor: torch.Tensor) -> list:
        step = ("send", what, m)
        if step in self.follows:
            self.held[self.follows[step]] = tensor
        else:  # a group of its own, not waited for: under NCCL a bare isend would take another communicator
            self.handles += dist.batch_isend_irecv(_sends([(tensor, self._peer("send", what))], self.shaper))
        return []

    def take(self, what: str, m: int) -> torch.Tensor:
        step, peer = ("recv", what, m), self._peer("recv", what)
        sends = [(self.held.pop(step), peer)] if step in self.held else []
        return exchange(sends, [(self.shape, peer)], self.shaper, self.device, self.dtype)[0]

    def wait(self) -> None:
        """Wait for the sends so far, once: a gloo send's work counts completions, so waiting for it
        twice waits for a send that never comes."""
        for handle in self.handles:
            handle.wait()
        self.handles.clear()


def run_iteration(stage: Stage, role: Role, ids: torch.Tensor, targets: torch.Tensor, micro_batches: int,
                  schedule: str, activation_shape: tuple[int, ...], scale: float, record: Recorder,
                  shaper: Shaper | None = None, grouped_exchanges: bool = False,
                  rounds: tuple[tuple[int, int], ...] | None = None, barrier: Callable[[str], None] | None = None) -> float:
    """Forwards and backwards of this rank's micro-batches (``ids``/``targets``: its replica's
    share of the batch); returns the sum of its micro-batches' losses (0 before the last stage).
    Receives are posted ahead (gloo), or with ``grouped_exchanges`` in program order (NCCL:
    ``Grouped``). GPipe runs ``rounds`` ([start, end) micro-batches each, the study's gradient
    accumulation): every forward of a round, its sends done and ``barrier``, every backward, its
    sends done (the study's runtime synchronises the device after each half)."""
    M = micro_batches
    ids_of, targets_of = ids.chunk(M), targets.chunk(M)
    piece_shape = activation_shape if role.tp == 1 else (math.prod(activation_shape) // role.tp,)
    device, dtype = record.device, stage.activation_dtype
    sends, outputs, received, loss_sum = [], [None] * M, [None] * M, 0.0
    if grouped_exchanges:
        link = Grouped(role, exchanges(schedule, role.stage, role.stages, M), piece_shape, device, dtype, shaper,
                       halves=schedule == "gpipe")
        take = {"activation": partial(link.take, "activation"), "gradient": partial(link.take, "gradient")}

        def post(what: str, m: int, tensor: torch.Tensor) -> list:
            return link.send(what, m, tensor)
    else:
        take = {}

        def post(what: str, m: int, tensor: torch.Tensor) -> list:
            if what == "activation":
                return send(tensor, role.following, m, shaper)
            return send(tensor, role.previous, M + m, shaper)

    def receive(what: str, micro: range) -> None:
        """Post this half's receives ahead (gloo)."""
        if not grouped_exchanges:
            peer, tag = (role.previous, 0) if what == "activation" else (role.following, M)
            take[what] = Inbox(peer, piece_shape, micro, tag, shaper, device, dtype).take

    def forward(m: int) -> None:
        nonlocal loss_sum
        if role.previous is None:
            x = ids_of[m]
        else:
            x = received[m] = record.time(f"recv activation {m}", "pipeline", lambda: role.whole(
                take["activation"](m), activation_shape).float()).requires_grad_()
        out = record.time(f"forward {m}", "forward", lambda: stage.run(x, targets_of[m] if role.following is None else None))
        if role.following is None:
            loss_sum += float(out.detach())
            outputs[m] = out * scale
        else:
            outputs[m] = out
            sends.extend(post("activation", m, role.piece(out.detach().to(dtype))))

    def backward(m: int) -> None:
        if role.following is None:
            record.time(f"backward {m}", "backward", outputs[m].backward)
        else:
            grad = record.time(f"recv gradient {m}", "pipeline", lambda: role.whole(take["gradient"](m), activation_shape))
            record.time(f"backward {m}", "backward", lambda: outputs[m].backward(grad.to(outputs[m].dtype)))
        if role.previous is not None:
            sends.extend(post("gradient", m, role.piece(received[m].grad.to(dtype))))
        outputs[m] = received[m] = None

    def sent() -> None:
        record.time("sends complete", "pipeline", lambda: [s.wait() for s in sends]
                    + ([link.wait()] if grouped_exchanges else []))
        sends.clear()

    if schedule != "gpipe":
        receive("activation", range(M))
        receive("gradient", range(M))
        for kind, m in _order(schedule, role.stage, role.stages, M):
            (forward if kind == "f" else backward)(m)
        sent()
        return loss_sum
    for k, (start, end) in enumerate(rounds or ((0, M),)):
        receive("activation", range(start, end))
        for m in range(start, end):
            forward(m)
        sent()
        if barrier:
            barrier(f"barrier {k}")
        receive("gradient", range(start, end))
        for m in range(start, end):
            backward(m)
        sent()
    return loss_sum


def _order(schedule: str, stage: int, stages: int, M: int) -> list[tuple[str, int]]:
    """GPipe: every forward, then every backward. 1F1B (Megatron): P − s − 1 forwards to fill,
    then one forward, one backward alternately, then the backwards left."""
    if schedule == "gpipe":
        return [("f", m) for m in range(M)] + [("b", m) for m in range(M)]
    fill = min(stages - stage - 1, M)
    order = [("f", m) for m in range(fill)]
    for m in range(M - fill):
        order += [("f", fill + m), ("b", m)]
    return order + [("b", m) for m in range(M - fill, M)]


def sync_gradients(stage: Stage, role: Role, method: str, record: Recorder, shaper: Shaper | None = None) -> None:
    """Sum every replica's gradients of this stage: through the stage's parameter server (a reduce
    to it and a broadcast back: the study's runtime), a ring all-reduce (Megatron) or sharded (each
    replica owns a slice). On the machine's own network the backend runs its reduce, broadcast and
    all-reduce as it does them; with a shaper the server's sync is NCCL's, the simulator's: chains
    around the replicas in NCCL's chunks, each transfer over its link, and the ring's steps are
    point-to-point transfers too; the sharded sync always is. Each transfer or step goes as one
    group (``exchange``), as NCCL needs and gloo takes alike."""
    if role.group is None:
        return
    flat = stage.gradient_buffer()

    def run() -> None:
        if method == "sharded":
            _sharded(flat, role, shaper)
        elif method == "ps" and shaper:
            _reduce_broadcast(flat, role, shaper)
        elif shaper:
            shaped_ring(flat, role.peers, shaper)
        elif method == "ps":
            dist.reduce(flat, dst=role.server, group=role.group)
            dist.broadcast(flat, src=role.server, group=role.group)
        else:
            dist.all_reduce(flat, group=role.group)

    record.time("gradient sync", "dp_sync", run)


def sync_embedding(stage: Stage, role: Role, record: Recorder, shaper: Shaper | None = None) -> None:
    """Megatron's all-reduce of the tied word embedding's gradient between the pipeline's first
    stage (its token embedding) and last (its output projection), after the data-parallel sync;
    with a shaper, as the ring's point-to-point steps over the link."""
    if role.embedding_group is None:
        return
    gradient = stage.tied_weight().grad

    def run() -> None:
        if shaper:
            shaped_ring(gradient.view(-1), role.embedding_peers, shaper)
        else:
            dist.all_reduce(gradient, group=role.embedding_group)

    record.time("embedding sync", "dp_sync", run)


def _reduce_broadcast(flat: torch.Tensor, role: Role, shaper: Shaper) -> None:
    """The parameter server's sync as NCCL runs it, over the emulated links: a reduce to the
    server, then a broadcast from it, each a chain around the replicas in order,
    pipelined in NCCL's chunks (simulator.lowering.collectives): a member adds each chunk it receives to its
    own and passes it on; the broadcast passes the server's sum along. Each transfer one group."""
    k, root = len(role.peers), role.peers.index(role.server)
    peers = role.peers
    # NCCL's chunks, but no more than NCCL_STEPS of them: each transfer the emulator holds costs
    # milliseconds of replay and sleep on this machine, and 8 chunks keep the hops pipelined.
    elements = max(int(NCCL_CHUNK_BYTES) // flat.element_size(), -(-flat.numel() // NCCL_STEPS))
    chunks = flat.view(-1).split(elements)
    reduce = [peers[(root + 1 + i) % k] for i in range(k)]
    broadcast = [peers[(root + i) % k] for i in range(k)]
    _chain(chunks, reduce, shaper, add=True)
    _chain(chunks, broadcast, shaper, add=False)


def _chain(chunks: tuple[torch.Tensor, ...], order: list[int], shaper: Shaper, add: bool) -> None:
    """This rank's part of a chain through ``order``: each chunk received from the rank before is
    added to its own (``add``) or taken, then sent on to the rank after, at most NCCL_STEPS chunks
    in flight (NCCL's buffer slots)."""
    at = order.index(dist.get_rank())
    before = order[at - 1] if at > 0 else None
    after = order[at + 1] if at < len(order) - 1 else None
    flying: deque = deque()
    for chunk in chunks:
        if before is not None:
            got = exchange([], [(tuple(chunk.shape), before)], shaper, chunk.device, chunk.dtype)[0]
            if add:
                chunk.add_(got)
            else:
                chunk.copy_(got)
        if after is not None:
            while len(flying) >= NCCL_STEPS:
                for handle in flying.popleft():
                    handle.wait()
            flying.append(dist.batch_isend_irecv(_sends([(chunk, after)], shaper)))
    for handles in flying:
        for handle in handles:
            handle.wait()


def barrier(members: list[int], shaper: Shaper | None, device: torch.device) -> None:
    """gloo's dissemination barrier over ``members`` (the study's ranks in order: the simulator's
    collectives.barrier), each round's message over its emulated link; without a shaper gloo's
    own. A rank not among the members (a tensor-parallel worker's others) goes on."""
    if shaper is None:
        dist.barrier()
        return
    rank = dist.get_rank()
    if rank not in members:
        return
    k, i, d = len(members), members.index(rank), 1
    token = torch.zeros(1, device=device)
    while d < k:
        exchange([(token, members[(i + d) % k])], [((1,), members[(i - d) % k])], shaper, device, token.dtype)
        d *= 2


def shaped_ring(flat: torch.Tensor, peers: list[int], shaper: Shaper, op: str = "sum", group=None) -> None:
    """The ring all-reduce among ``peers`` as its 2(k − 1) point-to-point steps (NCCL's ring,
    which the simulator models): in step j of the reduce-scatter member i sends its running sum
    (or max) of chunk i − j to the next member and adds the previous member's chunk i − j − 1 to
    its own; the all-gather then passes the finished chunks round the ring. Each step's send and
    receive go as one group, over ``group``. The chunks are of the flattened tensor: a
    micro-batch of one cannot be cut along its first dimension."""
    flat = flat.view(-1)
    k = len(peers)
    me = peers.index(dist.get_rank())
    following, previous = peers[(me + 1) % k], peers[(me - 1) % k]
    chunks = list(flat.tensor_split(k))
    for step in range(2 * (k - 1)):
        out, into = (me - step) % k, (me - step - 1) % k
        got = exchange([(chunks[out].clone(), following)], [(tuple(chunks[into].shape), previous)],
                       shaper, flat.device, flat.dtype, group)[0]
        if step < k - 1 and op == "max":
            torch.maximum(chunks[into], got, out=chunks[into])
        elif step < k - 1:
            chunks[into] += got
        else:
            chunks[into].copy_(got)


def _sharded(flat: torch.Tensor, role: Role, shaper: Shaper | None) -> None:
    """The sharded sync the simulator models: member i owns the i-th of k slices of the gradient;
    every member sends each other member its slice of that member, each owner adds up its slice
    (its own first, then the others' in member order) and sends the sum back to every other member.
    Each phase's sends and receives go as one group."""
    k, peers = len(role.peers), role.peers
    me = peers.index(dist.get_rank())
    chunks = list(flat.tensor_split(k))
    others = [i for i in range(k) if i != me]
    got = exchange([(chunks[i].clone(), peers[i]) for i in others],
                   [(tuple(chunks[me].shape), peers[i]) for i in others], shaper, flat.device, flat.dtype)
    for piece in got:
        chunks[me] += piece
    got = exchange([(chunks[me], peers[i]) for i in others], [(tuple(chunks[i].shape), peers[i]) for i in others],
                   shaper, flat.device, flat.dtype)
    for i, piece in zip(others, got):
        chunks[i].copy_(piece)


def exchanges(schedule: str, stage: int, stages: int, M: int) -> list[tuple[str, str, int]]:
    """This stage's pipeline sends and receives in program order: (op, what, micro-batch), op
    'send' or 'recv', what 'activation' (from the previous stage, to the next) or 'gradient'
    (from the next, to the previous)."""
    out = []
    for kind, m in _order(schedule, stage, stages, M):
        if kind == "f":
            out += [("recv", "activation", m)] * (stage > 0) + [("send", "activation", m)] * (stage < stages - 1)
        else:
            out += [("recv", "gradient", m)] * (stage < stages - 1) + [("send", "gradient", m)] * (stage > 0)
    return out


def peer_of(op: str, what: str) -> str:
    """'previous' or 'following': whom the op talks to."""
    return "following" if (op == "send") == (what == "activation") else "previous"


def grouped(steps: list[tuple[str, str, int]]) -> list[list[tuple[str, str, int]]]:
    """The exchanges as NCCL is given them: a send goes with the receive right after it from the
    same peer (Megatron's send_forward_recv_backward and send_backward_recv_forward), each other
    op alone."""
    groups: list[list[tuple[str, str, int]]] = []
    for step in steps:
        previous = groups[-1] if groups else None
        if (previous and len(previous) == 1 and previous[0][0] == "send" and step[0] == "recv"
                and peer_of(*previous[0][:2]) == peer_of(*step[:2])):
            previous.append(step)
        else:
            groups.append([step])
    return groups
