"""`profiler network`'s measurements over torch.distributed: under torchrun (ranks from the
environment, one per device of every host) or ``--spawn N`` local ranks on this machine's loopback.

Pairs measure in the rounds of a round-robin tournament (profiler.links.tournament), every pair of
a round at once, so N ranks take N − 1 rounds instead of N²/2 one after another. A pair's sweep is
a ping-pong per message size, the lower rank timing the round trip (one way = half), the median
of ``repeats`` after one untimed exchange. Then the whole group all-reduces each size. Rank 0
gathers everything and returns the cluster document; the other ranks return None.
"""

from __future__ import annotations

import datetime
import socket
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.distributed as dist

from profiler.links import cluster_document, fit_link, tournament
from profiler.measure import device_kind
from profiler.spawn import TIMEOUT, rank_device, run_local


def run_network(*, spawn: int | None, backend: str, sizes: list[int], repeats: int, regions: dict[str, str],
                name: str, progress: Callable[[str], None] | None) -> dict[str, Any] | None:
    """Rank 0's cluster document (None on the other ranks under torchrun)."""
    settings = dict(backend=backend, sizes=sizes, repeats=repeats, regions=regions, name=name)
    if spawn is not None:
        return run_local(_measure, spawn, backend, (settings, progress is not None))
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        return _measure(settings, progress is not None and dist.get_rank() == 0)
    finally:
        dist.destroy_process_group()


def _measure(settings: dict, verbose: bool) -> dict[str, Any] | None:
    backend, sizes, repeats = settings["backend"], settings["sizes"], settings["repeats"]
    rank, world = dist.get_rank(), dist.get_world_size()
    progress = (lambda text: print(f"[profiler] {text}", file=sys.stderr, flush=True)) if verbose and rank == 0 else None
    device = rank_device(backend)
    who: list = [None] * world
    kind = device_kind(device) or torch.cuda.get_device_name(device)  # an unknown GPU: the cluster check names it
    dist.all_gather_object(who, (socket.gethostname(), kind))
    mine: dict[tuple[int, int], list[float]] = {}
    rounds = tournament(world)
    for number, pairs in enumerate(rounds):
        for a, b in pairs:
            if rank in (a, b):
                seconds = [_ping_pong(rank, b if rank == a else a, rank == a, size, repeats, device) for size in sizes]
                if rank == a:
                    mine[a, b] = seconds
        dist.barrier()
        if progress:
            progress(f"pairs: round {number + 1} of {len(rounds)}")
    allreduce = [{"bytes": size, "seconds": _allreduce(size, repeats, device)} for size in sizes]
    if progress:
        progress("all-reduce of the whole group: done")
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank != 0:
        return None
    fits = {pair: fit_link(sizes, seconds) for part in everyone for pair, seconds in part.items()}
    measured = {"tool": "profiler network", "backend": backend, "torch_version": torch.__version__,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "sizes_bytes": list(sizes), "repeats": repeats, "allreduce": allreduce}
    return cluster_document(name=settings["name"], hosts=[h for h, _ in who], kinds=[k for _, k in who], fits=fits,
                            regions=settings["regions"], measured=measured)


def _ping_pong(rank: int, peer: int, timing: bool, size: int, repeats: int, device: torch.device) -> float:
    buffer = torch.empty(size, dtype=torch.uint8, device=device)
    samples = []
    for _ in range(1 + repeats):
        if timing:
            _sync(device)
            begin = time.perf_counter()
            dist.send(buffer, peer)
            dist.recv(buffer, peer)
            _sync(device)
            samples.append((time.perf_counter() - begin) / 2)
        else:
            dist.recv(buffer, peer)
            dist.send(buffer, peer)
    return statistics.median(samples[1:]) if timing else 0.0


def _allreduce(size: int, repeats: int, device: torch.device) -> float:
    buffer = torch.zeros(max(size // 4, 1), dtype=torch.float32, device=device)
    samples = []
    for _ in range(1 + repeats):
        dist.barrier()
        _sync(device)
        begin = time.perf_counter()
        dist.all_reduce(buffer)
        _sync(device)
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
