"""Garbage in never gives a confident number out: every command refuses broken input with exit 2,
one line on stderr that names what is wrong, no traceback, and nothing written; and the JSON
readers, fed generated mutations of valid documents, either read them or raise InputError.

The table walks every command over broken files of each kind (cluster, plan, profile, run
report), bad flags and bad output paths. Each row runs in a folder of its own that holds the
inputs; the folder must hold exactly the same files afterwards.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.profile import Profile
from profiler.run_report import RunReport
from scheduler.plan import plan_from_json
from simulator.outputs import validate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLAN = EXAMPLES / "cpu-two-regions-plan.json"
RUN = EXAMPLES / "cpu-two-regions-run.json"
CLUSTER = EXAMPLES / "cpu-two-regions-cluster.json"
PROFILE = ROOT / "profiles" / "cpu-gpt-small-fp32.json"


def doc(path: Path) -> Any:
    return json.loads(path.read_text())


def edited(path: Path, edit: Callable[[Any], None]) -> str:
    """``path``'s document with ``edit`` applied, as JSON text (NaN and Infinity as Python writes them)."""
    value = doc(path)
    edit(value)
    return json.dumps(value)


def _set(keys: tuple, value: Any) -> Callable[[Any], None]:
    def edit(document: Any) -> None:
        for key in keys[:-1]:
            document = document[key]
        document[keys[-1]] = value
    return edit


def _delete(keys: tuple) -> Callable[[Any], None]:
    def edit(document: Any) -> None:
        for key in keys[:-1]:
            document = document[key]
        del document[keys[-1]]
    return edit


# Broken files, by name: each row below names the ones it needs.
FILES: dict[str, Callable[[], str | bytes | None]] = {
    "truncated.json": lambda: CLUSTER.read_text()[:200],
    "binary.json": lambda: b"\xff\xfe\x00garbage",
    "empty.json": lambda: "",
    "list.json": lambda: "[1, 2, 3]",
    "folder.json": lambda: None,  # a directory
    "plan.json": PLAN.read_text,
    "run.json": RUN.read_text,
    "profile.json": PROFILE.read_text,
    "cluster-negative-bandwidth.json": lambda: edited(CLUSTER, _set(("hosts", 0, "uplink_bandwidth_bytes_per_s"), -1)),
    "cluster-nan-latency.json": lambda: edited(CLUSTER, _set(("links", 0, "latency_s"), math.nan)),
    "cluster-ghost-host.json": lambda: edited(CLUSTER, _set(("devices", 0, "host"), "ghost")),
    "cluster-duplicate-device.json": lambda: edited(CLUSTER, _set(("devices", 1, "id"), 0)),
    "cluster-no-devices.json": lambda: edited(CLUSTER, _set(("devices",), [])),
    "plan-no-placement.json": lambda: edited(PLAN, _delete(("placement",))),
    "model-bad-kv.json": lambda: json.dumps({"name": "m", "layers": 2, "d_model": 64, "heads": 4, "kv_heads": 3,
                                             "ffn": 256, "seq_len": 32, "vocab": 512}),
    "model-no-ffn.json": lambda: json.dumps({"name": "m", "layers": 2, "d_model": 64, "heads": 4, "seq_len": 32,
                                             "vocab": 512}),
    "plan-stage-out-of-range.json": lambda: edited(PLAN, _set(("placement", "stages", 0, "replicas", 0, 0), 99)),
    "plan-bad-schema.json": lambda: edited(PLAN, _set(("schema",), "plan/9")),
    "plan-layers-not-a-pair.json": lambda: edited(PLAN, _set(("placement", "stages", 0, "layers"), [0])),
    "profile-nan-median.json": lambda: edited(PROFILE, _set(("layers", 0, "forward", "median_s"), math.nan)),
    "profile-infinite-threads.json": lambda: edited(PROFILE, _set(("threads",), math.inf)),
    "profile-no-layers.json": lambda: edited(PROFILE, _set(("layers",), [])),
    "run-nan-iteration.json": lambda: edited(RUN, _set(("iteration_s", 0), math.nan)),
    "run-infinite-cpus.json": lambda: edited(RUN, _set(("ranks", 0, "cpus"), math.inf)),
    "run-no-ranks.json": lambda: edited(RUN, _set(("ranks",), [])),
    "run-backwards-span.json": lambda: edited(RUN, _set(("ranks", 0, "spans", 0, "end_s"), -1.0)),
}

