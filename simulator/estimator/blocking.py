"""Megatron's 1F1B with blocking exchanges, timed without an event queue.

Each stage runs its ops in order (lowering's `_one_f_one_b` order); an exchange op posts its
transfers and waits until its sends have left and its receives have arrived; a transfer starts
when both of its ops are posted, occupies its route for its boundary's occupancy and arrives its
latency later. Two stages joined by blocking exchanges can lock into a cycle longer
than any single stage's F + B + exchanges (a block of stages on one host takes turns with its
neighbours' links), so the estimator times the schedule itself instead of assuming a cycle: it
runs M1 and M1 + P micro-batches and extends the periodic steady state to M.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache


def _stage_ops(stage: int, stages: int, micro_batches: int) -> list[tuple]:
    """Ops of one stage: ("F"|"B", m) compute, or ("X", ((transfer, is_send), ...)) exchanges,
    a transfer being (direction, boundary, micro-batch)."""
    first, last, M = stage == 0, stage == stages - 1, micro_batches
    ops: list[tuple] = []

    def exchange(*parts: tuple) -> None:
        parts = tuple(p for p in parts if p is not None)
        if parts:
            ops.append(("X", parts))

    recv_f = lambda m: None if first else (("f", stage - 1, m), False)
    send_f = lambda m: None if last else (("f", stage, m), True)
    recv_b = lambda m: None if last else (("b", stage, m), False)
    send_b = lambda m: None if first else (("b", stage - 1, m), True)
    warmup = min(stages - stage - 1, M)
    for m in range(warmup):
        exchange(recv_f(m))
        ops.append(("F", m))
        exchange(send_f(m))
    if warmup < M:
        exchange(recv_f(warmup))
    for i in range(M - warmup):
        fm, bm = warmup + i, i
        ops.append(("F", fm))
        exchange(send_f(fm), recv_b(bm))
        ops.append(("B", bm))
        exchange(send_b(bm), recv_f(fm + 1) if fm + 1 < M else None)
    for bm in range(M - warmup, M):
        exchange(recv_b(bm))
        ops.append(("B", bm))
        exchange(send_b(bm))
    return ops


def _peer(transfer: tuple, is_send: bool) -> int:
    direction, boundary, _ = transfer
    sender, receiver = (boundary, boundary + 1) if direction == "f" else (boundary + 1, boundary)
    return receiver if is_send else sender


# (occupancy_s, latency_s) of one transfer of each (direction, boundary)
Timings = dict[tuple[str, int], tuple[float, float]]


def _timeline(forward: list[float], backward: list[float], transfer_s: Timings,
              micro_batches: int) -> tuple[list[float], dict[tuple, float]]:
    """Each stage's end, and when each side of each transfer was posted."""
    P = len(forward)
    programs = [_stage_ops(s, P, micro_batches) for s in range(P)]
    position, clock = [0] * P, [0.0] * P
    posted: dict[tuple, float] = {}  # (transfer, is_send) -> when that side was posted
    blocked: set[int] = set()
    work = deque(range(P))
    while work:
        s = work.popleft()
        blocked.discard(s)
        ops = programs[s]
        while position[s] < len(ops):
            kind, payload = ops[position[s]]
            if kind != "X":
                clock[s] += forward[s] if kind == "F" else backward[s]
                position[s] += 1
                continue
            for transfer, is_send in payload:
                if (transfer, is_send) not in posted:
                    posted[transfer, is_send] = clock[s]
                    peer = _peer(transfer, is_send)
                    if peer in blocked:
                        work.append(peer)
            if any((transfer, not is_send) not in posted for transfer, is_send in payload):
                blocked.add(s)
                break
            clock[s] = max(max(posted[t, True], posted[t, False]) + transfer_s[t[0], t[1]][0]
                           + (0.0 if is_send else transfer_s[t[0], t[1]][1]) for t, is_send in payload)
            position[s] += 1
    if any(position[s] < len(programs[s]) for s in range(P)):
        raise RuntimeError("1F1B schedule deadlocked")
    return clock, posted


def run_schedule(forward: list[float], backward: list[float], transfer_s: Timings,
                 micro_batches: int) -> list[float]:
    """When each stage finishes its schedule; ``transfer_s[direction, boundary]`` is one
    transfer's (occupancy, latency)."""
    return list(_cached_timeline(tuple(forward), tuple(backward), tuple(sorted(transfer_s.items())), micro_batches)[0])


@lru_cache(maxsize=1024)
def _cached_timeline(forward: tuple[float, ...], backward: tuple[float, ...],
                     transfer_s: tuple[tuple[tuple[str, int], tuple[float, float]], ...],
                     micro_batches: int) -> tuple[tuple[float, ...], dict[tuple, float]]:
    """_timeline remembered: the table's rows of one layer count time the same short schedules
    whatever their batch (schedule_ends extends them); callers must not change the dict."""
    clock, posted = _timeline(list(forward), list(backward), dict(transfer_s), micro_batches)
    return tuple(clock), posted


def transfer_windows(forward: list[float], backward: list[float], transfer_s: Timings,
                     micro_batches: int) -> dict[tuple[str, int, int], tuple[float, float]]:
    """(start, last byte left) of every transfer, keyed (direction, boundary, micro-batch): when
    it holds its route."""
    _, posted = _cached_timeline(tuple(forward), tuple(backward), tuple(sorted(transfer_s.items())), micro_batches)
    windows = {}
    for (transfer, is_send), _ in posted.items():
        if is_send:
            start = max(posted[transfer, True], posted[transfer, False])
            windows[transfer] = (start, start + transfer_s[transfer[0], transfer[1]][0])
    return windows


@lru_cache(maxsize=4096)
def schedule_ends(forward: tuple[float, ...], backward: tuple[float, ...],
                  transfer_s: tuple[tuple[tuple[str, int], tuple[float, float]], ...], micro_batches: int) -> tuple[float, ...]:
    """As run_schedule, but long schedules are timed on two shorter ones and their periodic
    steady state extended: every micro-batch past the transient adds the same time. Replicas
    with the same costs share one answer (arguments are tuples for the cache)."""
    transfer_s = dict(transfer_s)
    P = len(forward)
    short, longer = 4 * P + 4, 6 * P + 4
    if micro_batches <= longer:
        return tuple(run_schedule(forward, backward, transfer_s, micro_batches))
    a = run_schedule(forward, backward, transfer_s, short)
    b = run_schedule(forward, backward, transfer_s, longer)
    return tuple(y + (micro_batches - longer) * (y - x) / (longer - short) for x, y in zip(a, b))
