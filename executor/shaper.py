"""The plan's network on one machine (`executor run --emulate-network`): an application-level
network emulator, since this kernel has no netem.

A transfer crosses the resources the simulator's network gives its route (profiler.network.topology:
the sending host's NIC, its egress class towards the destination region and the receiving host's
NIC, each at TCP's goodput; GPU ports inside a host), and one flow is capped by TCP's window over
a long link. The transfers in flight share every resource max-min fairly, as TCP flows through
one NIC or tc class do, and a transfer arrives a latency after its last byte leaves.

Every local rank of a run appends the transfers it sends, with the time it posted them (read
under the lock, so the log is in posting order), to one log file (``log_path``). A receiver
replays the log's flows as a fluid network to find when its transfer arrives and sleeps towards
then, in slices of at most ``SLICE_S``: a flow posted meanwhile changes the answer (mostly it
delays it; under max-min it can also speed it, by slowing a flow that held a resource the
transfer waits on), so it replays again on each waking until the replay says it has arrived. The
log is replayed from the last moment the network was idle, which later flows cannot change. Ranks
on one machine share its monotonic clock (time.perf_counter is CLOCK_MONOTONIC on Linux), so a
sender's time is the receiver's. Without a log (under torchrun, each host its own clock) each
transfer is timed alone: no sharing between transfers.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
import time
from pathlib import Path

import torch
import torch.distributed as dist

from profiler.cluster import Cluster
from profiler.network.routes import max_min_rates
from profiler.network.topology import Topology

RECORD = struct.Struct("<ddii")  # posted_s, bytes, src, dst
SLICE_S = 0.005  # the longest a receiver sleeps before it replays the log again
_DONE_BYTES = 1e-3  # a flow with less left than this has left (round-off of rate x time)


class Shaper:
    def __init__(self, cluster: Cluster, rank: int, log_path: str | None = None,
                 device: torch.device | None = None) -> None:
        self.rank = rank
        self.device = device  # where the stamps go (NCCL sends only GPU tensors)
        topology = Topology(cluster)
        self.routes = {(a, b): topology.route(a, b) for a in range(cluster.size) for b in range(cluster.size) if a != b}
        self.capacities = list(topology.capacities)
        self.log = open(log_path, "r+b") if log_path else None  # noqa: SIM115 - held for the run
        self.flows: list[tuple[float, float, int, int]] = []  # the log from ``self.first`` on
        self.first = 0  # index of the first flow after the last idle moment found
        self.settled: dict[int, float] = {}  # arrival of each flow to this rank from before ``first`` not yet taken
        self.taken: set[int] = set()  # flows to this rank already taken, not yet dropped from ``flows``

    @staticmethod
    def create_log(path: Path) -> str:
        """A fresh, empty transfer log for the local ranks of one run."""
        path.write_bytes(b"")
        return str(path)

    def alone_s(self, src: int, dst: int, nbytes: float) -> float:
        """Seconds from post to arrival of one transfer with the network to itself."""
        route = self.routes[src, dst]
        rate = min([route.flow_cap_bytes_per_s, *(self.capacities[r] for r in route.resources)])
        return nbytes / rate + route.latency_s

    def post(self, dst: int, nbytes: int) -> torch.Tensor:
        """Log a transfer from this rank to ``dst`` posted now; the stamp to send with it:
        (posted_s, its index in the log, or -1 without a log)."""
        if self.device is not None and self.device.type == "cuda":  # the tensor exists once its kernels ran
            torch.cuda.current_stream(self.device).synchronize()
        posted = time.perf_counter()
        index = -1
        if self.log is not None:
            fcntl.flock(self.log, fcntl.LOCK_EX)
            try:
                posted = time.perf_counter()
                end = self.log.seek(0, os.SEEK_END)
                self.log.write(RECORD.pack(posted, float(nbytes), self.rank, dst))
                self.log.flush()
                index = end // RECORD.size
            finally:
                fcntl.flock(self.log, fcntl.LOCK_UN)
        return torch.tensor([posted, float(index)], dtype=torch.float64, device=self.device)

    def send(self, tensor: torch.Tensor, dst: int, tag: int, stamp_tag: int) -> list:
        """isend the tensor and its stamp; the handles to wait for."""
        stamp = self.post(dst, tensor.numel() * tensor.element_size())
        return [dist.isend(stamp, dst, tag=stamp_tag), dist.isend(tensor, dst, tag=tag)]

    def hold(self, src: int, tensor: torch.Tensor, stamp: torch.Tensor) -> None:
        """Wait until the transfer of ``tensor`` from ``src`` with ``stamp`` has arrived."""
        posted, index = float(stamp[0]), int(stamp[1])
        while True:
            if index < 0:
                arrival = posted + self.alone_s(src, self.rank, tensor.numel() * tensor.element_size())
            else:
                arrival = self._arrival_s(index)
            wait = arrival - time.perf_counter()
            if wait <= 0:
                if self.settled.pop(index, None) is None and index >= 0:
                    self.taken.add(index)
                return
            if index >= 0:
                wait = min(wait, SLICE_S)
            time.sleep(wait)

    def _read(self) -> None:
        fcntl.flock(self.log, fcntl.LOCK_SH)
        try:
            self.log.seek((self.first + len(self.flows)) * RECORD.size)
            data = self.log.read()
        finally:
            fcntl.flock(self.log, fcntl.LOCK_UN)
        self.flows += [RECORD.unpack_from(data, offset) for offset in range(0, len(data) - len(data) % RECORD.size,
                                                                             RECORD.size)]

    def _arrival_s(self, index: int) -> float:
        if index < self.first:
            return self.settled[index]
        self._read()
        arrivals, idle = replay(self.flows, self.routes, self.capacities)
        arrival = arrivals[index - self.first]
        if idle:  # flows before the last idle moment are done for good: replay from there next time
            for k in range(idle):
                if self.flows[k][3] == self.rank and self.first + k not in self.taken:
                    self.settled[self.first + k] = arrivals[k]
                self.taken.discard(self.first + k)
            del self.flows[:idle]
            self.first += idle
        return arrival


def replay(flows: list[tuple[float, float, int, int]], routes: dict, capacities: list[float]) -> tuple[list[float], int]:
    """Arrival times of ``flows`` (posted_s, bytes, src, dst), sharing the resources max-min fairly
    while in flight, and how many come before the last moment the network was idle."""
    order = sorted(range(len(flows)), key=lambda k: flows[k][0])
    arrivals = [math.inf] * len(flows)
    left: dict[int, float] = {}
    now, idle, admitted = -math.inf, 0, 0
    while admitted < len(order) or left:
        if not left:
            now = flows[order[admitted]][0]
            idle = admitted
        while admitted < len(order) and flows[order[admitted]][0] <= now:
            k = order[admitted]
            left[k] = flows[k][1]
            admitted += 1
        active = list(left)
        rates = max_min_rates([(routes[flows[k][2], flows[k][3]].resources,
                                routes[flows[k][2], flows[k][3]].flow_cap_bytes_per_s) for k in active], capacities)
        step = min(left[k] / rate for k, rate in zip(active, rates))
        if admitted < len(order):
            step = min(step, flows[order[admitted]][0] - now)
        now += step
        for k, rate in zip(active, rates):
            left[k] -= rate * step
            if left[k] <= _DONE_BYTES:
                del left[k]
                arrivals[k] = now + routes[flows[k][2], flows[k][3]].latency_s
    # ``idle`` counts flows in posting order, which is the log's (a sender reads the clock under
    # the lock); should a log say otherwise, drop nothing.
    return arrivals, idle if sorted(order[:idle]) == list(range(idle)) else 0
