"""Where every piece of the job runs: stages × data-parallel replicas × tensor-parallel ranks.

A placement is plain numbers. ``devices[stage][replica]`` is the tuple of device ids of that
stage replica's tensor-parallel group; ``stage_layers[stage]`` is its ``[start, end)`` layer range.
The first stage also holds the embedding, the last the output head (docs/facts.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from profiler.errors import InputError


class Schedule(StrEnum):
    GPIPE = "gpipe"  # all forward micro-batches, then all backward
    ONE_F_ONE_B = "1f1b"  # Megatron's non-interleaved one-forward-one-backward


class Sync(StrEnum):
    RING = "ring"  # NCCL ring all-reduce
    PS = "ps"  # central parameter server: reduce to one replica, then broadcast
    SHARDED = "sharded"  # every replica owns 1/D of the gradient: all-to-all reduce, all-to-all gather


class Runtime(StrEnum):
    """Whose runtime executes the plan: its overlap and precision habits differ (see simulator.lowering.lower)."""

    MEGATRON = "megatron"
    DECENTRALIZED = "decentralized"  # the study's runtime


# docs/facts.md §5: the study's scheduler's cost model counts 4 bytes of gradient per parameter
# (c_dp = 0.65e9 B for 1.3e9 / 8 parameters on a device); only the comm objective's c_dp reads it.
# The runtime itself syncs fp16 gradients, 2 B a parameter (docs/facts.md §4), as the simulator does.
STUDY_GRAD_BYTES_PER_PARAM = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    pp: int
    dp: int
    tp: int
    stage_layers: tuple[tuple[int, int], ...]
    devices: tuple[tuple[tuple[int, ...], ...], ...]
    schedule: Schedule
    sync: Sync
    runtime: Runtime
    # Parameter-server sync: the replica of each stage that serves it (empty: replica 0 of
    # every stage, which the study's runtime does; a plan may spread servers over hosts).
    ps_servers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if min(self.pp, self.dp, self.tp) < 1:
            raise InputError(f"degrees must be positive, got pp={self.pp} dp={self.dp} tp={self.tp}")
        if len(self.stage_layers) != self.pp or len(self.devices) != self.pp:
            raise InputError(f"placement has {len(self.devices)} stages and {len(self.stage_layers)} layer "
                             f"ranges, expected pp={self.pp}")
        previous_end = 0
        for stage, (start, end) in enumerate(self.stage_layers):
            if start != previous_end or end <= start:
                raise InputError(f"stage {stage} layer range [{start}, {end}) does not continue from {previous_end}")
            previous_end = end
        if self.ps_servers and (len(self.ps_servers) != self.pp or any(
                isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < self.dp for r in self.ps_servers)):
            raise InputError(f"ps_servers {list(self.ps_servers)} must name one replica (0..{self.dp - 1}) "
                             f"for each of the {self.pp} stages")
        if self.ps_servers and self.sync is not Sync.PS:
            raise InputError(f"ps_servers apply to the 'ps' sync, not {self.sync.value!r}")
        seen: set[int] = set()
        for stage, replicas in enumerate(self.devices):
            if len(replicas) != self.dp:
                raise InputError(f"stage {stage} has {len(replicas)} replicas, expected dp={self.dp}")
            for replica, group in enumerate(replicas):
                if len(group) != self.tp:
                    raise InputError(f"stage {stage} replica {replica} has {len(group)} devices, expected tp={self.tp}")
                for device in group:
                    if device in seen:
                        raise InputError(f"device {device} is used twice")
                    seen.add(device)

    def server_of(self, stage: int) -> int:
        """The replica that is stage ``stage``'s parameter server."""
        return self.ps_servers[stage] if self.ps_servers else 0

    @property
    def layers(self) -> int:
        return self.stage_layers[-1][1]

    @property
    def device_count(self) -> int:
        return self.pp * self.dp * self.tp

    @property
    def config(self) -> str:
        return f"P{self.pp}T{self.tp}D{self.dp}"

    def check_layers(self, layers: int) -> None:
        if self.layers != layers:
            raise InputError(f"placement covers {self.layers} layers, the model has {layers}")

    def to_json(self) -> dict[str, Any]:
        doc = {"pp": self.pp, "dp": self.dp, "tp": self.tp, "schedule": self.schedule.value,
               "sync": self.sync.value, "runtime": self.runtime.value,
               "stages": [{"layers": list(rng), "replicas": [list(g) for g in reps]}
                          for rng, reps in zip(self.stage_layers, self.devices)]}
        if self.ps_servers:
            doc["ps_servers"] = list(self.ps_servers)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Placement":
        stages = doc["stages"]
        return cls(pp=doc["pp"], dp=doc["dp"], tp=doc["tp"], schedule=Schedule(doc["schedule"]),
                   sync=Sync(doc["sync"]), runtime=Runtime(doc["runtime"]),
                   stage_layers=tuple(_layer_range(s, i) for i, s in enumerate(stages)),
                   devices=tuple(tuple(tuple(g) for g in s["replicas"]) for s in stages),
                   ps_servers=_servers(doc.get("ps_servers")))


def _layer_range(stage: Any, index: int) -> tuple[int, int]:
    layers = stage["layers"]
    if not isinstance(layers, list) or len(layers) != 2:
        raise ValueError(f"stage {index}'s layers must be [first, end], got {layers!r}")
    return layers[0], layers[1]


def _servers(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"ps_servers must be a list of replica numbers, got {value!r}")
    return tuple(value)


def even_layers(layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """Split layers evenly over pp stages (docs/facts.md §4: 3/4/5 per stage for 24/32/40 over 8)."""
    if layers % pp:
        raise InputError(f"{layers} layers do not divide into {pp} pipeline stages")
    per = layers // pp
    return tuple((i * per, (i + 1) * per) for i in range(pp))