# (command, argv, the files it needs, words the one line must hold). "{missing}" is a folder that
# does not exist; every path is relative to the row's folder.
ROWS: list[tuple[str, list[str], tuple[str, ...], tuple[str, ...]]] = [
    # sim predict: cluster files, flags, output paths
    ("sim", ["predict", "--cluster", "nothing.json"], (), ("nothing.json",)),
    ("sim", ["predict", "--cluster", "truncated.json"], ("truncated.json",), ("truncated.json", "JSON")),
    ("sim", ["predict", "--cluster", "binary.json"], ("binary.json",), ("binary.json", "UTF-8")),
    ("sim", ["predict", "--cluster", "empty.json"], ("empty.json",), ("empty.json",)),
    ("sim", ["predict", "--cluster", "list.json"], ("list.json",), ("list.json",)),
    ("sim", ["predict", "--cluster", "folder.json"], ("folder.json",), ("folder.json",)),
    ("sim", ["predict", "--cluster", "cluster-negative-bandwidth.json"], ("cluster-negative-bandwidth.json",),
     ("cluster-negative-bandwidth.json", "uplink_bandwidth_bytes_per_s")),
    ("sim", ["predict", "--cluster", "cluster-nan-latency.json"], ("cluster-nan-latency.json",),
     ("cluster-nan-latency.json", "latency_s")),
    ("sim", ["predict", "--cluster", "cluster-ghost-host.json"], ("cluster-ghost-host.json",), ("ghost",)),
    ("sim", ["predict", "--cluster", "cluster-duplicate-device.json"], ("cluster-duplicate-device.json",),
     ("cluster-duplicate-device.json",)),
    ("sim", ["predict", "--cluster", "cluster-no-devices.json"], ("cluster-no-devices.json",),
     ("cluster-no-devices.json",)),
    ("sim", ["predict", "--case", "mars"], (), ("mars",)),
    ("sim", ["predict", "--case", "spot", "--model", "gpt5"], (), ("gpt5", "llama2-7b")),
    ("sim", ["predict", "--case", "spot", "--model", "model-bad-kv.json"], ("model-bad-kv.json",),
     ("model-bad-kv.json", "kv_heads")),
    ("sim", ["plan", "--case", "spot", "--model", "model-no-ffn.json"], ("model-no-ffn.json",),
     ("model-no-ffn.json", "lacks ffn")),
    ("sim", ["plan", "--case", "spot", "--model", "nothing.json"], (), ("nothing.json",)),
    ("sim", ["predict", "--plan", "plan.json", "--model", "gpt3-xl"], ("plan.json",), ("--model",)),
    ("sim", ["predict", "--case", "spot", "--layers", "0"], (), ("--layers",)),
    ("sim", ["predict", "--case", "spot", "--batch", "-8"], (), ("--batch",)),
    ("sim", ["predict", "--case", "spot", "--plan-time-limit", "-1"], (), ("--plan-time-limit",)),
    ("sim", ["predict", "--case", "spot", "--plan-time-limit", "nan"], (), ("--plan-time-limit",)),
    ("sim", ["predict", "--case", "spot", "--plan-time-limit", "inf"], (), ("--plan-time-limit",)),
    ("sim", ["predict", "--case", "spot", "--plot", "{missing}/chart.png"], (), ("does not exist",)),
    ("sim", ["predict", "--case", "spot", "--plot", "chart.txt"], (), ("chart.txt",)),
    ("sim", ["predict", "--case", "spot", "--trace", "{missing}/trace.json"], (), ("does not exist",)),
    ("sim", ["predict", "--case", "spot", "--profile", "profile-nan-median.json"], ("profile-nan-median.json",),
     ("profile-nan-median.json", "median_s")),
    ("sim", ["predict", "--case", "spot", "--profile", "profile-infinite-threads.json"],
     ("profile-infinite-threads.json",), ("profile-infinite-threads.json", "threads")),
    ("sim", ["predict", "--case", "spot", "--profile", "profile-no-layers.json"], ("profile-no-layers.json",),
     ("profile-no-layers.json",)),
    ("sim", ["predict", "--case", "spot", "--profile", "plan.json"], ("plan.json",), ("plan.json", "schema")),
    # sim predict --plan / sim validate: plan files and run reports
    ("sim", ["predict", "--plan", "plan-no-placement.json"], ("plan-no-placement.json",),
     ("plan-no-placement.json", "placement")),
    ("sim", ["predict", "--plan", "plan-stage-out-of-range.json"], ("plan-stage-out-of-range.json",),
     ("plan-stage-out-of-range.json",)),
    ("sim", ["predict", "--plan", "plan-bad-schema.json"], ("plan-bad-schema.json",), ("plan/9",)),
    ("sim", ["predict", "--plan", "plan-layers-not-a-pair.json"], ("plan-layers-not-a-pair.json",), ("layers",)),
    ("sim", ["predict", "--plan", "run.json"], ("run.json",), ("run.json", "schema")),
    ("sim", ["validate", "plan.json", "nothing.json"], ("plan.json",), ("nothing.json",)),
    ("sim", ["validate", "plan.json", "plan.json"], ("plan.json",), ("run report",)),
    ("sim", ["validate", "plan.json", "run-nan-iteration.json"], ("plan.json", "run-nan-iteration.json"),
     ("run-nan-iteration.json",)),
    ("sim", ["validate", "plan.json", "run-infinite-cpus.json"], ("plan.json", "run-infinite-cpus.json"),
     ("run-infinite-cpus.json",)),
    ("sim", ["validate", "plan.json", "run-no-ranks.json"], ("plan.json", "run-no-ranks.json"), ("run-no-ranks.json",)),
    ("sim", ["validate", "plan.json", "run-backwards-span.json"], ("plan.json", "run-backwards-span.json"),
     ("run-backwards-span.json",)),
    ("sim", ["validate", "plan.json", "run.json", "--plot", "{missing}/v.png"], ("plan.json", "run.json"),
     ("does not exist",)),
    # sim plan: flags and output paths, refused before any search
    ("sim", ["plan", "--case", "spot", "--pp", "3"], (), ("--pp",)),
    ("sim", ["plan", "--case", "spot", "--dp-bytes", "-1", "--objective", "comm"], (), ("--dp-bytes",)),
    ("sim", ["plan", "--case", "spot", "--dp-bytes", "inf", "--objective", "comm"], (), ("--dp-bytes",)),
    ("sim", ["plan", "--case", "spot", "--pp-bytes", "1e308", "--objective", "comm"], (), ("--pp-bytes",)),
    ("sim", ["plan", "--case", "spot", "--dp-bytes", "1e9"], (), ("--dp-bytes", "comm")),
    ("sim", ["plan", "--case", "spot", "--time-limit", "-5"], (), ("--time-limit",)),
    ("sim", ["plan", "--case", "spot", "--gap", "2"], (), ("--gap",)),
    ("sim", ["plan", "--case", "spot", "--method", "random", "--samples", "0"], (), ("--samples",)),
    ("sim", ["plan", "--case", "spot", "-o", "{missing}/plan.json"], (), ("does not exist",)),
    ("sim", ["plan", "--case", "spot", "--objective", "comm", "--lp", "{missing}/m.lp"], (), ("does not exist",)),
    ("sim", ["plan", "--cluster", "truncated.json"], ("truncated.json",), ("truncated.json",)),
    # sim report, fidelity, cases
    ("sim", ["report", "--case", "mars", "-o", "out"], (), ("mars",)),
    ("sim", ["report", "--case", "spot", "-o", "plan.json"], ("plan.json",), ("plan.json",)),
    ("sim", ["report", "--case", "spot", "-o", "{missing}/deeper"], (), ("does not exist",)),
    ("sim", ["report", "--case", "spot", "-o", "out", "--jobs", "0"], (), ("--jobs",)),
    ("sim", ["fidelity", "--series", "nonesuch"], (), ("nonesuch",)),
    ("sim", ["fidelity", "--plot", "{missing}/f.png"], (), ("does not exist",)),
    ("sim", ["cases", "--export", "mars", "-o", "c.json"], (), ("mars",)),
    ("sim", ["cases", "--export", "spot", "-o", "{missing}/c.json"], (), ("does not exist",)),
    ("sim", ["bogus"], (), ("bogus",)),
    # profiler: flags and output paths, refused before any measurement
    ("profiler", ["compute", "--micro-batch", "0", "-o", "p.json"], (), ("micro",)),
    ("profiler", ["compute", "--model", "model-bad-kv.json", "-o", "p.json"], ("model-bad-kv.json",), ("kv_heads",)),
    ("profiler", ["compute", "--kv-heads", "2", "-o", "p.json"], (), ("--kv-heads",)),
    ("profiler", ["compute", "--model", "llama2-7b", "--tp", "3", "-o", "p.json"], (), ("--tp 3",)),
    ("profiler", ["compute", "--repeats", "0", "-o", "p.json"], (), ("repeats",)),
    ("profiler", ["compute", "--threads", "0", "-o", "p.json"], (), ("threads",)),
    ("profiler", ["compute", "--dropout", "1.5", "-o", "p.json"], (), ("dropout",)),
    ("profiler", ["compute", "-o", "{missing}/p.json"], (), ("does not exist",)),
    ("profiler", ["compute", "--device", "cuda", "-o", "p.json"], (), ("cuda",)),
    ("profiler", ["network", "--spawn", "0", "-o", "c.json"], (), ("--spawn",)),
    ("profiler", ["network", "--spawn", "2", "--regions", "nothing.json", "-o", "c.json"], (), ("nothing.json",)),
    ("profiler", ["network", "--spawn", "2", "-o", "{missing}/c.json"], (), ("does not exist",)),
    # executor: plan files, flags, output paths and checkpoints, refused before any rank starts
    ("executor", ["run", "nothing.json"], (), ("nothing.json",)),
    ("executor", ["run", "truncated.json"], ("truncated.json",), ("truncated.json",)),
    ("executor", ["run", "plan-stage-out-of-range.json"], ("plan-stage-out-of-range.json",),
     ("plan-stage-out-of-range.json",)),
    ("executor", ["run", "plan.json", "--iterations", "0"], ("plan.json",), ("--iterations",)),
    ("executor", ["run", "plan.json", "--timeout", "-1"], ("plan.json",), ("--timeout",)),
    ("executor", ["run", "plan.json", "--timeout", "inf"], ("plan.json",), ("--timeout",)),
    ("executor", ["run", "plan.json", "--timeout", "1e15"], ("plan.json",), ("--timeout",)),
    ("executor", ["run", "plan.json", "--resume"], ("plan.json",), ("--checkpoint-dir",)),
    ("executor", ["run", "plan.json", "--checkpoint-dir", "run.json"], ("plan.json", "run.json"), ("run.json",)),
    ("executor", ["run", "plan.json", "--out", "{missing}/r.json"], ("plan.json",), ("does not exist",)),
    ("executor", ["run", "plan.json", "--trace", "folder.json"], ("plan.json", "folder.json"), ("folder.json",)),
    ("executor", ["run", "plan.json", "--backend", "nccl"], ("plan.json",), ("nccl",)),
    ("executor", ["run", str(EXAMPLES / "world-random-plan.json")], (), ("64 ranks", "core")),
]


