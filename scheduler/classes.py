"""Devices that no cost can tell apart, found once so that exact searches work on classes.

Two devices are twins when swapping them leaves every latency and bandwidth to every other
device unchanged. Twinship is an equivalence (if i~j and j~k, then α[i,j] = α[k,i] = α[j,k]),
so the classes are well defined, and inside a class every pair costs the same. In the built-in
cases the classes are the regions (cases 3-5: each GPU its own host in a region) or the hosts
(cases 1-2), so a placement problem over 64 devices becomes one over 2-9 classes with counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.comm_cost import CommTables


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceClasses:
    """``members[k]`` are the devices of class k (ascending). ``latency_s[k, l]`` and
    ``bandwidth_bytes_per_s[k, l]`` are the link between any device of k and any of l; on the
    diagonal, between two devices of one class (NaN for a class of one)."""

    members: tuple[tuple[int, ...], ...]
    latency_s: np.ndarray
    bandwidth_bytes_per_s: np.ndarray
    labels: tuple[str, ...] = ()  # each class's label (its devices' GPU kind, say), if labels were given

    @property
    def index(self) -> dict[int, int]:
        """Each device's class."""
        return {d: k for k, members in enumerate(self.members) for d in members}

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(m) for m in self.members)

    def __len__(self) -> int:
        return len(self.members)


def _twins(tables: CommTables, i: int, j: int) -> bool:
    keep = np.ones(tables.size, dtype=bool)
    keep[[i, j]] = False
    return all(np.array_equal(m[i, keep], m[j, keep]) and np.array_equal(m[keep, i], m[keep, j])
               for m in (tables.latency_s, tables.bandwidth_bytes_per_s))


def device_classes(tables: CommTables, labels: tuple[str, ...] | None = None) -> DeviceClasses:
    """Partition the devices into twin classes, in order of their first device; with ``labels``
    (a GPU kind per device, say) twins must also share their label."""
    members: list[list[int]] = []
    symmetric = all(np.array_equal(m, m.T) for m in (tables.latency_s, tables.bandwidth_bytes_per_s))
    buckets: dict[bytes, list[list[int]]] = {}
    for device in range(tables.size):
        # Twins of a symmetric table have equal sorted rows: compare only within such a bucket.
        key = (np.sort(tables.latency_s[device]).tobytes() + np.sort(tables.bandwidth_bytes_per_s[device]).tobytes()
               if symmetric else b"") + (labels[device].encode() if labels else b"")
        bucket = buckets.setdefault(key, [])
        for group in bucket:
            if _twins(tables, device, group[0]):
                group.append(device)
                break
        else:
            bucket.append([device])
            members.append(bucket[-1])
    k = len(members)
    latency, bandwidth = np.full((k, k), np.nan), np.full((k, k), np.nan)
    for a, ma in enumerate(members):
        for b, mb in enumerate(members):
            j = mb[0] if a != b else (mb[1] if len(mb) > 1 else None)
            if j is not None:
                latency[a, b] = tables.latency_s[ma[0], j]
                bandwidth[a, b] = tables.bandwidth_bytes_per_s[ma[0], j]
    return DeviceClasses(members=tuple(tuple(m) for m in members), latency_s=latency,
                         bandwidth_bytes_per_s=bandwidth,
                         labels=tuple(labels[m[0]] for m in members) if labels else ())


def interchangeable(classes: DeviceClasses) -> list[list[int]]:
    """Sets of classes that any relabelling among them maps onto themselves: equal sizes and
    labels, and swapping two of them leaves the class latency and bandwidth tables as they are
    (the 8 hosts of the data-center cases, say). Every transposition with a set's first class is
    such a symmetry, so the whole symmetric group on the set is: an exact model may order them."""
    tables = [np.nan_to_num(m, nan=-1.0) for m in (classes.latency_s, classes.bandwidth_bytes_per_s)]
    label = classes.labels or ("",) * len(classes)

    def swappable(a: int, b: int) -> bool:
        order = np.arange(len(classes))
        order[[a, b]] = order[[b, a]]
        return all(np.array_equal(m, m[np.ix_(order, order)]) for m in tables)

    sets: list[list[int]] = []
    for k in range(len(classes)):
        for group in sets:
            first = group[0]
            if classes.sizes[first] == classes.sizes[k] and label[first] == label[k] and swappable(first, k):
                group.append(k)
                break
        else:
            sets.append([k])
    return [group for group in sets if len(group) > 1]
