"""Whether this machine can hold a plan's ranks, checked before any starts: a run that cannot
work here is refused with the numbers, not begun (64 GPT-3 XL ranks on a laptop's CPU would
swap it to a standstill before the first timeout).

Cores: gloo ranks on the CPU share the cores; each gets ``cores // ranks`` threads (at least one).
A few ranks per core still run (the tests put 4 on 2), only slower; beyond ``RANKS_PER_CORE`` they
mostly wait their turn, and the timings say nothing about the plan. GPUs: NCCL wants one per rank
(profiler.spawn.check_backend). Memory: each rank's peak as this executor holds its stage (see
``rank_memory_bytes``), summed, against the memory available now.
"""

from __future__ import annotations

import os
from pathlib import Path

from profiler.errors import InputError
from profiler.model import OPTIMIZER_STATE_BYTES
from scheduler.plan import Plan
from scheduler.runtimes import accumulation_rounds, in_flight

RANKS_PER_CORE = 4  # oversubscription allowed to gloo CPU ranks (the rule above)
GIB = 2**30
# A rank's process before its stage: the interpreter, torch's libraries and a gloo process group
# (measured 2026-12-03: peak resident 0.21 GiB after `import torch` 2.13 (CPU) and a gloo
# init_process_group, ru_maxrss), rounded up.
PROCESS_BYTES = 0.25 * 2**30
FP32_BYTES = 4  # the executor keeps weights, their gradients and the activations it saves in fp32 (executor.model)


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
                         f"(as the executor holds them), this machine has {have / GIB:.1f} GiB available")


def ranks_memory_bytes(plan: Plan, ranks_here: int) -> float:
    """The peak memory of ``ranks_here`` ranks (the plan's largest, if it runs more elsewhere)."""
    placement = plan.placement
    per_rank = [rank_memory_bytes(plan, s) for s in range(placement.pp) for _ in range(placement.dp * placement.tp)]
    return sum(sorted(per_rank, reverse=True)[:ranks_here])


def rank_memory_bytes(plan: Plan, stage: int) -> float:
    """What one rank of ``stage`` holds at its peak, as executor.model and executor.run keep it:
    its shard's weights and gradients in fp32 and the optimizer's state; the layer inputs it
    checkpoints for every micro-batch in flight (all of a round under GPipe, the warm-up depth
    under 1F1B: scheduler.runtimes.in_flight); one layer's activations while it recomputes it
    (ModelSpec.layer_activation_bytes, in fp32); and the process."""
    placement, model, training = plan.placement, plan.model, plan.training
    start, end = placement.stage_layers[stage]
    weights = stage_params(plan, stage) * (2 * FP32_BYTES + OPTIMIZER_STATE_BYTES[training.optimizer])
    boundary = model.activation_bytes(training.micro_batch, "fp32")
    working = model.layer_activation_bytes(training.micro_batch, FP32_BYTES, placement.tp)
    micro_batches = training.global_batch // placement.dp // training.micro_batch
    held = in_flight(placement, stage, micro_batches,
                     accumulation_rounds(placement.runtime, micro_batches, training.rounds))
    return weights + held * (end - start) * boundary + working + PROCESS_BYTES


def stage_params(plan: Plan, stage: int) -> float:
    """Parameters one rank of ``stage`` holds: its layers' shards, the embedding on the first
    stage, the head on the last (profiler.model counts them as executor.model builds them)."""
    placement, model = plan.placement, plan.model
    start, end = placement.stage_layers[stage]
    params = (end - start) * model.layer_params_per_shard(placement.tp)
    if stage == 0:
        params += model.embedding_params_per_shard(placement.tp)
    if stage == placement.pp - 1:
        params += model.head_params_per_shard(placement.tp)
    return params


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
