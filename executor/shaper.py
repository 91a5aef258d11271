"""The plan's network on one machine (`executor run --emulate-network`): an application-level
link shaper, since this kernel has no netem.

Each transfer carries the time its sender posted it; the receiver holds it until
max(posted, the link's busy-until) + bytes / bandwidth + latency, with the link's busy-until
moved on by the bytes: a link (a directed rank pair) serialises its transfers, as a NIC queue
does, while the latency of one overlaps the next. Links take the plan's cluster's figures for one
transfer alone (Cluster.pair_link). Ranks on one machine share its monotonic clock
(time.perf_counter is CLOCK_MONOTONIC on Linux), so a sender's stamp is the receiver's time too.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from profiler.cluster import Cluster


class Shaper:
    def __init__(self, cluster: Cluster, rank: int) -> None:
        self.cluster, self.rank = cluster, rank
        self.busy_until: dict[int, float] = {}
        self.held_s = 0.0  # time spent holding transfers, all links together

    def arrival_s(self, src: int, nbytes: int, posted_s: float) -> float:
        latency, bandwidth = self.cluster.pair_link(src, self.rank)
        start = max(posted_s, self.busy_until.get(src, float("-inf")))
        self.busy_until[src] = start + nbytes / bandwidth
        return self.busy_until[src] + latency

    def hold(self, src: int, tensor: torch.Tensor, stamp: torch.Tensor) -> None:
        """Wait until the transfer of ``tensor`` from ``src``, posted at ``stamp``, has arrived."""
        wait = self.arrival_s(src, tensor.numel() * tensor.element_size(), float(stamp)) - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
            self.held_s += wait


def stamp() -> torch.Tensor:
    return torch.tensor([time.perf_counter()], dtype=torch.float64)


def send_stamped(tensor: torch.Tensor, dst: int, tag: int, stamp_tag: int) -> list:
    """isend the tensor and the time it was posted; the handles to wait for."""
    return [dist.isend(stamp(), dst, tag=stamp_tag), dist.isend(tensor, dst, tag=tag)]
