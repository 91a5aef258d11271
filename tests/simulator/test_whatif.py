"""What-if variants change exactly what they say, and a sweep's points are the systems'
predictions on each variant."""

from __future__ import annotations

import pytest

from profiler.errors import InputError
from profiler.model import gpt3_xl
from profiler.scenarios import universities, world
from simulator.study import whatif
from simulator.study.table import predict_table


def test_scale_links_scales_only_the_links_between_regions() -> None:
    base = universities()
    faster = whatif.scale_links(base, bandwidth=2, latency=0.5)
    for before, after in zip(base.links, faster.links):
        factor = (2, 0.5) if before.a != before.b else (1, 1)
        assert after.bandwidth_bytes_per_s == before.bandwidth_bytes_per_s * factor[0]
        assert after.latency_s == before.latency_s * factor[1]
    within = whatif.scale_links(base, bandwidth=3, between_regions=False)
    assert [l.bandwidth_bytes_per_s / b.bandwidth_bytes_per_s for l, b in zip(within.links, base.links)] == [
        3.0 if b.a == b.b else 1.0 for b in base.links]
    assert faster.devices == base.devices and faster.hosts == base.hosts
    with pytest.raises(InputError, match="positive"):
        whatif.scale_links(base, bandwidth=0)


def test_spread_and_upgrade() -> None:
    two = whatif.spread(2)
    assert two.regions == ("oregon", "virginia") and two.size == 64
    assert two.link("oregon", "virginia") == world().link("oregon", "virginia")
    assert whatif.spread(8).links == world().links
    with pytest.raises(InputError, match="do not split evenly"):
        whatif.spread(3)
    mixed = whatif.upgrade(world(), ["tokyo", "seoul"])
    assert whatif.gpus(mixed, "A100-40GB") == 16
    assert all((d.gpu == "A100-40GB") == (mixed.region_of(d.id) in ("tokyo", "seoul")) for d in mixed.devices)
    with pytest.raises(InputError, match="no region mars"):
        whatif.upgrade(world(), ["mars"])


def test_a_sweep_is_the_systems_on_each_variant() -> None:
    base = universities()
    points = whatif.sweep([(1, base), (0.5, whatif.scale_links(base, bandwidth=0.5))], max_evaluations=20)
    row = predict_table(base, "universities", gpt3_xl, [24], [1024]).rows[0]
    at_one = {p.system: p for p in points if p.x == 1}
    assert at_one["megatron_optimal"].iteration_s == row.systems["megatron_optimal"].iteration_s
    assert at_one["megatron_optimal"].config == row.systems["megatron_optimal"].config
    assert at_one["ours_random"].iteration_s == row.systems["ours_random"].iteration_s
    assert at_one["ours_scheduled"].iteration_s < at_one["ours_random"].iteration_s
    slower = {p.system: p.iteration_s for p in points if p.x == 0.5}
    for key, point in at_one.items():
        assert slower[key] >= point.iteration_s * (1 - 1e-9), key
    text = whatif.table(points, "bandwidth ×").splitlines()
    assert text[0].split() == ["bandwidth", "×", "Megatron-Optimal", "Ours", "w/o", "scheduler", "Ours", "w/",
                               "scheduler"]
    assert text[2].startswith("0.5") and text[3].startswith("1")
    best = min(p.iteration_s for p in at_one.values())
    assert text[3].count(" *") == 1 and f"{best:.2f} *" in text[3]


def test_the_sweep_chart_draws_a_line_per_system_at_the_swept_values() -> None:
    from simulator.outputs import charts

    points = [whatif.Point(x=x, system=system, iteration_s=s / x)
              for x in (0.5, 1, 2, 4) for system, s in (("megatron_optimal", 10.0), ("ours_scheduled", 5.0))]
    points.append(whatif.Point(x=8, system="ours_scheduled", iteration_s=None))  # out of memory: no point
    fig, axes = charts.new_figure(4, 3)
    ax = axes[0][0]
    charts.sweep_chart(ax, points, "bandwidth", "faster links", log_x=True)
    assert [line.get_label() for line in ax.lines] == ["Megatron-Optimal", "Ours w/ scheduler"]
    assert list(ax.lines[1].get_xdata()) == [0.5, 1, 2, 4] and list(ax.lines[1].get_ydata()) == [10, 5, 2.5, 1.25]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2", "4", "8"]
