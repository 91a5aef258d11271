"""One rank's part of a training iteration: its stage's forwards and backwards over the
micro-batches in the plan's schedule, the pipeline transfers with its neighbours, the gradient
sync with its stage's replicas, and the optimizer step.

Receives are posted ahead, all of an iteration's at its start (gloo's send waits until the peer
has posted its receive: posted late, the pipeline would serialise), and sends are waited for at
the end. Every op is recorded as a span (seconds since the iteration began) for the run report
and the trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

from executor.model import Stage


@dataclass(slots=True, kw_only=True)
class Role:
    stage: int
    replica: int
    stages: int
    previous: int | None  # the rank holding this pipeline's previous stage
    following: int | None
    group: object | None  # this stage's data-parallel process group (None: one replica)
    server: int  # the rank that serves this stage's parameter-server sync


@dataclass(slots=True)
class Recorder:
    """Spans of one iteration: (label, category, start_s, end_s), relative to ``origin``."""

    origin: float = 0.0
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)

    def time(self, label: str, category: str, work: Callable[[], object]) -> object:
        begin = time.perf_counter()
        result = work()
        self.spans.append((label, category, begin - self.origin, time.perf_counter() - self.origin))
        return result


def run_iteration(stage: Stage, role: Role, ids: torch.Tensor, targets: torch.Tensor, micro_batches: int,
                  schedule: str, activation_shape: tuple[int, ...], scale: float, record: Recorder) -> float:
    """Forwards and backwards of this rank's micro-batches (``ids``/``targets``: its replica's
    share of the batch); returns the sum of its micro-batches' losses (0 before the last stage)."""
    M = micro_batches
    ids_of, targets_of = ids.chunk(M), targets.chunk(M)
    inputs = [torch.empty(activation_shape) for _ in range(M)] if role.previous is not None else []
    grads = [torch.empty(activation_shape) for _ in range(M)] if role.following is not None else []
    pending = [dist.irecv(inputs[m], role.previous, tag=m) for m in range(len(inputs))]
    pending_grads = [dist.irecv(grads[m], role.following, tag=M + m) for m in range(len(grads))]
    sends, outputs, received, loss_sum = [], [None] * M, [None] * M, 0.0

    def forward(m: int) -> None:
        nonlocal loss_sum
        if role.previous is None:
            x = ids_of[m]
        else:
            record.time(f"recv activation {m}", "pipeline", pending[m].wait)
            x = received[m] = inputs[m].requires_grad_()
        out = record.time(f"forward {m}", "forward", lambda: stage(x, targets_of[m] if role.following is None else None))
        if role.following is None:
            loss_sum += float(out.detach())
            outputs[m] = out * scale
        else:
            outputs[m] = out
            sends.append(dist.isend(out.detach(), role.following, tag=m))

    def backward(m: int) -> None:
        if role.following is None:
            record.time(f"backward {m}", "backward", outputs[m].backward)
        else:
            record.time(f"recv gradient {m}", "pipeline", pending_grads[m].wait)
            record.time(f"backward {m}", "backward", lambda: outputs[m].backward(grads[m]))
        if role.previous is not None:
            sends.append(dist.isend(received[m].grad, role.previous, tag=M + m))
        outputs[m] = received[m] = None

    for kind, m in _order(schedule, role.stage, role.stages, M):
        (forward if kind == "f" else backward)(m)
    record.time("sends complete", "pipeline", lambda: [s.wait() for s in sends])
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


def sync_gradients(stage: Stage, role: Role, method: str, record: Recorder) -> None:
    """Sum every replica's gradients of this stage: through the stage's parameter server (reduce
    to it, broadcast back: the study's runtime) or a ring all-reduce (Megatron)."""
    if role.group is None:
        return
    grads = [p.grad for p in stage.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])

    def exchange() -> None:
        if method == "ps":
            dist.reduce(flat, dst=role.server, group=role.group)
            dist.broadcast(flat, src=role.server, group=role.group)
        else:
            dist.all_reduce(flat, group=role.group)

    record.time("gradient sync", "dp_sync", exchange)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
