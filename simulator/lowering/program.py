"""The simulator's intermediate form: what each stream of each device does, in order.

A *program* is lowered from a placement and a runtime (simulator.lowering.lower) and then either executed
by the SimPy engine (simulator.engine.simulate) or summarised by the analytic estimator. Keeping one form
for both is what lets a test hold the two together.

Semantics, which the engine implements and the estimator approximates:
- A stream runs its ops strictly in list order (one CUDA stream, or one blocking thread).
- An op starts when the previous op on its stream has finished *and* every op in ``deps`` has
  finished (deps may sit on other streams, e.g. a send waits for the forward that made the data).
- An op also waits for the delivery of every transfer in ``arrivals`` (data it consumes that
  a non-blocking op received).
- A compute op takes ``duration_s``.
- A comm op names transfers. Each transfer has exactly two sides, a send side and a receive
  side, each in one comm op. The transfer's bytes start to flow when *both* sides are posted
  (NCCL and gloo rendezvous: a send stalls until the peer posts its receive), ``startup_s``
  later where the transfer has one (TCP slow start on fresh connections). They then flow through
  the network (max-min fair share of every resource on the route, at most the route's per-flow
  cap), and are delivered ``latency_s`` after the last byte leaves. A send side is done when its
  last byte has left, a receive side when it is delivered; a comm op finishes when all of its
  sides are done, or, ``nonblocking``, as soon as it has posted its receives (receives posted
  ahead, whose data later ops wait for through ``arrivals``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from profiler.trace import Category


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """Bytes moved from one device to another."""

    id: int
    src_device: int
    dst_device: int
    size_bytes: float
    category: Category
    startup_s: float = 0.0  # before the bytes flow, once both sides are posted (fresh connections)


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One entry of a stream: a compute op (``duration_s``) or a comm op (``sends``/``recvs``),
    never both; the engine rejects an op with a duration and transfers.

    A compute op may carry ``tp_comm_s``: the part of its duration spent in blocking
    tensor-parallel all-reduces (for the breakdown; the engine just waits ``duration_s``).
    ``sends`` / ``recvs`` list the transfer ids this op posts as sender / receiver; a
    ``nonblocking`` op only receives, and does not wait. ``arrivals`` are transfers whose delivery
    the op waits for before it starts.
    """

    id: int
    category: Category
    label: str
    duration_s: float = 0.0
    tp_comm_s: float = 0.0
    sends: tuple[int, ...] = ()
    recvs: tuple[int, ...] = ()
    deps: tuple[int, ...] = ()
    arrivals: tuple[int, ...] = ()
    nonblocking: bool = False

    @property
    def is_comm(self) -> bool:
        return bool(self.sends or self.recvs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stream:
    """An ordered list of ops on one worker. ``devices`` are the GPUs it runs on (a
    tensor-parallel group runs as one worker on several devices); ``main`` marks the compute
    stream whose timeline the breakdown reads."""

    name: str
    devices: tuple[int, ...]
    main: bool
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    streams: tuple[Stream, ...]
    transfers: tuple[Transfer, ...] = field(default_factory=tuple)

    @property
    def op_count(self) -> int:
        return sum(len(s.ops) for s in self.streams)
