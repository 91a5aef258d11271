"""Cluster description: devices, hosts, regions and the links between them.

Two forms of network description, both in SI units:
- by region: every host has a NIC (``uplink_bandwidth_bytes_per_s``, each direction) and a GPU
  interconnect; ``links`` give latency and bandwidth within a region and between two regions.
  A link's bandwidth is the rate of *one sending host's* egress class towards the destination
  region, shared by that host's flows to it: this is how the study emulated its wide-area
  networks (tc on each sender's egress, one class per (delay, rate) pair, docs/facts.md §3).
- by device pair: ``latency_s`` and ``bandwidth_bytes_per_s`` as N×N lists in device order, for
  clusters that come from measurement (``profiler network``). These override the region links.

Compute that devices share (simulator.cost.sharing): a host's ``cpu_cores`` are shared by its CPU
devices (ranks computing on the CPU), or by those of every host naming the same ``machine`` (hosts
emulated on one machine); devices of one host with the same ``gpu_index`` are ranks sharing that
GPU. Without these fields every device computes on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from profiler.errors import InputError
from profiler.files import read_json
from profiler.gpus import GPU_KINDS, PROFILE_ONLY_KINDS

CLUSTER_SCHEMA = "cluster/1"


class Interconnect(StrEnum):
    NVLINK = "nvlink"
    PCIE = "pcie"


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    name: str
    region: str
    interconnect: Interconnect
    interconnect_bandwidth_bytes_per_s: float  # per GPU, each direction, all its links together
    interconnect_latency_s: float
    uplink_bandwidth_bytes_per_s: float  # the host's NIC, each direction
    # One GPU to one other over point-to-point (the links between that pair); None: the port.
    pair_bandwidth_bytes_per_s: float | None = None
    # The cores the host's CPU devices (ranks computing on the CPU) share; None: they do not share.
    cpu_cores: int | None = None
    # The machine the host runs on where hosts are emulated on one (`executor run
    # --emulate-network`): the CPU devices of all hosts naming one machine share its cpu_cores.
    machine: str | None = None
    # The most one TCP connection out of this host carries, each direction (AWS: 5 Gbit/s between
    # instances outside a cluster placement group); None: only the NIC and the links limit it.
    connection_bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.cpu_cores is not None and not (isinstance(self.cpu_cores, int) and self.cpu_cores >= 1):
            raise InputError(f"host {self.name!r}: cpu_cores must be a whole number of at least 1, "
                             f"got {self.cpu_cores!r}")
        if self.pair_bandwidth_bytes_per_s is not None:
            _bandwidth(f"host {self.name!r}", "pair_bandwidth_bytes_per_s", self.pair_bandwidth_bytes_per_s)
        if self.connection_bandwidth_bytes_per_s is not None:
            _bandwidth(f"host {self.name!r}", "connection_bandwidth_bytes_per_s", self.connection_bandwidth_bytes_per_s)
        _bandwidth(f"host {self.name!r}", "interconnect_bandwidth_bytes_per_s",
                  self.interconnect_bandwidth_bytes_per_s)
        _bandwidth(f"host {self.name!r}", "uplink_bandwidth_bytes_per_s",
                  self.uplink_bandwidth_bytes_per_s)
        _latency(f"host {self.name!r}", "interconnect_latency_s", self.interconnect_latency_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    id: int
    gpu: str
    host: str
    # The host's GPU this device runs on. Devices of one host with the same index are ranks that
    # share one GPU; None: a GPU of its own.
    gpu_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """Within one region (a == b) or between two regions, symmetric."""

    a: str
    b: str
    latency_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        where = f"link {self.a}-{self.b}"
        _bandwidth(where, "bandwidth_bytes_per_s", self.bandwidth_bytes_per_s)
        _latency(where, "latency_s", self.latency_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    name: str
    devices: tuple[Device, ...]
    hosts: tuple[Host, ...]
    links: tuple[Link, ...] = ()
    pair_latency_s: tuple[tuple[float, ...], ...] | None = None
    pair_bandwidth_bytes_per_s: tuple[tuple[float, ...], ...] | None = None
    # Lookups built once from the fields above (a frozen, slotted class has no cached_property):
    # host_of and link are called per device and per pair, and rebuilding these made a
    # 10,000-host cluster take half a minute to load.
    _hosts_by_name: dict[str, Host] = field(init=False, repr=False, compare=False)
    _links_by_pair: dict[frozenset[str], Link] = field(init=False, repr=False, compare=False)
    _gpu_kinds: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts_by_name", {host.name: host for host in self.hosts})
        object.__setattr__(self, "_links_by_pair", {frozenset((l.a, l.b)): l for l in self.links})
        object.__setattr__(self, "_gpu_kinds", tuple(dict.fromkeys(d.gpu for d in self.devices)))
        _check_devices(self)
        _check_machines(self)
        if (self.pair_latency_s is None) != (self.pair_bandwidth_bytes_per_s is None):
            raise InputError(f"cluster {self.name!r}: give both latency_s and "
                             "bandwidth_bytes_per_s matrices, or neither")
        _check_link_regions(self)
        if self.pair_latency_s is None:
            _check_region_links(self)
        else:
            _check_matrices(self)

    # -- lookups -------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.devices)

    def host_of(self, device: int) -> Host:
        return self._hosts_by_name[self.devices[device].host]

    def region_of(self, device: int) -> str:
        return self.host_of(device).region

    @property
    def gpu_kinds(self) -> tuple[str, ...]:
        return self._gpu_kinds

    @property
    def regions(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for device in self.devices:
            seen.setdefault(self.region_of(device.id), None)
        return tuple(seen)

    def link(self, region_a: str, region_b: str) -> Link:
        link = self._links_by_pair.get(frozenset((region_a, region_b)))
        if link is None:
            raise InputError(f"cluster {self.name!r}: no link between regions {region_a!r} and {region_b!r}")
        return link

    # -- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": CLUSTER_SCHEMA,
            "name": self.name,
            "hosts": [{"name": h.name, "region": h.region, "interconnect": h.interconnect.value,
                       "interconnect_bandwidth_bytes_per_s": h.interconnect_bandwidth_bytes_per_s,
                       "interconnect_latency_s": h.interconnect_latency_s,
                       "uplink_bandwidth_bytes_per_s": h.uplink_bandwidth_bytes_per_s}
                      | ({} if h.pair_bandwidth_bytes_per_s is None
                         else {"pair_bandwidth_bytes_per_s": h.pair_bandwidth_bytes_per_s})
                      | ({} if h.cpu_cores is None else {"cpu_cores": h.cpu_cores})
                      | ({} if h.machine is None else {"machine": h.machine})
                      | ({} if h.connection_bandwidth_bytes_per_s is None
                         else {"connection_bandwidth_bytes_per_s": h.connection_bandwidth_bytes_per_s})
                      for h in self.hosts],
            "devices": [{"id": d.id, "gpu": d.gpu, "host": d.host}
                        | ({} if d.gpu_index is None else {"gpu_index": d.gpu_index}) for d in self.devices],
            "links": [{"regions": [l.a, l.b], "latency_s": l.latency_s,
                       "bandwidth_bytes_per_s": l.bandwidth_bytes_per_s} for l in self.links],
        }
        if self.pair_latency_s is not None:
            doc["latency_s"] = [list(row) for row in self.pair_latency_s]
            doc["bandwidth_bytes_per_s"] = [list(row) for row in self.pair_bandwidth_bytes_per_s]
        return doc

    @classmethod
    def from_json(cls, doc: Any, *, where: str = "cluster") -> "Cluster":
        return _cluster_from_json(doc, where)


def load_cluster(path: str | Path) -> Cluster:
    """Read a cluster JSON file; every problem becomes one InputError line naming the file."""
    path = Path(path)
    doc = read_json(path, "cluster file")
    try:
        return Cluster.from_json(doc, where=str(path))
    except InputError as err:
        message = str(err)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None


# -- validation helpers ------------------------------------------------------------------
# Sanity bounds on what a cluster file may say: 1 kB/s is slower than any network a GPU job
# could use, and a minute of one-way latency is beyond any link on Earth.
MIN_BANDWIDTH_BYTES_PER_S = 1e3
MAX_LATENCY_S = 60.0


def _bandwidth(where: str, key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"{where}: {key} must be a positive number, got {value!r}")
    if value < MIN_BANDWIDTH_BYTES_PER_S:
        raise InputError(f"{where}: {key} {value!r} is below {MIN_BANDWIDTH_BYTES_PER_S:g} bytes/s")


def _latency(where: str, key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= MAX_LATENCY_S):
        raise InputError(f"{where}: {key} must be a number of seconds in [0, {MAX_LATENCY_S:g}], got {value!r}")


def _check_devices(cluster: Cluster) -> None:
    if not cluster.devices:
        raise InputError(f"cluster {cluster.name!r} has no devices")
    names = [h.name for h in cluster.hosts]
    if len(set(names)) != len(names):
        raise InputError(f"cluster {cluster.name!r}: duplicate host names")
    hosts = set(names)
    for index, device in enumerate(cluster.devices):
        if device.id != index:
            raise InputError(f"cluster {cluster.name!r}: device at position {index} has id "
                             f"{device.id}; ids must be 0..N-1 in order")
        if device.host not in hosts:
            raise InputError(f"cluster {cluster.name!r}: device {index} names unknown host {device.host!r}")
        if device.gpu_index is not None and device.gpu in PROFILE_ONLY_KINDS:
            raise InputError(f"cluster {cluster.name!r}: device {index} is a {device.gpu}, which has no gpu_index "
                             "(CPU devices share their host's cpu_cores)")
        if device.gpu not in GPU_KINDS and device.gpu not in PROFILE_ONLY_KINDS:
            raise InputError(f"cluster {cluster.name!r}: device {index} has unknown GPU kind "
                             f"{device.gpu!r} (known: {', '.join((*GPU_KINDS, *PROFILE_ONLY_KINDS))})")


def _check_machines(cluster: Cluster) -> None:
    cores: dict[str, int | None] = {}
    for host in cluster.hosts:
        if host.machine is not None and cores.setdefault(host.machine, host.cpu_cores) != host.cpu_cores:
            raise InputError(f"cluster {cluster.name!r}: hosts on machine {host.machine!r} give different cpu_cores")


def _check_link_regions(cluster: Cluster) -> None:
    """A link to a region no host is in is a misspelt region, or a host left out."""
    regions = {host.region for host in cluster.hosts}
    for index, link in enumerate(cluster.links):
        for region in (link.a, link.b):
            if region not in regions:
                raise InputError(f"cluster {cluster.name!r}: links[{index}] ({link.a}-{link.b}) names region "
                                 f"{region!r}, which no host is in (regions: {', '.join(sorted(regions))})")


def _check_region_links(cluster: Cluster) -> None:
    pairs = [frozenset((l.a, l.b)) for l in cluster.links]
    if len(set(pairs)) != len(pairs):
        raise InputError(f"cluster {cluster.name!r}: a pair of regions has two links")
    regions = cluster.regions
    hosts_in: dict[str, set[str]] = {r: set() for r in regions}
    for device in cluster.devices:  # one pass: the hosts with devices in each region
        hosts_in[cluster.host_of(device.id).region].add(device.host)
    host_count = {r: len(hosts) for r, hosts in hosts_in.items()}
    pairs = set(pairs)
    for i, a in enumerate(regions):
        for b in regions[i:]:
            if a == b and host_count[a] < 2:
                continue  # one host alone never uses its region's link
            if frozenset((a, b)) not in pairs:
                kind = f"within region {a!r}" if a == b else f"between regions {a!r} and {b!r}"
                raise InputError(f"cluster {cluster.name!r} is disconnected: no link {kind}")


def _check_matrices(cluster: Cluster) -> None:
    n = cluster.size
    for key, matrix in (("latency_s", cluster.pair_latency_s),
                        ("bandwidth_bytes_per_s", cluster.pair_bandwidth_bytes_per_s)):
        if len(matrix) != n or any(len(row) != n for row in matrix):
            raise InputError(f"cluster {cluster.name!r}: {key} must be a {n}x{n} matrix")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if i == j:
                    continue
                where = f"cluster {cluster.name!r} {key}[{i}][{j}]"
                if key == "latency_s":
                    _latency(where, "value", value)
                else:
                    _bandwidth(where, "value", value)


def _field(doc: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in doc:
        raise InputError(f"{where}: missing {key!r}")
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _cluster_from_json(doc: Any, where: str) -> Cluster:
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object")
    schema = doc.get("schema")
    if schema != CLUSTER_SCHEMA:
        raise InputError(f"{where}: schema is {schema!r}, expected {CLUSTER_SCHEMA!r}")
    number = (int, float)
    hosts = []
    for i, h in enumerate(_field(doc, "hosts", where, list)):
        at = f"{where} hosts[{i}]"
        if not isinstance(h, dict):
            raise InputError(f"{at}: expected an object")
        kind = _field(h, "interconnect", at, str)
        if kind not in {k.value for k in Interconnect}:
            raise InputError(f"{at}: interconnect must be 'nvlink' or 'pcie', got {kind!r}")
        hosts.append(Host(name=_field(h, "name", at, str), region=_field(h, "region", at, str),
                          interconnect=Interconnect(kind),
                          interconnect_bandwidth_bytes_per_s=_field(h, "interconnect_bandwidth_bytes_per_s", at, number),
                          interconnect_latency_s=_field(h, "interconnect_latency_s", at, number),
                          uplink_bandwidth_bytes_per_s=_field(h, "uplink_bandwidth_bytes_per_s", at, number),
                          pair_bandwidth_bytes_per_s=(_field(h, "pair_bandwidth_bytes_per_s", at, number)
                                                      if "pair_bandwidth_bytes_per_s" in h else None),
                          cpu_cores=_field(h, "cpu_cores", at, int) if "cpu_cores" in h else None,
                          machine=_field(h, "machine", at, str) if "machine" in h else None,
                          connection_bandwidth_bytes_per_s=(_field(h, "connection_bandwidth_bytes_per_s", at, number)
                                                            if "connection_bandwidth_bytes_per_s" in h else None)))
    devices = []
    for i, d in enumerate(_field(doc, "devices", where, list)):
        at = f"{where} devices[{i}]"
        if not isinstance(d, dict):
            raise InputError(f"{at}: expected an object")
        gpu_index = _field(d, "gpu_index", at, int) if "gpu_index" in d else None
        if gpu_index is not None and gpu_index < 0:
            raise InputError(f"{at}: gpu_index must be 0 or more, got {gpu_index}")
        devices.append(Device(id=_field(d, "id", at, int), gpu=_field(d, "gpu", at, str),
                              host=_field(d, "host", at, str), gpu_index=gpu_index))
    links = []
    for i, l in enumerate(_field(doc, "links", where, list) if "links" in doc else []):
        at = f"{where} links[{i}]"
        regions = _field(l, "regions", at, list) if isinstance(l, dict) else None
        if not regions or len(regions) != 2 or not all(isinstance(r, str) for r in regions):
            raise InputError(f"{at}: 'regions' must be a list of two region names")
        links.append(Link(a=regions[0], b=regions[1], latency_s=_field(l, "latency_s", at, number),
                          bandwidth_bytes_per_s=_field(l, "bandwidth_bytes_per_s", at, number)))
    return Cluster(name=_field(doc, "name", where, str), devices=tuple(devices), hosts=tuple(hosts),
                   links=tuple(links), pair_latency_s=_matrix(doc, "latency_s", where),
                   pair_bandwidth_bytes_per_s=_matrix(doc, "bandwidth_bytes_per_s", where))


def _matrix(doc: dict, key: str, where: str) -> tuple[tuple[float, ...], ...] | None:
    if key not in doc:
        return None
    rows = doc[key]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise InputError(f"{where}: {key!r} must be a list of lists")
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{where}: {key}[{i}][{j}] is not a number")
    return tuple(tuple(float(v) for v in row) for row in rows)
