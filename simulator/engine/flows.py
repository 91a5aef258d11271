"""A fluid max-min fair-share flow network on SimPy (the model profiler.network.routes describes).

Every active flow gets the max-min fair allocation (progressive filling) of the capacities of the
resources on its route, capped by the route's per-flow cap. Rates change only when a flow starts or
sends its last byte, and then only inside the connected component of flows that share resources
with it, so many independent flows stay cheap. Each flow keeps its remaining bytes exact by being
advanced (rate x elapsed) before every recompute of its component.

SimPy timeouts cannot be cancelled, so finish times are kept in the network's own heap with lazy
deletion, and a single SimPy timer is armed for the earliest; a timer superseded by an earlier one
is ignored when it fires.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Iterable
from dataclasses import dataclass

import simpy

from profiler.network.routes import Network, Route, max_min_rates

# Round-off guards. Remaining bytes are a float difference of products, so a flow that is really
# done can be left with a residue around 1e-16 of its size; these thresholds sit far above that
# and far below any size worth modelling.
_DONE_FRACTION = 1e-9
_DONE_BYTES = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowRecord:
    """One flow's life: started, last byte left the sender, delivered (last byte + latency)."""

    src_device: int
    dst_device: int
    size_bytes: float
    start_s: float
    last_byte_s: float
    delivered_s: float


class _Flow:
    """Mutable state of one active flow (internal; hashed by identity)."""

    __slots__ = (
        "number",
        "src_device",
        "dst_device",
        "size_bytes",
        "resources",
        "cap_bytes_per_s",
        "latency_s",
        "remaining_bytes",
        "done_bytes",
        "rate_bytes_per_s",
        "updated_s",
        "start_s",
        "finish_s",
        "active",
        "delivered",
        "left",
    )

    def __init__(
        self,
        number: int,
        src: int,
        dst: int,
        size_bytes: float,
        route: Route,
        now_s: float,
        delivered: simpy.Event,
        left: simpy.Event | None = None,
    ):
        self.number = number  # start order: breaks ties between equal finish times
        self.src_device = src
        self.dst_device = dst
        self.size_bytes = size_bytes
        # A resource listed twice is still one resource that the flow uses once.
        self.resources = tuple(dict.fromkeys(route.resources))
        self.cap_bytes_per_s = route.flow_cap_bytes_per_s
        self.latency_s = route.latency_s
        self.remaining_bytes = size_bytes
        self.done_bytes = max(_DONE_FRACTION * size_bytes, _DONE_BYTES)
        self.rate_bytes_per_s = 0.0
        self.updated_s = now_s
        self.start_s = now_s
        self.finish_s = math.inf  # when the last byte leaves at the current rate
        self.active = True
        self.delivered = delivered
        self.left = left  # succeeded when the last byte leaves (None: nobody waits for that)


