"""profile/1: round trip, lookups with interpolation, and the errors that say what to measure."""

from __future__ import annotations

import json

import pytest

from profiler.errors import InputError
from profiler.model import gpt_small
from profiler.profile import Measured, Profile, Timing, load_profile

SHAPE = {"d_model": 512, "heads": 8, "ffn": 2048, "seq_len": 256, "vocab": 8192}


def timing(seconds: float) -> Timing:
    return Timing(median_s=seconds, spread_s=seconds / 100)


def measured(tp: int, micro_batch: int, forward_s: float, layer: bool = True) -> Measured:
    return Measured(tp=tp, micro_batch=micro_batch, forward=timing(forward_s), backward=timing(2 * forward_s),
                    recompute=timing(1.1 * forward_s) if layer else None, peak_memory_bytes=1000 * micro_batch)


def make_profile(**changes) -> Profile:
    fields = dict(device_kind="CPU", device_name="test cpu", memory_bytes=24e9, torch_version="2.13.0", threads=2,
                  dtype="fp32", host="here", date="2026-11-27T00:00:00+00:00", warmup=1, repeats=3, shape=SHAPE,
                  layers=(measured(1, 1, 0.010), measured(1, 4, 0.034), measured(2, 1, 0.006)),
                  embedding=(measured(1, 1, 0.001, False), measured(1, 4, 0.004, False)),
                  head=(measured(1, 1, 0.005, False), measured(1, 4, 0.020, False)),
                  optimizer_s_per_param_byte=2e-10)
    return Profile(**(fields | changes))


def test_round_trip_through_a_file(tmp_path) -> None:
    profile = make_profile()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile.to_json()))
    assert load_profile(path) == profile


def test_exact_shapes_and_micro_batches_interpolated_between_neighbours() -> None:
    profile = make_profile()
    assert profile.layer(1, 1) == (0.010, 0.020, 1.1 * 0.010)
    forward, backward, recompute = profile.layer(1, 2)  # a third of the way from 1 to 4
    assert forward == pytest.approx(0.010 + (0.034 - 0.010) / 3)
    assert backward == pytest.approx(2 * forward) and recompute == pytest.approx(1.1 * forward)
    assert profile.head_times(1, 3) == pytest.approx((0.015, 0.030))


@pytest.mark.parametrize("tp,micro_batch,grid", [(1, 8, "--tp 1 2 --micro-batch 1 4 8"),
                                                 (4, 1, "--tp 1 2 4 --micro-batch 1 4"),
                                                 (2, 2, "--tp 1 2 --micro-batch 1 2 4")])
def test_a_shape_it_cannot_interpolate_names_itself_and_how_to_measure_it(tp, micro_batch, grid) -> None:
    command = ("profiler compute --device cpu --kind CPU --d-model 512 --heads 8 --ffn 2048 --seq 256 --vocab 8192 "
               f"--dtype fp32 {grid}")
    with pytest.raises(InputError, match=f"no layers timing for tp {tp}, micro-batch {micro_batch}") as error:
        make_profile().layer(tp, micro_batch)
    assert f"measure it again with `{command}`" in str(error.value)


def test_a_profile_of_another_model_or_dtype_says_what_to_measure() -> None:
    profile = make_profile()
    profile.check_covers(gpt_small(4), "fp32")
    with pytest.raises(InputError, match="measured in fp32, the job trains in fp16.*--dtype fp16"):
        profile.check_covers(gpt_small(4), "fp16")
    from profiler.model import gpt3_xl
    with pytest.raises(InputError, match="profiler compute --device cpu --kind CPU --d-model 2048 --heads 16 "
                                         "--ffn 8192 --seq 2048 --vocab 29056 --dtype fp32`"):
        profile.check_covers(gpt3_xl(24), "fp32")


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(schema="profile/0"), "schema must be 'profile/1'"),
    (lambda d: d.update(dtype="fp8"), "dtype must be one of"),
    (lambda d: d["layers"][0].update(tp=0), r"layers\[0\]: 'tp' must be a positive integer"),
    (lambda d: d["layers"][1]["forward"].update(median_s="fast"), r"layers\[1\] \(tp 1, micro-batch 4\) forward: 'median_s'"),
    (lambda d: d.update(layers=[]), "no layer timings"),
    (lambda d: d.pop("shape"), "'shape' must be an object"),
])
def test_bad_profiles_are_one_line_errors_naming_the_place(tmp_path, edit, message) -> None:
    doc = make_profile().to_json()
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        load_profile(path)


def test_not_json_and_missing_files(tmp_path) -> None:
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_profile(tmp_path / "x.json")
    with pytest.raises(InputError, match="cannot read profile"):
        load_profile(tmp_path / "none.json")
