"""The executor against one process: a pipelined, data-parallel run computes the same loss and
the same updated weights as the whole model in one process on the same global batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.model import Stage, batch  # noqa: E402
from executor.run import LEARNING_RATE, Settings, run_plan  # noqa: E402
from profiler.cluster import Cluster, Device, Host, Interconnect  # noqa: E402
from profiler.model import ModelSpec, TrainingSpec  # noqa: E402
from scheduler.layouts import blocks_layout  # noqa: E402
from scheduler.placement import Schedule, Sync  # noqa: E402
from scheduler.plan import Plan, Provenance  # noqa: E402

MODEL = ModelSpec(name="tiny-4l", layers=4, d_model=64, heads=4, ffn=256, seq_len=32, vocab=512)
# Llama's architecture at a CPU's size: keys and values shared by pairs of heads, SwiGLU, rotary
# positions, an untied head.
LLAMA_LIKE = ModelSpec(name="tiny-llama-4l", layers=4, d_model=64, heads=4, kv_heads=2, ffn=192, seq_len=32,
                       vocab=512, activation="swiglu", position="rotary", tied_embedding=False)


def cpu_plan(pp: int, dp: int, *, schedule: Schedule = Schedule.GPIPE, sync: Sync = Sync.PS, batch_size: int = 8,
             micro_batch: int = 1, recompute: bool = False, servers: tuple[int, ...] = (), rounds: int | None = None) -> Plan:
    host = Host(name="local", region="here", interconnect=Interconnect.PCIE, interconnect_bandwidth_bytes_per_s=1e10,
                interconnect_latency_s=1e-5, uplink_bandwidth_bytes_per_s=1e9)
    cluster = Cluster(name="cpu", devices=tuple(Device(id=i, gpu="CPU", host="local") for i in range(pp * dp)),
                      hosts=(host,))
    from dataclasses import replace
    placement = replace(blocks_layout(list(range(pp * dp)), MODEL.layers, pp, dp), schedule=schedule, sync=sync,
                        ps_servers=servers)
    training = TrainingSpec(global_batch=batch_size, micro_batch=micro_batch, precision="fp32",
                            activation_recompute=recompute, rounds=rounds)
    return Plan(cluster=cluster, case=None, model=MODEL, training=training, placement=placement,
                provenance=Provenance(method="manual", objective="time"))


def assert_same_steps(value: torch.Tensor, expected: torch.Tensor, initial: torch.Tensor, name: str) -> None:
    """The weights moved as the reference's did: within 1% of the reference's own movement, plus 4
    float32 ulps of the weight (a learning rate of 1e-3 moves weights by ~1e-6, so comparing the
    weights alone could not tell a wrong gradient from a right one)."""
    slack = 0.01 * (expected - initial).abs() + 4 * torch.finfo(torch.float32).eps * expected.abs()
    worst = ((value - expected).abs() - slack).max().item()
    assert worst <= 0, f"{name}: off by {worst:.3g} beyond the slack"


def whole(plan: Plan) -> Stage:
    """The whole model in one process, its word embedding tied as the plan's runtime ties it."""
    from scheduler.runtimes import ties_embedding

    return Stage(plan.model, 0, plan.model.layers, 0, recompute=False,
                 tied=ties_embedding(plan.placement.runtime, plan.model))


def reference(plan: Plan, iterations: int) -> tuple[list[float], dict]:
    full = whole(plan)
    optimizer = torch.optim.SGD(full.parameters(), lr=LEARNING_RATE)
    losses = []
    for iteration in range(iterations):
        ids, targets = batch(plan.model, plan.training.global_batch, iteration, 0)
        optimizer.zero_grad()
        loss = full(ids, targets)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, full.state_dict()


