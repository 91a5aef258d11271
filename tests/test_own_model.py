"""A user's own model and measured cluster, end to end on this machine's CPU: a model file of
Llama's architecture at a CPU's size, `profiler compute` of it, `profiler network --spawn 2`,
then `sim predict`, `sim plan`, `executor run` and `sim validate` on that shape; and a profile of
another shape refused with the command that measures the right one."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from executor.cli import main as executor_main  # noqa: E402
from profiler.cli import main as profiler_main  # noqa: E402
from simulator.cli.main import main as sim_main  # noqa: E402

MODEL = {"schema": "model/1", "name": "my-llama", "layers": 4, "d_model": 64, "heads": 4, "kv_heads": 2, "ffn": 192,
         "seq_len": 32, "vocab": 512, "activation": "swiglu", "position": "rotary", "tied_embedding": False}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The model file, its CPU profile and a measured two-rank cluster."""
    folder = tmp_path_factory.mktemp("own")
    model = folder / "model.json"
    model.write_text(json.dumps(MODEL))
    assert profiler_main(["compute", "--model", str(model), "--tp", "1", "2", "--micro-batch", "1", "--repeats", "2",
                          "--warmup", "1", "--threads", "1", "--dropout", "0", "--quiet",
                          "-o", str(folder / "cpu.json")]) == 0
    assert profiler_main(["network", "--spawn", "2", "--sizes", "4096", "65536", "--repeats", "2", "--quiet",
                          "-o", str(folder / "net.json")]) == 0
    return folder


@pytest.mark.distributed
def test_a_model_file_and_a_measured_cluster_go_through_predict_plan_run_and_validate(measured, capsys) -> None:
    model, profile, cluster = (str(measured / name) for name in ("model.json", "cpu.json", "net.json"))
    common = ["--cluster", cluster, "--profile", profile, "--model", model, "--precision", "fp32"]
    assert sim_main(["predict", *common, "--batch", "8", "--plan-time-limit", "0", "--json", "--quiet"]) == 0
    table = json.loads(capsys.readouterr().out)
    (row,) = table["rows"]
    assert row["layers"] == 4 and set(row["megatron_configs"]) == {"P1T1D2", "P1T2D1", "P2T1D1"}
    assert all(seconds > 0 for seconds in row["megatron_configs"].values())
    plan = measured / "plan.json"
    assert sim_main(["plan", *common, "--batch", "8", "--pp", "2", "--dp", "1", "--time-limit", "20", "--quiet",
                     "-o", str(plan)]) == 0
    document = json.loads(plan.read_text())
    assert document["model"] == {key: value for key, value in MODEL.items() if key != "schema"}
    run = measured / "run.json"
    assert executor_main(["run", str(plan), "--iterations", "1", "--warmup", "0", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert sim_main(["validate", str(plan), str(run), "--profile", profile, "--engine", "analytic"]) == 0
    assert "iteration" in capsys.readouterr().out


def test_a_profile_of_another_shape_is_refused_with_the_command_that_measures_it(measured, capsys) -> None:
    gpt = measured / "gpt.json"
    gpt.write_text(json.dumps(MODEL | {"name": "my-gpt", "activation": "gelu", "position": "learned",
                                       "kv_heads": None}))
    code = sim_main(["predict", "--cluster", str(measured / "net.json"), "--profile", str(measured / "cpu.json"),
                     "--model", str(gpt), "--precision", "fp32", "--batch", "8", "--plan-time-limit", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the job's model is d_model 64, heads 4, ffn 192, seq_len 32, vocab 512" in err
    assert "measure it with `profiler compute --device cpu --kind CPU --d-model 64" in err
    assert "--kv-heads" not in err.split("measure it with")[1]