class FlowNetwork:
    """Flows on a ``Network`` of shared resources, driven by a SimPy environment.

    Finish times live in the network's own heap, with one SimPy timer armed for the earliest.
    A re-rated flow pushes a new entry and its old one goes stale (its time no longer matches the
    flow's); a heap push costs a fraction of a SimPy timeout, and in a large component every flow
    is re-rated at each arrival and departure.
    """

    __slots__ = (
        "_env",
        "_network",
        "_capacities",
        "_on_resource",
        "_records",
        "_finishes",
        "_started",
        "_armed_s",
        "_timer",
        "_on_timer_cb",
    )

    def __init__(self, env: simpy.Environment, network: Network, *, record: bool = False):
        self._env = env
        self._network = network
        self._capacities = network.capacities_bytes_per_s
        # Per resource, its active flows; dicts rather than sets so iteration order (and with it
        # float summation order and event order) is deterministic.
        self._on_resource: list[dict[_Flow, None]] = [{} for _ in self._capacities]
        self._records: list[FlowRecord] | None = [] if record else None
        self._finishes: list[tuple[float, int, _Flow]] = []  # heap of (finish_s, number, flow)
        self._started = 0
        self._armed_s = math.inf  # when the pending timer fires; inf when none is pending
        self._timer: simpy.Event | None = None
        self._on_timer_cb = self._on_timer  # bind once: one callback is attached per timer

    @property
    def records(self) -> tuple[FlowRecord, ...]:
        """Finished flows in the order their last byte left (empty unless ``record=True``)."""
        return tuple(self._records or ())

    @property
    def active_flows(self) -> int:
        """Flows now crossing at least one resource (those on cap-only routes are not held)."""
        return len({flow for flows in self._on_resource for flow in flows})

    def start(
        self,
        src_device: int,
        dst_device: int,
        size_bytes: float,
        *,
        delivered: simpy.Event | None = None,
        left: simpy.Event | None = None,
    ) -> simpy.Event:
        """Start a flow now; the returned event succeeds when its last byte is delivered.

        ``delivered`` lets a caller supply the event to succeed (e.g. one that a peer already
        waits on); a fresh one is made otherwise; ``left``, if given, succeeds when the last byte
        leaves the sender. A flow of no more than a micro-byte is delivered after the route's
        latency alone.
        """
        route = self._checked_route(src_device, dst_device, size_bytes)
        cap = route.flow_cap_bytes_per_s
        if delivered is None:
            delivered = self._env.event()
        flow = _Flow(self._started, src_device, dst_device, size_bytes, route, self._env.now,
                     delivered, left)
        self._started += 1
        if size_bytes <= flow.done_bytes:
            self._complete(flow)
            return delivered
        on_resource = self._on_resource
        alone = not any(on_resource[resource] for resource in flow.resources)
        for resource in flow.resources:
            on_resource[resource][flow] = None
        if alone:  # the common case, and its own component: skip the walk and the filling
            capacities = self._capacities
            flow.rate_bytes_per_s = min([cap, *(capacities[r] for r in flow.resources)])
            self._schedule(flow)
        else:
            self._recompute(self._component(flow.resources))
        self._arm()
        return delivered

    def _checked_route(self, src_device: int, dst_device: int, size_bytes: float) -> Route:
        route = self._network.routes.get((src_device, dst_device))
        if route is None:
            raise ValueError(f"no route from device {src_device} to device {dst_device}")
        if not (size_bytes >= 0 and math.isfinite(size_bytes)):
            raise ValueError(f"flow {src_device}->{dst_device} has invalid size {size_bytes}")
        cap = route.flow_cap_bytes_per_s
        if not cap > 0 or (not route.resources and cap == math.inf):
            raise ValueError(
                f"route {src_device}->{dst_device} cannot carry a flow: per-flow cap {cap} over "
                f"{len(route.resources)} resources"
            )
        return route

    def _component(self, seeds: Iterable[int]) -> list[_Flow]:
        """Active flows connected to the seed resources through shared resources."""
        on_resource = self._on_resource
        seen = set(seeds)
        stack = sorted(seen)
        flows: dict[_Flow, None] = {}
        while stack:
            for flow in on_resource[stack.pop()]:
                if flow not in flows:
                    flows[flow] = None
                    for resource in flow.resources:
                        if resource not in seen:
                            seen.add(resource)
                            stack.append(resource)
        return list(flows)

    def _recompute(self, flows: list[_Flow], finished: Container[_Flow] = ()) -> None:
        """Advance ``flows`` to now, finish those in ``finished`` and any others that are done
        (within round-off), and re-share the rest."""
        now = self._env.now
        active = []
        for flow in flows:
            flow.remaining_bytes -= flow.rate_bytes_per_s * (now - flow.updated_s)
            flow.updated_s = now
            if flow in finished or (
                flow.rate_bytes_per_s > 0 and flow.remaining_bytes <= flow.done_bytes
            ):
                self._complete(flow)
            else:
                active.append(flow)
        if len(active) == 1:
            flow = active[0]
            capacities = self._capacities
            rates = [min([flow.cap_bytes_per_s, *(capacities[r] for r in flow.resources)])]
        else:
            rates = max_min_rates(
                [(flow.resources, flow.cap_bytes_per_s) for flow in active], self._capacities
            )
        for flow, rate in zip(active, rates):
            # An unchanged rate keeps its finish time, so its heap entry stays valid.
            if rate != flow.rate_bytes_per_s:
                flow.rate_bytes_per_s = rate
                self._schedule(flow)

    def _schedule(self, flow: _Flow) -> None:
        finish_s = self._env.now + max(flow.remaining_bytes, 0.0) / flow.rate_bytes_per_s
        if finish_s != flow.finish_s:
            flow.finish_s = finish_s
            heapq.heappush(self._finishes, (finish_s, flow.number, flow))

    def _arm(self) -> None:
        """Make the pending SimPy timer fire at the earliest valid finish time."""
        finishes = self._finishes
        while finishes and not _is_current(finishes[0]):
            heapq.heappop(finishes)
        if finishes and finishes[0][0] < self._armed_s:
            self._armed_s = finishes[0][0]
            timer = self._env.timeout(max(self._armed_s - self._env.now, 0.0))
            timer.callbacks.append(self._on_timer_cb)
            self._timer = timer

    def _on_timer(self, timer: simpy.Event) -> None:
        if timer is not self._timer:
            return  # stale: an earlier finish was armed after this timer was set
        due_s = self._armed_s
        self._timer, self._armed_s = None, math.inf
        finishes = self._finishes
        finished: dict[_Flow, None] = {}
        # Compare with the time the timer was armed for, not env.now, which can differ by an ulp.
        while finishes and finishes[0][0] <= due_s:
            entry = heapq.heappop(finishes)
            if _is_current(entry):
                finished[entry[2]] = None
        on_resource = self._on_resource
        seeds: dict[int, None] = {}
        for flow in finished:
            if all(len(on_resource[resource]) == 1 for resource in flow.resources):
                self._complete(flow)  # alone on its resources (or on none): nobody to re-share
            else:
                seeds.update(dict.fromkeys(flow.resources))
        if seeds:
            # Timers are set for exactly the remaining bytes at an unchanged rate, so these
            # flows are done whatever round-off left in remaining_bytes.
            self._recompute(self._component(seeds), finished)
        self._arm()

    def _complete(self, flow: _Flow) -> None:
        """The flow's last byte has left now: free its resources and deliver after latency."""
        env = self._env
        for resource in flow.resources:
            self._on_resource[resource].pop(flow, None)
        flow.active = False
        flow.remaining_bytes = 0.0
        if self._records is not None:
            self._records.append(
                FlowRecord(
                    src_device=flow.src_device,
                    dst_device=flow.dst_device,
                    size_bytes=flow.size_bytes,
                    start_s=flow.start_s,
                    last_byte_s=env.now,
                    delivered_s=env.now + flow.latency_s,
                )
            )
        if flow.left is not None:
            flow.left.succeed()
        _succeed_after(env, flow.delivered, flow.latency_s)


def _is_current(entry: tuple[float, int, _Flow]) -> bool:
    """A heap entry is current while its flow is active and still due to finish at its time."""
    flow = entry[2]
    return flow.active and flow.finish_s == entry[0]


def _succeed_after(env: simpy.Environment, event: simpy.Event, delay_s: float) -> None:
    """``event.succeed()``, but processed ``delay_s`` from now.

    This is what ``Event.succeed`` and ``Timeout.__init__`` do inside SimPy (mark the event ok with
    its value, then schedule it); doing it here saves a Timeout plus a callback per transfer,
    which is a tenth of the engine's event traffic.
    """
    if event.triggered:
        raise RuntimeError(f"{event} has already been triggered")
    event._ok = True
    event._value = None
    env.schedule(event, delay=delay_s)