@pytest.mark.distributed
@pytest.mark.parametrize("pp,dp,kwargs", [
    (2, 2, dict()),
    (2, 2, dict(schedule=Schedule.ONE_F_ONE_B, sync=Sync.RING, recompute=True)),
    (4, 1, dict(schedule=Schedule.ONE_F_ONE_B, micro_batch=2)),
    (1, 4, dict(servers=(2,))),
    (1, 3, dict(batch_size=6, servers=(1,), emulate=True)),  # NCCL's reduce and broadcast chains, in chunks
    (2, 2, dict(rounds=2)),  # two rounds of gradient accumulation, a barrier in each
    (2, 2, dict(rounds=2, emulate=True, grouped=True)),
    (1, 3, dict(sync=Sync.RING, batch_size=6, emulate=True)),  # the ring's point-to-point steps, uneven chunks
    (1, 3, dict(sync=Sync.SHARDED, batch_size=6)),
    (2, 2, dict(sync=Sync.SHARDED, emulate=True)),
    # The exchanges as NCCL gets them (in program order, a send with the receive after it, each
    # sync step one group), on gloo; with the emulator's stamps too.
    (2, 2, dict(schedule=Schedule.ONE_F_ONE_B, sync=Sync.RING, grouped=True)),
    (4, 1, dict(grouped=True)),
    (4, 1, dict(schedule=Schedule.ONE_F_ONE_B, grouped=True)),
    (1, 3, dict(sync=Sync.SHARDED, batch_size=6, grouped=True)),
    (2, 2, dict(grouped=True, emulate=True)),
    (2, 2, dict(schedule=Schedule.ONE_F_ONE_B, sync=Sync.RING, grouped=True, emulate=True)),
    (2, 2, dict(sync=Sync.SHARDED, grouped=True, emulate=True)),
])
def test_a_pipelined_data_parallel_run_equals_one_process(pp, dp, kwargs, monkeypatch) -> None:
    emulate, grouped = kwargs.pop("emulate", False), kwargs.pop("grouped", False)
    # Grouped, every point-to-point operation must go through batch_isend_irecv (NCCL's grouped
    # operations and its bare ones take different communicators; gloo would not notice).
    monkeypatch.setenv("TASKLET_EXECUTOR_STRICT_P2P", "1")
    assert_equals_one_process(cpu_plan(pp, dp, **kwargs), emulate, grouped)


def assert_equals_one_process(plan: Plan, emulate: bool = False, grouped: bool = False) -> None:
    """Two iterations: the loss, and each rank's weights (a tensor-parallel rank's shards) against
    the same slices of the one-process model's."""
    from executor.tensor_parallel import shard_indices

    result = run_plan(plan, Settings(iterations=2, warmup=0, keep_weights=True, emulate_network=emulate,
                                     grouped_exchanges=grouped))
    losses, weights = reference(plan, 2)
    initial = whole(plan).state_dict()
    assert result["loss"] == pytest.approx(losses, rel=1e-5)
    tp = plan.placement.tp
    for rank in result["ranks"]:
        start, _ = plan.placement.stage_layers[rank["stage"]]
        for key, value in rank["weights"].items():
            part, rest = key.split(".", 1)
            if part == "layers":
                local, rest = rest.split(".", 1)
                key, part = f"layers.{start + int(local)}.{rest}", "layer"
            expected, before = weights[key], initial[key]
            if tp > 1 and rest in shard_indices(plan.model, part, tp, rank["tp_rank"]):
                dim, index = shard_indices(plan.model, part, tp, rank["tp_rank"])[rest]
                expected, before = expected.index_select(dim, index), before.index_select(dim, index)
            assert_same_steps(torch.from_numpy(value), expected, before, key)
    assert len(result["iteration_s"]) == 2 and all(s > 0 for s in result["iteration_s"])


def tp_plan(pp: int, tp: int, dp: int, gpipe: bool, model: ModelSpec = MODEL) -> Plan:
    from dataclasses import replace

    from scheduler.layouts import megatron_layout
    from scheduler.placement import Runtime

    base = cpu_plan(1, pp * tp * dp, recompute=True)
    placement = megatron_layout(pp * tp * dp, model.layers, pp, tp)
    if gpipe:
        placement = replace(placement, schedule=Schedule.GPIPE, sync=Sync.PS, runtime=Runtime.DECENTRALIZED)
    return replace(base, placement=placement, model=model)


@pytest.mark.distributed
@pytest.mark.parametrize("pp,tp,dp,gpipe,grouped", [(2, 2, 1, False, False), (1, 2, 2, True, False),
                                                   (2, 2, 1, True, False), (2, 2, 1, False, True),
                                                   # Megatron's tied word embedding: on two stages, on one
                                                   (2, 1, 2, False, False), (1, 2, 2, False, False)])
def test_a_tensor_parallel_run_equals_one_process(pp, tp, dp, gpipe, grouped) -> None:
    """Megatron's layout (``gpipe`` False: 1F1B, ring, its tied word embedding) or the study's."""
    assert_equals_one_process(tp_plan(pp, tp, dp, gpipe), grouped=grouped)


@pytest.mark.distributed
def test_a_model_of_llamas_architecture_runs_pipelined_and_tensor_parallel_as_one_process() -> None:
    """Grouped-query attention sharded by key-value heads, SwiGLU's gate and up projections by
    columns, rotary positions, an untied head: P2T2D1 equals the whole model in one process."""
    assert_equals_one_process(tp_plan(2, 2, 1, False, LLAMA_LIKE))


