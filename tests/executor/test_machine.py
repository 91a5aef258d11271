"""Whether a plan's ranks fit this machine: the executor's own count of what a rank holds, held to
the stages it really builds, and the refusals before any rank starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from executor import machine
from executor.model import Stage
from profiler.errors import InputError
from profiler.model import ModelSpec
from scheduler.plan import load_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


LLAMA_LIKE = ModelSpec(name="tiny-llama-4l", layers=4, d_model=64, heads=4, kv_heads=2, ffn=192, seq_len=32,
                       vocab=512, activation="swiglu", position="rotary", tied_embedding=False)


@pytest.mark.parametrize("name,model", [("cpu-pipeline-plan.json", None), ("cpu-pipeline-only-plan.json", None),
                                        ("cpu-pipeline-plan.json", LLAMA_LIKE)])
def test_the_parameters_counted_are_those_of_the_stages_built(name, model) -> None:
    plan = load_plan(EXAMPLES / name)
    plan = replace(plan, model=model) if model else plan
    for s, (start, end) in enumerate(plan.placement.stage_layers):
        stage = Stage(plan.model, start, end, seed=0, recompute=True)
        assert machine.stage_params(plan, s) == sum(p.numel() for p in stage.parameters())


def test_a_rank_holds_its_weights_gradients_and_in_flight_inputs() -> None:
    plan = load_plan(EXAMPLES / "cpu-pipeline-plan.json")  # GPipe, 8 sequences over 2 replicas: 4 in flight
    weights = machine.stage_params(plan, 0) * 2 * machine.FP32_BYTES  # plain SGD keeps no state
    boundary = plan.model.activation_bytes(1, "fp32")
    start, end = plan.placement.stage_layers[0]
    held = 4 * (end - start) * boundary
    working = boundary * (17 + 2.5 * plan.model.heads * plan.model.seq_len / plan.model.d_model)
    assert machine.rank_memory_bytes(plan, 0) == pytest.approx(weights + held + working + machine.PROCESS_BYTES)


def test_ranks_that_need_more_memory_than_is_available_are_refused(monkeypatch) -> None:
    plan = load_plan(EXAMPLES / "cpu-pipeline-plan.json")
    need = machine.ranks_memory_bytes(plan, 4)
    monkeypatch.setattr(machine, "cores_here", lambda: 2)
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: need * 0.99)
    with pytest.raises(InputError, match=r"its 4 ranks need about .* GiB \(as the executor holds them\)"):
        machine.check_machine(plan, "gloo", 4)
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: need * 1.01)
    machine.check_machine(plan, "gloo", 4)
    with pytest.raises(InputError, match="at most 4 gloo ranks per core"):
        machine.check_machine(plan, "gloo", 9)
