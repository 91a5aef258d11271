"""The plan cache (simulator.plan_cache): a search asked again answers from disk, a longer one
starts from the cached plan and keeps the better plan and bound, and the key changes with what
determines the search but not with its clock."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from scheduler.layouts import blocks_layout
from scheduler.methods import SearchSettings
from scheduler.search import SearchResult
from simulator import plan_cache
from simulator.plan_cache import cache_folder, cache_key, cached_search

JOB = {"cluster": {"name": "tiny"}, "pp": 2, "dp": 2}


def searches(value: float, bound: float, order: list[int]):
    """A search that records the settings it was called with and returns ``order`` in blocks."""
    calls: list[SearchSettings] = []

    def search(settings: SearchSettings) -> SearchResult:
        calls.append(settings)
        return SearchResult(placement=blocks_layout(order, 4, 2, 2), value=value, solver_s=1.0, evaluated=5,
                            bound=bound)
    return search, calls


def test_a_search_asked_again_answers_from_the_cache(tmp_path):
    settings = SearchSettings(time_limit_s=10.0)
    search, calls = searches(3.0, 2.5, [0, 1, 2, 3])
    first = cached_search(tmp_path, JOB, settings, search)
    said = []
    again = cached_search(tmp_path, JOB, replace(settings, time_limit_s=5.0), search, said.append)
    assert len(calls) == 1 and "cached" in said[0]
    assert (again.placement, again.value, again.bound) == (first.placement, 3.0, 2.5)
    assert again.solver_s == 0.0


def test_a_search_with_less_effort_answers_from_a_thorough_one_and_not_the_other_way(tmp_path):
    thorough = SearchSettings(time_limit_s=300.0, gap=1e-3, max_evaluations=400)
    row = replace(thorough, time_limit_s=1.0, gap=0.01, max_evaluations=10)  # a table's row
    key = cache_key(JOB, thorough)
    search, calls = searches(3.0, 2.9, [0, 1, 2, 3])
    cached_search(tmp_path, JOB, row, search)
    cached_search(tmp_path, JOB, thorough, search)
    assert len(calls) == 2  # the row's search did not cover the thorough one
    cached_search(tmp_path, JOB, row, search)
    assert len(calls) == 2
    kept = plan_cache.load(tmp_path, key)
    assert (kept.time_limit_s, kept.gap, kept.max_evaluations) == (300.0, 1e-3, 400)


def test_a_longer_search_starts_from_the_cached_plan_and_keeps_the_best_of_both(tmp_path):
    settings = SearchSettings(time_limit_s=10.0)
    key = cache_key(JOB, settings)
    cached_search(tmp_path, JOB, settings, searches(3.0, 2.5, [3, 2, 1, 0])[0])
    worse_plan_better_bound, calls = searches(3.2, 2.9, [0, 1, 2, 3])
    longer = cached_search(tmp_path, JOB, replace(settings, time_limit_s=30.0), worse_plan_better_bound)
    assert calls[0].hints[0] == ((3, 2), (1, 0))  # the cached plan's stages × replicas first
    assert longer.value == 3.0 and longer.bound == 2.9
    assert longer.placement.devices == blocks_layout([3, 2, 1, 0], 4, 2, 2).devices
    kept = plan_cache.load(tmp_path, key)
    assert (kept.value, kept.bound, kept.time_limit_s) == (3.0, 2.9, 30.0)


def test_the_key_follows_the_job_and_the_search_but_not_its_clock():
    settings = SearchSettings(time_limit_s=10.0)
    key = cache_key(JOB, settings)
    assert key == cache_key(JOB, replace(settings, time_limit_s=99.0, gap=0.01, max_evaluations=10,
                                         hints=(((0, 1), (2, 3)),)))
    assert key != cache_key({**JOB, "dp": 4}, settings)
    assert key != cache_key(JOB, replace(settings, seed=1))
    assert key != cache_key(JOB, replace(settings, uneven=True))


def test_an_unreadable_entry_is_searched_again_and_replaced(tmp_path):
    settings = SearchSettings(time_limit_s=10.0)
    key = cache_key(JOB, settings)
    (tmp_path / f"{key}.json").write_text("{not json")
    search, calls = searches(3.0, 2.5, [0, 1, 2, 3])
    cached_search(tmp_path, JOB, settings, search)
    assert len(calls) == 1 and plan_cache.load(tmp_path, key).value == 3.0


def test_no_folder_or_a_clockless_search_leaves_the_cache_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLET_CACHE", "off")
    assert cache_folder() is None
    settings = SearchSettings(deterministic=True)
    search, calls = searches(3.0, 2.5, [0, 1, 2, 3])
    for _ in range(2):
        cached_search(tmp_path, JOB, settings, search)
    assert len(calls) == 2 and not list(tmp_path.iterdir())
    monkeypatch.delenv("TASKLET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == tmp_path / "tasklet"


@pytest.mark.parametrize("flag", [[], ["--no-cache"]])
def test_sim_plan_again_gives_the_same_plan_from_the_cache(capsys, tmp_path, monkeypatch, flag):
    from simulator.cli.main import main

    folder = tmp_path / "cache"
    monkeypatch.setenv("TASKLET_CACHE", str(folder))
    argv = ["plan", "--case", "universities", "--time-limit", "2", "--json", *flag]
    plans = []
    for _ in range(2):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        plans.append((out, err))
    assert ("cached" in plans[1][1]) == (not flag)
    assert folder.exists() == (not flag)
    if not flag:  # the same plan and bound; only the seconds spent differ
        first, second = (json.loads(out) for out, _ in plans)
        assert first["placement"] == second["placement"]
        for field in ("objective_value", "lower_bound"):
            assert first["provenance"][field] == second["provenance"][field]
