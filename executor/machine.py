"""Whether this machine can hold a plan's ranks, checked before any starts: a run that cannot
work here is refused with the numbers, not begun (64 GPT-3 XL ranks on a laptop's CPU would
swap it to a standstill before the first timeout).

Cores: gloo ranks on the CPU share the cores; each gets ``cores // ranks`` threads (at least one).
A few ranks per core still run (the tests put 4 on 2), only slower; beyond ``RANKS_PER_CORE`` they
mostly wait their turn, and the timings say nothing about the plan. GPUs: NCCL wants one per rank
(profiler.spawn.check_backend). Memory: each rank's peak as the simulator's memory model has it
(simulator.memory.stage_memory, plus its per-process reserve), summed, against the memory
available now.
"""

from __future__ import annotations

import os
from pathlib import Path

from profiler.errors import InputError
from scheduler.plan import Plan
from simulator.job import Job
from simulator.memory import RESERVED_BYTES, stage_memory

RANKS_PER_CORE = 4  # oversubscription allowed to gloo CPU ranks (the rule above)
GIB = 2**30


def check_machine(plan: Plan, backend: str, ranks_here: int) -> None:
    """InputError unless ``ranks_here`` of the plan's ranks fit on this machine's cores (gloo) and
    in its available memory."""
    cores = cores_here()
    if backend == "gloo" and ranks_here > RANKS_PER_CORE * cores:
        raise InputError(f"plan {plan.placement.config} runs {ranks_here} ranks here, but this machine has {cores} "
                         f"core(s): at most {RANKS_PER_CORE} gloo ranks per core ({RANKS_PER_CORE * cores}) run "
                         f"usefully; run it on more machines (torchrun) or pick a smaller plan")
    need = ranks_memory_bytes(plan, ranks_here)
    have = available_memory_bytes()
    if have is not None and need > have:
        raise InputError(f"plan {plan.placement.config}: its {ranks_here} ranks need about {need / GIB:.1f} GiB "
                         f"(the simulator's memory model), this machine has {have / GIB:.1f} GiB available")


def ranks_memory_bytes(plan: Plan, ranks_here: int) -> float:
    """The peak memory of ``ranks_here`` ranks (the plan's largest, if it runs more elsewhere)."""
    placement = plan.placement
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training)
    per_rank = []
    for s in range(placement.pp):
        weights, activations = stage_memory(job, placement, s)
        per_rank += [weights + activations + RESERVED_BYTES] * (placement.dp * placement.tp)
    return sum(sorted(per_rank, reverse=True)[:ranks_here])


def cores_here() -> int:
    """The cores this process may run on (its affinity: taskset or a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory_bytes() -> float | None:
    """Memory that can be had now without swapping: the kernel's MemAvailable, within a cgroup
    (v2) limit if there is one; None where neither can be read."""
    have = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                have = float(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
            have = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = float(limit) - float(Path("/sys/fs/cgroup/memory.current").read_text())
            have = free if have is None else min(have, free)
    except (OSError, ValueError):
        pass
    return have
