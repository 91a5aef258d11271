"""Plan files (plan/1): round trips, and every bad plan is one line naming the file and the problem."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from profiler.errors import InputError
from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import world
from scheduler.layouts import megatron_layout, random_layout
from scheduler.plan import Plan, Provenance, fingerprint, load_plan, plan_from_json

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "world-random-plan.json"


def make_plan(case: str | None = "world", layers: int = 24, batch: int = 1024) -> Plan:
    return Plan(cluster=world(), case=case, model=gpt3_xl(layers), training=TrainingSpec(global_batch=batch),
                placement=random_layout(64, layers, 8, 8, seed=3),
                provenance=Provenance(method="random", objective="time", seed=3, predicted_iteration_s=1.5))


@pytest.mark.parametrize("case", ["world", None], ids=["by case", "embedded"])
def test_round_trip(case):
    plan = make_plan(case)
    doc = json.loads(json.dumps(plan.to_json()))
    assert plan_from_json(doc) == plan
    assert ("fingerprint" in doc["cluster"]) == (case is not None)
    assert doc["micro_batches"] == 1024 // 8


def test_round_trip_with_parameter_servers():
    plan = make_plan()
    placement = dataclasses.replace(plan.placement, ps_servers=(0, 1, 2, 3, 4, 5, 6, 7))
    plan = dataclasses.replace(plan, placement=placement)
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc["placement"]["ps_servers"] == list(range(8))
    assert plan_from_json(doc) == plan and plan.placement.server_of(5) == 5
    assert "ps_servers" not in make_plan().to_json()["placement"]  # replica 0 everywhere: the study's default


def test_example_plan_loads_and_is_the_seed_0_random_placement():
    plan = load_plan(EXAMPLE)
    assert plan.placement == random_layout(64, 24, 8, 8, seed=0)
    assert plan.case == "world"


def edit(change):
    doc = make_plan().to_json()
    change(doc)
    return doc


BAD = {
    "wrong schema": (lambda d: d.update(schema="plan/0"), "schema"),
    "missing training": (lambda d: d.pop("training"), "missing 'training'"),
    "device out of range": (lambda d: d["placement"]["stages"][0]["replicas"][0].__setitem__(0, 99), "device 99"),
    "device twice": (lambda d: d["placement"]["stages"][1]["replicas"][0].__setitem__(
        0, d["placement"]["stages"][0]["replicas"][0][0]), "used twice"),
    "layers not covered": (lambda d: d["placement"]["stages"][-1].__setitem__("layers", [21, 23]), "covers 23 layers"),
    "gap in layers": (lambda d: d["placement"]["stages"][1].__setitem__("layers", [4, 6]), "does not continue"),
    "batch does not split": (lambda d: d["training"].__setitem__("global_batch", 1020), "does not split"),
    "micro-batch count off": (lambda d: d.__setitem__("micro_batches", 7), "disagree"),
    "unknown schedule": (lambda d: d["placement"].__setitem__("schedule", "zigzag"), "zigzag"),
    "changed case": (lambda d: d["cluster"].__setitem__("fingerprint", "sha256:0"), "has changed"),
    "server per stage short": (lambda d: d["placement"].__setitem__("ps_servers", [0, 1]), "ps_servers"),
    "server out of range": (lambda d: d["placement"].__setitem__("ps_servers", [8] * 8), "0..7"),
    "servers with a ring": (lambda d: d["placement"].update(ps_servers=[1] * 8, sync="ring"), "'ring'"),
    "server not a number": (lambda d: d["placement"].__setitem__("ps_servers", ["1"] * 8), "ps_servers"),
    "server a float": (lambda d: d["placement"].__setitem__("ps_servers", [1.0] * 8), "ps_servers"),
    "servers not a list": (lambda d: d["placement"].__setitem__("ps_servers", 3), "ps_servers"),
    "unknown case": (lambda d: d["cluster"].__setitem__("case", "mars"), "unknown case"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_plans_are_one_line_input_errors(name, tmp_path):
    change, words = BAD[name]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(edit(change)))
    with pytest.raises(InputError) as err:
        load_plan(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and words in message, message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="cannot read plan file"):
        load_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_plan(bad)


def test_fingerprint_follows_the_contents():
    assert fingerprint(world()) == fingerprint(world())
    assert fingerprint(world()).startswith("sha256:")


def test_batch_must_split_over_the_replicas():
    with pytest.raises(InputError, match="does not split"):
        Plan(cluster=world(), case="world", model=gpt3_xl(24), training=TrainingSpec(global_batch=1001),
             placement=megatron_layout(64, 24, 8, 1), provenance=Provenance(method="megatron", objective="time"))
