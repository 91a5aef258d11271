"""`executor run`'s work: one process per device of the plan (rank = device id), each running its
stage of its pipeline through the plan's schedule, then the gradient sync and the optimizer.

Locally the ranks are spawned on this machine and meet on the loopback; under torchrun each
process takes its rank from the environment. The first ``warmup`` iterations are run and left out
of the timings. Rank 0 gathers the report: per-iteration seconds (the slowest rank's, from a
common start after a barrier), the loss, every rank's spans of the last iteration, and the
environment.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from executor import checkpoint
from executor.machine import check_machine, cores_here
from executor.model import Stage, batch
from executor.schedule import Recorder, Role, barrier, run_iteration, shaped_ring, sync_embedding, sync_gradients
from executor.shaper import Shaper
from profiler.errors import InputError
from profiler.spawn import TIMEOUT, check_backend, rank_device, run_local
from scheduler.plan import Plan, plan_from_json
from scheduler.runtimes import TRAITS, accumulation_rounds, ties_embedding

LEARNING_RATE = 1e-3


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    iterations: int
    warmup: int = 1
    backend: str = "gloo"
    seed: int = 0
    emulate_network: bool = False  # hold every transfer as the plan's cluster's links would (executor.shaper)
    checkpoint_dir: str | None = None  # executor.checkpoint
    every: int = 1  # checkpoint after every this many iterations
    resume: bool = False  # go on from the last complete checkpoint in checkpoint_dir
    timeout_s: float = TIMEOUT.total_seconds()  # a rank waiting this long on a peer stops the run
    keep_weights: bool = False  # tests: every rank's final stage weights come back in the result
    shaper_log: str | None = None  # the local ranks' shared transfer log (executor.shaper); set by run_plan
    # Pipeline receives posted in program order with their sends (NCCL needs it: executor.schedule.
    # Grouped); None: as the backend needs. Tests run it on gloo.
    grouped_exchanges: bool | None = None


def check_runnable(plan: Plan) -> None:
    placement = plan.placement
    model = plan.model
    if placement.tp > 1 and (model.heads % placement.tp or model.ffn % placement.tp or model.vocab % placement.tp):
        raise InputError(f"plan {placement.config}: {model.heads} heads, FFN {model.ffn} and vocabulary {model.vocab} "
                         f"must each divide into {placement.tp} tensor-parallel shards")


def check_start(plan: Plan, settings: Settings, ranks_here: int) -> None:
    """Everything that can be known wrong before a rank starts: the backend, this machine's cores
    and memory, the plan's shards, and the checkpoint a resume would start from."""
    check_backend(settings.backend, ranks_here)
    check_machine(plan, settings.backend, ranks_here)
    check_runnable(plan)
    if settings.resume and settings.checkpoint_dir:
        checkpoint.latest(Path(settings.checkpoint_dir), plan)


def run_plan(plan: Plan, settings: Settings, verbose: bool = False) -> dict[str, Any]:
    """Spawn the plan's ranks here and return rank 0's result."""
    check_start(plan, settings, plan.placement.device_count)
    with tempfile.TemporaryDirectory(prefix="tasklet-shaper-") as folder:
        if settings.emulate_network:
            settings = replace(settings, shaper_log=Shaper.create_log(Path(folder) / "transfers"))
        if verbose:
            print(f"[executor] starting {plan.placement.device_count} ranks…", file=sys.stderr, flush=True)
        return run_local(_rank_main, plan.placement.device_count, settings.backend,
                         (plan.to_json(), settings, verbose), timeout=datetime.timedelta(seconds=settings.timeout_s))


