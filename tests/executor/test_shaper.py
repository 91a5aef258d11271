"""The application-level link shaper: exact arrival times of a link's transfers, and a real
pipeline held by it as long as its links say."""

from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")

from executor.run import Settings, run_plan  # noqa: E402
from executor.shaper import Shaper  # noqa: E402
from profiler.cluster import Cluster, Device, Host, Interconnect, Link  # noqa: E402
from profiler.model import ModelSpec, TrainingSpec  # noqa: E402
from scheduler.layouts import blocks_layout  # noqa: E402
from scheduler.plan import Plan, Provenance  # noqa: E402

MODEL = ModelSpec(name="tiny-2l", layers=2, d_model=64, heads=4, ffn=256, seq_len=32, vocab=512)
ACTIVATION_BYTES = 1 * 32 * 64 * 4  # one micro-batch of one sequence, fp32
LATENCY_S = 0.1
BANDWIDTH = ACTIVATION_BYTES / 0.05  # one activation takes 50 ms on the link


def two_regions() -> Cluster:
    hosts = tuple(Host(name=f"h{i}", region=f"r{i}", interconnect=Interconnect.PCIE,
                       interconnect_bandwidth_bytes_per_s=1e10, interconnect_latency_s=1e-5,
                       uplink_bandwidth_bytes_per_s=1e9) for i in range(2))
    return Cluster(name="two-regions", devices=(Device(id=0, gpu="CPU", host="h0"), Device(id=1, gpu="CPU", host="h1")),
                   hosts=hosts, links=(Link(a="r0", b="r1", latency_s=LATENCY_S, bandwidth_bytes_per_s=BANDWIDTH),))


def test_a_link_serialises_its_transfers_and_overlaps_their_latency() -> None:
    shaper = Shaper(two_regions(), rank=1)
    arrivals = [shaper.arrival_s(0, ACTIVATION_BYTES, posted) for posted in (0.0, 0.0, 0.2, 0.2)]
    assert arrivals == pytest.approx([0.15, 0.2, 0.35, 0.4])


@pytest.mark.distributed
def test_a_pipeline_waits_as_long_as_its_emulated_links_say() -> None:
    """GPipe, 2 stages in two regions, 4 micro-batches: the 4 activations leave together and
    arrive 50 ms apart, the last 0.3 s after the first left; the gradients come back the same way.
    The link adds 0.6 s to the iteration, less the little compute it overlaps."""
    plan = Plan(cluster=two_regions(), case=None, model=MODEL,
                training=TrainingSpec(global_batch=4, precision="fp32", activation_recompute=False),
                placement=blocks_layout([0, 1], MODEL.layers, 2, 1), provenance=Provenance(method="manual", objective="time"))
    plain = run_plan(plan, Settings(iterations=3, warmup=1))
    shaped = run_plan(plan, Settings(iterations=3, warmup=1, emulate_network=True))
    added = min(shaped["iteration_s"]) - min(plain["iteration_s"])
    assert added == pytest.approx(0.6, abs=0.05)
    assert shaped["loss"] == pytest.approx(plain["loss"], rel=1e-6)  # held, not changed
