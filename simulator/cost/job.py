"""Per-stage cost tables of a job on a cluster: the numbers both the engine's program and the
analytic estimator are made of. Computed once per (placement, job)."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from profiler.network.topology import Topology, ring_allreduce_s
from profiler.profile import Profile
from scheduler.placement import Placement, Runtime, Schedule
from scheduler.runtimes import ADAPTIVE_DIV_VALUE, TRAITS, RuntimeTraits, accumulation_rounds, ties_embedding
from simulator.cost.compute import adaptive_clusters, device_compute, offloaded_step_s, profile_for
from simulator.cost.sharing import Unit, shared_units

# Megatron's tensor parallelism all-reduces the layer's activation twice in forward and twice in
# backward (docs/facts.md §4), and twice more in the recompute; the embedding's vocab-parallel lookup once.
TP_ALLREDUCES_FORWARD = 2
TP_ALLREDUCES_BACKWARD = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    cluster: Cluster
    model: ModelSpec
    training: TrainingSpec
    profiles: tuple[Profile, ...] = ()  # measured compute, each for the device kind it names
    # Compute the devices share (simulator.cost.sharing); None: as the cluster says. A validation sets
    # it from where a run's ranks really ran.
    units: tuple[Unit, ...] | None = None

    @property
    def compute_units(self) -> tuple[Unit, ...]:
        return self.units if self.units is not None else shared_units(self.cluster, self.profiles)

    def micro_batches(self, placement: Placement) -> int:
        per_replica = self.training.global_batch // placement.dp
        if self.training.global_batch % placement.dp or per_replica % self.training.micro_batch:
            raise ValueError(f"global batch {self.training.global_batch} does not split into "
                             f"{placement.dp} replicas of micro-batch {self.training.micro_batch}")
        return per_replica // self.training.micro_batch

    def rounds(self, placement: Placement) -> tuple[tuple[int, int], ...]:
        """The [start, end) micro-batches of each gradient-accumulation round a pipeline runs
        (scheduler.runtimes.accumulation_rounds)."""
        try:
            return accumulation_rounds(placement.runtime, self.micro_batches(placement), self.training.rounds)
        except ValueError as err:
            raise InputError(str(err)) from None

    def offloaded(self, placement: Placement) -> bool:
        """Whether the fp32 master weights and the optimizer step live in host memory, beside the
        device: never where a profile measures the devices (a CPU's ranks, as the executor runs
        them, step where they compute, after the sync)."""
        if self.measured:
            return False
        offload = self.training.offload
        return TRAITS[placement.runtime].offload_by_default if offload is None else offload

    @property
    def measured(self) -> bool:
        """Whether a profile measures some device kind of the cluster (it timed the profiler's GPT)."""
        return any(profile_for(kind, self.profiles) for kind in self.cluster.gpu_kinds)  # per kind, not device

    def head_cutoffs(self, placement: Placement) -> tuple[int, ...] | None:
        """The runtime's adaptive-softmax head, or None for a projection onto the whole vocabulary:
        also where a profile measures the devices, which times the profiler's (and the executor's)
        GPT, whose head is that projection. Cutoffs at or past the vocabulary are dropped (torch's
        AdaptiveLogSoftmaxWithLoss wants them below it); a vocabulary below the first is one
        projection."""
        cutoffs = None if self.measured else TRAITS[placement.runtime].head_cutoffs
        if cutoffs is None:
            return None
        kept = tuple(c for c in cutoffs if c < self.model.vocab)
        return kept or None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerCost:
    """One stage replica (a tensor-parallel group), one micro-batch."""

    forward_s: float  # compute + tensor-parallel all-reduces
    backward_s: float  # recompute + backward + their all-reduces
    forward_tp_s: float
    backward_tp_s: float
    optimizer_s: float
    params: float  # parameters on each device of the group; their gradients are synced


def stage_params(job: Job, placement: Placement, stage: int, traits: RuntimeTraits) -> float:
    """Parameters each device of a stage's tensor-parallel group holds (and syncs). With a tied
    embedding and several stages the last stage keeps its own copy of the word embedding."""
    model, tp = job.model, placement.tp
    start, end = placement.stage_layers[stage]
    params = (end - start) * model.layer_params_per_shard(tp)
    if stage == 0:
        params += model.embedding_params_per_shard(tp)
    if stage == placement.pp - 1:
        cutoffs = job.head_cutoffs(placement)
        if cutoffs is not None:  # final layer norm and the adaptive softmax, not split over tp
            head, tails = adaptive_clusters(model, cutoffs, ADAPTIVE_DIV_VALUE)
            params += 2 * model.d_model + model.d_model * head + sum(w * (model.d_model + span) for w, span in tails)
        else:
            shared = ties_embedding(placement.runtime, model) and placement.pp == 1
            params += model.head_params_per_shard(tp) - shared * model.vocab * model.d_model / tp
    return params


def tp_comm_s(job: Job, topology: Topology, placement: Placement, stage: int,
              group: tuple[int, ...]) -> tuple[float, float]:
    """Blocking tensor-parallel all-reduces of one micro-batch, (forward, backward incl. recompute):
    per layer 2 in forward, 2 in backward, 2 in the recompute (docs/facts.md §4); the vocab-parallel
    embedding's one in forward; at the head, the cross entropy's three of b·s fp32 values (max,
    target logit, sum of exponentials) in forward and the head input gradient's in backward."""
    model, training = job.model, job.training
    start, end = placement.stage_layers[stage]
    activation = ring_allreduce_s(topology, group, model.activation_bytes(training.micro_batch, training.precision))
    recompute = TP_ALLREDUCES_FORWARD if training.activation_recompute else 0
    forward = (end - start) * TP_ALLREDUCES_FORWARD * activation
    backward = (end - start) * (TP_ALLREDUCES_BACKWARD + recompute) * activation
    if stage == 0:
        forward += activation
    if stage == placement.pp - 1:
        forward += 3 * ring_allreduce_s(topology, group, 4.0 * training.micro_batch * model.seq_len)
        backward += activation
    return forward, backward


def worker_cost(job: Job, topology: Topology, placement: Placement, stage: int, group: tuple[int, ...],
                efficiency: tuple[float, float] | None = None) -> WorkerCost:
    """Slowest device of the group sets the pace: tensor-parallel ranks wait for each other."""
    model, training, tp = job.model, job.training, placement.tp
    start, end = placement.stage_layers[stage]
    layers = end - start
    fwd_tp, bwd_tp = tp_comm_s(job, topology, placement, stage, group)
    params = stage_params(job, placement, stage, TRAITS[placement.runtime])
    forward = backward = optimizer = 0.0
    cutoffs, offloaded = job.head_cutoffs(placement), job.offloaded(placement)
    for device in group:
        compute = device_compute(job.cluster.devices[device].gpu, model, training, tp, job.profiles, efficiency,
                                 TRAITS[placement.runtime].layer, cutoffs, ADAPTIVE_DIV_VALUE)
        lt = compute.layer
        fwd, bwd = layers * lt.forward_s, layers * (lt.backward_s + lt.recompute_s)
        if stage == 0:
            fwd, bwd = fwd + compute.embedding[0], bwd + compute.embedding[1]
        if stage == placement.pp - 1:
            fwd, bwd = fwd + compute.head[0], bwd + compute.head[1]
        forward, backward = max(forward, fwd), max(backward, bwd)
        optimizer = max(optimizer, offloaded_step_s(params) if offloaded else compute.optimizer_s(params))
    return WorkerCost(forward_s=forward + fwd_tp, backward_s=backward + bwd_tp, forward_tp_s=fwd_tp,
                      backward_tp_s=bwd_tp, optimizer_s=optimizer, params=params)


def stage_costs(job: Job, topology: Topology, placement: Placement,
                efficiency: tuple[float, float] | None = None) -> list[list[WorkerCost]]:
    """``costs[stage][replica]`` for every worker of the placement."""
    return [[worker_cost(job, topology, placement, s, placement.devices[s][r], efficiency)
             for r in range(placement.dp)]
            for s in range(placement.pp)]


# The schedule each runtime runs: Megatron's 1F1B with blocking exchanges, the study's GPipe with
# overlapped transfers (docs/facts.md §4). Other pairings are not runtimes anybody ships.
RUNTIME_SCHEDULE = {Runtime.MEGATRON: Schedule.ONE_F_ONE_B, Runtime.DECENTRALIZED: Schedule.GPIPE}


def check_runtime(placement: Placement) -> None:
    expected = RUNTIME_SCHEDULE[placement.runtime]
    if placement.schedule is not expected:
        raise InputError(f"runtime {placement.runtime.value!r} runs the {expected.value!r} schedule, "
                         f"not {placement.schedule.value!r}")