def run_under_torchrun(plan: Plan, settings: Settings, verbose: bool = False) -> dict[str, Any] | None:
    """This process's rank of a torchrun launch (rank and world from the environment): rank 0's
    result, None on the others."""
    world = int(os.environ["WORLD_SIZE"])
    check_start(plan, settings, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if world != plan.placement.device_count:
        raise InputError(f"plan {plan.placement.config} runs {plan.placement.device_count} ranks; torchrun started "
                         f"{world}")
    dist.init_process_group(settings.backend, timeout=datetime.timedelta(seconds=settings.timeout_s))
    try:
        result = _rank_main(plan.to_json(), settings, verbose)
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def _rank_main(plan_doc: dict, settings: Settings, verbose: bool) -> dict[str, Any] | None:
    _note_pid(dist.get_rank())
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))  # torchrun sets it per host
    torch.set_num_threads(max(1, cores_here() // ranks_here))
    show = (lambda text: print(f"[executor] {text}", file=sys.stderr, flush=True)) \
        if verbose and dist.get_rank() == 0 else None
    if show:
        show("ranks ready")
    plan = plan_from_json(plan_doc)
    record = Recorder()
    try:
        return run_rank(plan, settings, show, record)
    except Exception as err:  # the parent sees the last line: which rank, doing what
        role = roles_of(plan)[dist.get_rank()]
        raise RuntimeError(f"stage {role[0]} replica {role[1]} (rank {dist.get_rank()}) failed during "
                           f"{record.doing!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") \
            from None


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def roles(plan: Plan) -> dict[int, Role]:
    """Every rank's role; creates the process groups: each stage's data-parallel group per
    tensor-parallel rank, then each stage replica's tensor-parallel group (every rank must create
    every group, in the same order)."""
    placement = plan.placement
    P, D, T, devices = placement.pp, placement.dp, placement.tp, placement.devices
    dp_groups = {}
    for s in range(P):
        for t in range(T):
            dp_groups[s, t] = dist.new_group(ranks=[devices[s][r][t] for r in range(D)]) if D > 1 else None
    tp_groups = {(s, r): dist.new_group(ranks=list(devices[s][r])) if T > 1 else None
                 for s in range(P) for r in range(D)}
    tied = ties_embedding(placement.runtime, plan.model) and P > 1
    embedding_groups = {(r, t): dist.new_group(ranks=[devices[0][r][t], devices[P - 1][r][t]]) if tied else None
                        for r in range(D) for t in range(T)}
    out = {}
    for s in range(P):
        for r in range(D):
            for t in range(T):
                peers = [devices[s][i][t] for i in range(D)]
                out[devices[s][r][t]] = Role(stage=s, replica=r, stages=P,
                                             previous=devices[s - 1][r][t] if s > 0 else None,
                                             following=devices[s + 1][r][t] if s < P - 1 else None,
                                             group=dp_groups[s, t], peers=peers, server=peers[placement.server_of(s)],
                                             tp=T, tp_rank=t, tp_group=tp_groups[s, r],
                                             tp_members=tuple(devices[s][r]),
                                             embedding_group=embedding_groups[r, t] if s in (0, P - 1) else None,
                                             embedding_peers=[devices[0][r][t], devices[P - 1][r][t]])
    return out


def roles_of(plan: Plan) -> dict[int, tuple[int, int]]:
    """Each rank's (stage, replica)."""
    return {rank: (s, r) for s, replicas in enumerate(plan.placement.devices) for r, group in enumerate(replicas)
            for rank in group}


def _fault(rank: int, iteration: int) -> None:
    """A fault injected for the tests (TASKLET_EXECUTOR_FAULT=rank:iteration:exit|hang): this rank
    dies, or stops answering, at the start of that iteration."""
    spec = os.environ.get("TASKLET_EXECUTOR_FAULT", "")
    if spec and spec.split(":")[:2] == [str(rank), str(iteration)]:
        if spec.endswith(":exit"):
            os._exit(3)
        time.sleep(3600)


def _note_pid(rank: int) -> None:
    """For the fault tests (TASKLET_EXECUTOR_PIDS=folder): this rank's process id in
    ``folder/rank-{rank}.pid``, so a test can signal one rank and check none outlives the run."""
    folder = os.environ.get("TASKLET_EXECUTOR_PIDS")
    if folder:
        Path(folder, f"rank-{rank}.pid").write_text(f"{os.getpid()}\n")


def _strict_point_to_point() -> None:
    """For the tests (TASKLET_EXECUTOR_STRICT_P2P=1, grouped exchanges): a point-to-point operation
    posted outside ``batch_isend_irecv`` raises, since under NCCL it would run on a communicator of
    its own that the grouped operations never meet (gloo cannot tell)."""
    import torch.distributed.distributed_c10d as c10d

    inside, batch = [False], c10d.batch_isend_irecv

    def guarded(original: Callable) -> Callable:
        def operation(*args, **kwargs):
            if not inside[0]:
                raise RuntimeError(f"a bare {original.__name__} where the exchanges are grouped")
            return original(*args, **kwargs)
        return operation

    def grouped(ops: list):
        inside[0] = True
        try:
            return batch(ops)
        finally:
            inside[0] = False

    isend, irecv = guarded(c10d.isend), guarded(c10d.irecv)
    for module in (c10d, dist):
        module.isend, module.irecv, module.batch_isend_irecv = isend, irecv, grouped


def run_rank(plan: Plan, settings: Settings, progress: Callable[[str], None] | None,
             record: Recorder | None = None) -> dict[str, Any] | None:
    rank = dist.get_rank()
    role = roles(plan)[rank]
    model, training, placement = plan.model, plan.training, plan.placement
    start, end = placement.stage_layers[role.stage]
    device = rank_device(settings.backend)
    stage = Stage(model, start, end, settings.seed, training.activation_recompute, placement.tp, role.tp_rank,
                  role.tp_group, training.precision, ties_embedding(placement.runtime, model)).to(device)
    stage.gradient_buffer()  # before the optimizer, which then steps the views
    optimizer = torch.optim.SGD(stage.parameters(), lr=LEARNING_RATE)
    shaper = Shaper(plan.cluster, rank, settings.shaper_log, device) if settings.emulate_network else None
    grouped = settings.backend == "nccl" if settings.grouped_exchanges is None else settings.grouped_exchanges
    if grouped and os.environ.get("TASKLET_EXECUTOR_STRICT_P2P"):
        _strict_point_to_point()
    if shaper and placement.tp > 1:  # the group's all-reduces as ring steps over the emulated links
        from executor import tensor_parallel

        tensor_parallel.shape_with(lambda x, op: shaped_ring(x, list(role.tp_members), shaper, op, role.tp_group))
    M, share = plan.micro_batches, training.global_batch // placement.dp
    shape = (training.micro_batch, model.seq_len, model.d_model)
    # The study's runtime: rounds of gradient accumulation, a barrier across its ranks (in its
    # rank order) between each round's halves and at the end of the iteration.
    study = TRAITS[placement.runtime].round_micro_batches is not None
    rounds = accumulation_rounds(placement.runtime, M, training.rounds)
    members = [placement.devices[s][r][0] for r in range(placement.dp) for s in range(placement.pp)]

    def wait(label: str) -> None:
        record.time(label, "barrier", lambda: barrier(members, shaper, device))
    seconds, losses = [], []
    record = record or Recorder()
    record.device = device
    folder = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    fingerprint = plan.fingerprint()
    first = 0
    if folder and settings.resume:
        done = checkpoint.latest(folder, plan)
        if done is not None:
            checkpoint.load(folder, done, rank, stage, optimizer)
            first = done + 1
    for iteration in range(first, settings.warmup + settings.iterations):
        ids, targets = batch(model, training.global_batch, iteration, settings.seed)
        mine = slice(role.replica * share, (role.replica + 1) * share)
        ids, targets = ids[mine].to(device), targets[mine].to(device)
        optimizer.zero_grad(set_to_none=False)
        _fault(rank, iteration)
        record.doing = f"the barrier before iteration {iteration}"
        dist.barrier()
        record.origin, record.spans = record.now(), []
        loss = run_iteration(stage, role, ids, targets, M, placement.schedule.value, shape,
                             1.0 / (M * placement.dp), record, shaper, grouped, rounds, wait)
        loss = loss if role.tp_rank == 0 else 0.0  # the group's ranks all hold the loss: count it once
        sync_gradients(stage, role, placement.sync.value, record, shaper)
        sync_embedding(stage, role, record, shaper)
        record.time("optimizer", "optimizer", optimizer.step)
        if study:
            wait("barrier at the end")
        elapsed = torch.tensor([record.now() - record.origin, loss], device=device)
        dist.all_reduce(elapsed[:1], op=dist.ReduceOp.MAX)
        dist.all_reduce(elapsed[1:], op=dist.ReduceOp.SUM)
        if iteration >= settings.warmup:
            seconds.append(float(elapsed[0]))
            losses.append(float(elapsed[1]) / (M * placement.dp))
        if progress:
            progress(f"iteration {iteration + 1} of {settings.warmup + settings.iterations}: "
                     f"{float(elapsed[0]):.3f} s, loss {float(elapsed[1]) / (M * placement.dp):.4f}")
        if folder and (iteration + 1) % settings.every == 0:
            checkpoint.save(folder, iteration, rank, stage, optimizer, fingerprint)
    gathered: list = [None] * dist.get_world_size()
    weights = {k: v.detach().cpu().numpy().copy() for k, v in stage.state_dict().items()} if settings.keep_weights else None
    dist.all_gather_object(gathered, {"rank": rank, "stage": role.stage, "replica": role.replica, "tp_rank": role.tp_rank,
                                      "host": platform.node(), "cpus": cores_here(), "device": _device_name(device),
                                      "threads": torch.get_num_threads(), "spans": record.spans,
                                      "weights": weights})
    if rank != 0:
        return None
    return {"iteration_s": seconds, "loss": losses, "ranks": sorted(gathered, key=lambda g: g["rank"]),
            "environment": {"torch_version": torch.__version__, "backend": settings.backend, "host": platform.node(),
                            "threads_per_rank": torch.get_num_threads(), "cpus": cores_here(), "dropout": 0.0,
                            "device": _device_name(device), "precision": training.precision,
                            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}}