def _main(command: str) -> Callable[[list[str]], int]:
    if command == "sim":
        from simulator.cli.main import main
    elif command == "profiler":
        from profiler.cli import main
    else:
        from executor.cli import main
    return main


def _listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("command", "argv", "files", "words"), ROWS,
                         ids=[f"{c} {' '.join(a)}" for c, a, _, _ in ROWS])
def test_broken_input_is_exit_2_one_line_and_nothing_written(capsys, tmp_path, monkeypatch, command, argv, files,
                                                             words) -> None:
    for name in files:
        content = FILES[name]()
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    argv = [a.replace("{missing}", "missing") for a in argv]
    if command == "sim" and argv[0] in ("predict", "plan", "report", "fidelity"):
        argv.append("--quiet")
    code = _main(command)(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"{command}: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _listing(tmp_path) == before, "the command wrote or removed files"


@pytest.mark.parametrize(("pointer", "words"), [
    ('{"iteration": 0, "ran', ("not a checkpoint pointer",)),
    (None, ("is missing",)),  # a pointer of this plan whose files are gone
    ('{"iteration": 0, "ranks": 4, "plan": "0123"}', ("another plan",)),
])
def test_a_resume_from_a_broken_checkpoint_is_refused_before_any_rank_starts(capsys, tmp_path, monkeypatch, pointer,
                                                                           words) -> None:
    from executor.cli import main

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    fingerprint = plan_from_json(doc(EXAMPLES / "cpu-pipeline-plan.json"), where="plan").fingerprint()
    (folder / "latest.json").write_text(pointer or json.dumps({"iteration": 0, "ranks": 4, "plan": fingerprint}))
    before = _listing(tmp_path)
    code = main(["run", str(EXAMPLES / "cpu-pipeline-plan.json"), "--checkpoint-dir", str(folder), "--resume",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(word in err for word in words), err
    assert _listing(tmp_path) == before


# -- fuzzing the readers --------------------------------------------------------------------
READERS: dict[str, tuple[Path, Callable[[Any], object]]] = {
    "cluster": (CLUSTER, lambda d: Cluster.from_json(d, where="cluster")),
    "plan": (PLAN, lambda d: plan_from_json(d, where="plan")),
    "profile": (PROFILE, lambda d: Profile.from_json(d, where="profile")),
    "run report": (RUN, lambda d: _read_run(d)),
}
_PLAN_OF_RUN = plan_from_json(doc(PLAN), where="plan")


def _read_run(document: Any) -> None:
    report = RunReport.from_json(document, "run")
    validate.measured(report)
    validate.run_units(report, _PLAN_OF_RUN.cluster, "run")
    validate.profile_warnings((), report)


def _paths(document: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into ``document`` (the first three items of a list)."""
    out = [prefix] if prefix else []
    children = document.items() if isinstance(document, dict) else enumerate(document[:3]) \
        if isinstance(document, list) else ()
    for key, value in children:
        out += _paths(value, prefix + (key,))
    return out


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                   st.sampled_from(["CPU", "gpipe", "ps", "local", "fp32", "run-report/1", "plan/1"]))
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=6)


@st.composite
def mutations(draw, original: Any) -> Any:
    """``original`` with one key path replaced by generated JSON, deleted, or its list item doubled."""
    document = copy.deepcopy(original)
    path = draw(st.sampled_from(_paths(original)))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "double"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "double" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[path[-1]]))
    else:
        parent[path[-1]] = draw(JSON)
    return document


@pytest.mark.parametrize("kind", READERS)
def test_a_reader_fed_a_mutated_document_reads_it_or_raises_one_input_error(kind) -> None:
    path, read = READERS[kind]

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(mutations(doc(path)))
    def check(document: Any) -> None:
        try:
            read(document)
        except InputError as err:
            assert "\n" not in str(err)

    check()


@pytest.mark.parametrize("kind", READERS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(document=JSON)
def test_a_reader_fed_any_json_raises_one_input_error(kind, document) -> None:
    with pytest.raises(InputError):
        READERS[kind][1](document)
