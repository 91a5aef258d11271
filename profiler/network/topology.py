"""Turn a cluster description into the engine's network: resources, capacities and routes.

What a transfer between two devices crosses:
- same host: the sender GPU's interconnect port out and the receiver's port in (NVLink/PCIe);
- different hosts, region form: the sending host's NIC egress, its egress class towards the
  destination region (the study's tc emulation shaped each sender's egress per (delay, rate)
  pair, docs/facts.md §3), and the receiving host's NIC ingress. Nominal network rates are scaled by
  the goodput TCP really achieves, and one transfer is capped by its transport's connections
  (profiler.network.tcp: each at most its window over the round trip and the host's limit on one
  connection);
- pair form (measured): the per-pair figure as measured, plus the two hosts' NICs.
"""

from __future__ import annotations

import math
from typing import Iterable

from profiler.cluster import Cluster
from profiler.network.routes import Network, Route, max_min_rates
from profiler.network.tcp import GOODPUT_FRACTION, NCCL, Transport


class Topology:
    """Builds routes lazily, once per device pair, and remembers them; transfers between hosts go
    over ``transport`` (NCCL's sockets by default: the runtimes' GPU path)."""

    def __init__(self, cluster: Cluster, transport: Transport = NCCL) -> None:
        self.cluster = cluster
        self.transport = transport
        self._host = [d.host for d in cluster.devices]
        hosts = {h.name: h for h in cluster.hosts}
        self._host_info = [hosts[name] for name in self._host]
        self._region = [h.region for h in self._host_info]
        self._links = {frozenset((l.a, l.b)): l for l in cluster.links}
        self._names: list[str] = []
        self._caps: list[float] = []
        self._index: dict[str, int] = {}
        self._routes: dict[tuple[int, int], Route] = {}
        self._lone: dict[Route, float] = {}

    def _resource(self, name: str, capacity: float) -> int:
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self._names)
            self._names.append(name)
            self._caps.append(capacity)
        return index

    def host_of(self, device: int):
        return self._host_info[device]

    def route(self, src: int, dst: int) -> Route:
        key = (src, dst)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._build(src, dst)
        return route

    def _build(self, src: int, dst: int) -> Route:
        if src == dst:
            raise ValueError(f"no route from device {src} to itself")
        a, b = self._host_info[src], self._host_info[dst]
        c = self.cluster
        if c.pair_latency_s is not None:
            res = [self._resource(f"pair:{src}->{dst}", c.pair_bandwidth_bytes_per_s[src][dst])]
            if a.name != b.name:
                res += [self._resource(f"egress:{a.name}", a.uplink_bandwidth_bytes_per_s),
                        self._resource(f"ingress:{b.name}", b.uplink_bandwidth_bytes_per_s)]
            return Route(resources=tuple(res), flow_cap_bytes_per_s=math.inf, latency_s=c.pair_latency_s[src][dst])
        if a.name == b.name:
            res = (self._resource(f"gpu-out:{src}", a.interconnect_bandwidth_bytes_per_s),
                   self._resource(f"gpu-in:{dst}", b.interconnect_bandwidth_bytes_per_s))
            cap = a.pair_bandwidth_bytes_per_s or math.inf
            return Route(resources=res, flow_cap_bytes_per_s=cap, latency_s=a.interconnect_latency_s)
        link = self._links[frozenset((a.region, b.region))]
        g = GOODPUT_FRACTION
        res = (self._resource(f"egress:{a.name}", a.uplink_bandwidth_bytes_per_s * g),
               self._resource(f"class:{a.name}->{b.region}", link.bandwidth_bytes_per_s * g),
               self._resource(f"ingress:{b.name}", b.uplink_bandwidth_bytes_per_s * g))
        limit = a.connection_bandwidth_bytes_per_s * g if a.connection_bandwidth_bytes_per_s else math.inf
        cap = self.transport.flow_cap_bytes_per_s(2 * link.latency_s, limit)
        return Route(resources=res, flow_cap_bytes_per_s=cap, latency_s=link.latency_s)

    def lone_rate(self, route: Route) -> float:
        """The rate of a flow alone on ``route`` (its bottleneck resource or its own cap), remembered."""
        rate = self._lone.get(route)
        if rate is None:
            rate = self._lone[route] = route_rates([route], self._caps)[0]
        return rate

    def network(self, pairs: Iterable[tuple[int, int]] = ()) -> Network:
        """The engine's immutable input: resources and the routes of ``pairs`` (and any built before)."""
        for src, dst in pairs:
            self.route(src, dst)
        return Network(resource_names=tuple(self._names), capacities_bytes_per_s=tuple(self._caps),
                       routes=dict(self._routes))

    @property
    def capacities(self) -> list[float]:
        return self._caps


def route_rates(routes: list[Route], capacities: list[float]) -> list[float]:
    """Max-min fair rates of ``routes``' flows all in flight at once: the steady state the
    engine's fluid network reaches."""
    return max_min_rates([(route.resources, route.flow_cap_bytes_per_s) for route in routes], capacities)


def ring_allreduce_s(topology: Topology, group: Iterable[int], size_bytes: float) -> float:
    """Ring all-reduce of ``size_bytes`` over ``group`` (NCCL's algorithm): 2(k-1) steps, each
    moving size/k bytes from every member to the next at once; a step lasts as long as its
    slowest edge under max-min sharing, plus that edge's latency."""
    members = list(group)
    k = len(members)
    if k < 2:
        return 0.0
    hosts = {topology.host_of(d) for d in members}
    if len(hosts) == 1 and topology.cluster.pair_latency_s is None:
        # Inside one host NCCL runs several rings at once, one per channel, over all the GPUs'
        # links: each step moves at the GPU's whole interconnect bandwidth.
        host = next(iter(hosts))
        return 2 * (k - 1) * (host.interconnect_latency_s + size_bytes / k / host.interconnect_bandwidth_bytes_per_s)
    routes = [topology.route(members[i], members[(i + 1) % k]) for i in range(k)]
    rates = route_rates(routes, topology.capacities)
    chunk = size_bytes / k
    step = max(route.latency_s + chunk / rate for route, rate in zip(routes, rates))
    return 2 * (k - 1) * step