@pytest.mark.distributed
def test_the_tied_embedding_syncs_over_an_emulated_link_too() -> None:
    assert_equals_one_process(tp_plan(2, 1, 2, False), emulate=True)  # Megatron P2D2: ring steps, then the pair's


@pytest.mark.distributed
@pytest.mark.parametrize("grouped", [False, True])
def test_tensor_parallel_all_reduces_run_as_ring_steps_over_emulated_links(grouped, monkeypatch) -> None:
    # P2T2D1 1F1B: the layers' sums, the head's max and sums, as shaped point-to-point ring steps.
    monkeypatch.setenv("TASKLET_EXECUTOR_STRICT_P2P", "1")
    assert_equals_one_process(tp_plan(2, 2, 1, False), emulate=True, grouped=grouped)


@pytest.mark.distributed
def test_a_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path) -> None:
    plan = cpu_plan(2, 2)
    whole = run_plan(plan, Settings(iterations=4, warmup=0, keep_weights=True))
    folder = tmp_path / "checkpoints"
    first = run_plan(plan, Settings(iterations=2, warmup=0, checkpoint_dir=str(folder), every=1))
    assert first["loss"] == pytest.approx(whole["loss"][:2], rel=1e-6)
    # a run killed while writing leaves half a checkpoint behind; latest.json still names iteration 1
    (folder / "iteration-2").mkdir()
    (folder / "iteration-2" / "rank-0.pt").write_bytes(b"half")
    (folder / "iteration-1" / ".rank-0.pt.partial").write_bytes(b"half")
    resumed = run_plan(plan, Settings(iterations=4, warmup=0, keep_weights=True, checkpoint_dir=str(folder),
                                      resume=True))
    assert resumed["loss"] == pytest.approx(whole["loss"][2:], rel=1e-6)
    for a, b in zip(whole["ranks"], resumed["ranks"]):
        for key in a["weights"]:
            torch.testing.assert_close(torch.from_numpy(b["weights"][key]), torch.from_numpy(a["weights"][key]),
                                       rtol=1e-6, atol=1e-7)


@pytest.mark.distributed
@pytest.mark.parametrize("fault,message", [
    ("2:1:exit", "rank 2 exited with code 3"),
    ("3:1:hang", "failed during 'the barrier before iteration 1'"),
])
def test_a_rank_that_dies_or_hangs_stops_the_run_naming_it(monkeypatch, fault, message) -> None:
    from profiler.spawn import RankFailed

    monkeypatch.setenv("TASKLET_EXECUTOR_FAULT", fault)
    with pytest.raises(RankFailed, match=message) as failure:
        run_plan(cpu_plan(2, 2), Settings(iterations=2, warmup=0, timeout_s=5))
    if "hang" in fault:  # a waiting peer names itself and what it waited on
        assert "stage" in str(failure.value) and "replica" in str(failure.value)


@pytest.mark.distributed
def test_a_bf16_plan_computes_and_sends_in_bf16() -> None:
    # A stage's GEMMs run in bf16 under its run(); a pipelined bf16 run lands near one fp32 process.
    from dataclasses import replace

    stage = Stage(MODEL, 0, 2, 0, recompute=False, precision="bf16")
    seen = []
    stage.layers[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for module in stage.layers[1].modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ids, _ = batch(MODEL, 2, 0, 0)
    stage.run(ids)
    assert seen[0] == torch.float32 and set(seen[1:]) == {torch.bfloat16}  # residual stream fp32, GEMMs bf16
    assert stage.activation_dtype == torch.bfloat16
    plan = cpu_plan(2, 1)
    plan = replace(plan, training=replace(plan.training, precision="bf16"))
    result = run_plan(plan, Settings(iterations=1, warmup=0))
    fp32, _ = reference(plan, 1)
    assert result["loss"] == pytest.approx(fp32, rel=2e-2)
    assert result["environment"]["precision"] == "bf16" and result["environment"]["device"] == "cpu"


def test_nccl_wants_cuda_and_a_gpu_for_each_rank(monkeypatch) -> None:
    from profiler.errors import InputError
    from profiler.spawn import check_backend

    check_backend("gloo", 8)  # gloo runs anywhere
    with pytest.raises(InputError, match="--backend nccl needs CUDA and NCCL"):
        check_backend("nccl", 1) if not torch.cuda.is_available() else pytest.skip("this torch has CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    check_backend("nccl", 2)
    with pytest.raises(InputError, match="needs a GPU for each rank: 4 ranks on this host, torch sees 2 GPU"):
        check_backend("nccl", 4)
