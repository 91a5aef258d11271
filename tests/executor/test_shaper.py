"""The application-level link shaper: exact arrival times of a link's transfers, and a real
pipeline held by it as long as its links say."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.run import Settings, run_plan  # noqa: E402
from executor.shaper import Shaper, replay  # noqa: E402
from profiler.cluster import Cluster, Device, Host, Interconnect, Link  # noqa: E402
from profiler.model import ModelSpec, TrainingSpec  # noqa: E402
from profiler.network.tcp import GOODPUT_FRACTION as NETWORK_GOODPUT_FRACTION  # noqa: E402
from scheduler.layouts import blocks_layout  # noqa: E402
from scheduler.plan import Plan, Provenance  # noqa: E402

MODEL = ModelSpec(name="tiny-2l", layers=2, d_model=64, heads=4, ffn=256, seq_len=32, vocab=512)
ACTIVATION_BYTES = 1 * 32 * 64 * 4  # one micro-batch of one sequence, fp32
LATENCY_S = 0.1
BANDWIDTH = ACTIVATION_BYTES / 0.05  # one activation takes 50 ms on the link


@pytest.fixture
def two_regions(cpu_cluster):
    """Two CPU hosts in two regions joined by one link of LATENCY_S and BANDWIDTH."""
    return cpu_cluster(2, hosts=2, regions=2, cores=None, latency_s=LATENCY_S, bandwidth_bytes_per_s=BANDWIDTH)


def test_transfers_share_a_link_fairly_and_overlap_their_latency(two_regions) -> None:
    """Two activations posted together share the link: both leave after 2 × 50 ms of wire time
    (at TCP's goodput); one posted at 0.2 s has it alone; a flow posted long after an idle gap
    is timed from the gap."""
    cluster = two_regions
    shaper = Shaper(cluster, rank=1)
    each = ACTIVATION_BYTES / (BANDWIDTH * NETWORK_GOODPUT_FRACTION)
    flows = [(0.0, ACTIVATION_BYTES, 0, 1), (0.0, ACTIVATION_BYTES, 0, 1), (0.3, ACTIVATION_BYTES, 0, 1),
             (0.3 + each / 2, ACTIVATION_BYTES, 0, 1), (5.0, ACTIVATION_BYTES, 1, 0)]
    arrivals, idle = replay(flows, shaper.routes, shaper.capacities)
    # The third flow runs alone for each/2, then shares with the fourth: it has each/2 left at
    # half rate (each), so it leaves at 0.3 + 1.5 each; the fourth then has each/2 left alone.
    assert arrivals == pytest.approx([2 * each + LATENCY_S, 2 * each + LATENCY_S, 0.3 + 1.5 * each + LATENCY_S,
                                      0.3 + 2 * each + LATENCY_S, 5.0 + each + LATENCY_S])
    assert idle == 4  # the network was idle before the last flow
    assert shaper.alone_s(0, 1, ACTIVATION_BYTES) == pytest.approx(each + LATENCY_S)


def test_ranks_of_one_emulated_host_share_its_class_towards_a_region(tmp_path) -> None:
    """Two ranks on h0 send to two ranks on h1 at once, through the shared log: they share h0's
    egress class to r1 and each takes twice as long; the way back is a class of its own."""
    hosts = tuple(Host(name=f"h{i}", region=f"r{i}", interconnect=Interconnect.PCIE,
                       interconnect_bandwidth_bytes_per_s=1e10, interconnect_latency_s=1e-5,
                       uplink_bandwidth_bytes_per_s=1e9) for i in range(2))
    cluster = Cluster(name="two-by-two", hosts=hosts, devices=tuple(Device(id=i, gpu="CPU", host=f"h{i // 2}")
                                                                    for i in range(4)),
                      links=(Link(a="r0", b="r1", latency_s=LATENCY_S, bandwidth_bytes_per_s=BANDWIDTH),))
    log = Shaper.create_log(tmp_path / "transfers")
    senders = [Shaper(cluster, rank, log) for rank in (0, 1, 2)]
    stamps = [senders[0].post(2, ACTIVATION_BYTES), senders[1].post(3, ACTIVATION_BYTES),
              senders[2].post(0, ACTIVATION_BYTES)]
    each = ACTIVATION_BYTES / (BANDWIDTH * NETWORK_GOODPUT_FRACTION)
    # The class carries both activations from the first post on: the later one leaves 2 × each
    # after it, whenever the second was posted in between.
    first = min(float(stamps[0][0]), float(stamps[1][0]))
    receiver = Shaper(cluster, 3, log)
    assert receiver._arrival_s(int(stamps[1][1])) == pytest.approx(first + 2 * each + LATENCY_S, abs=1e-9)
    back = float(stamps[2][0]) + each + LATENCY_S
    assert Shaper(cluster, 0, log)._arrival_s(int(stamps[2][1])) == pytest.approx(back, abs=1e-9)


@pytest.mark.distributed
def test_a_pipeline_waits_as_long_as_its_emulated_links_say(two_regions) -> None:
    """GPipe, 2 stages in two regions, 4 micro-batches: the 4 activations leave together and share
    the link (53 ms of wire time each at TCP's goodput), the last arriving 4 × 53 ms + 100 ms after
    they left; the gradients come back the same way; the barrier at the end (the study's runtime)
    waits for the first stage's token to cross once more. The link adds 0.70 s to the iteration,
    less the little compute it overlaps."""
    plan = Plan(cluster=two_regions, case=None, model=MODEL,
                training=TrainingSpec(global_batch=4, precision="fp32", activation_recompute=False),
                placement=blocks_layout([0, 1], MODEL.layers, 2, 1), provenance=Provenance(method="manual", objective="time"))
    plain = run_plan(plan, Settings(iterations=3, warmup=1))
    shaped = run_plan(plan, Settings(iterations=3, warmup=1, emulate_network=True))
    added = min(shaped["iteration_s"]) - min(plain["iteration_s"])
    expected = 2 * (4 * ACTIVATION_BYTES / (BANDWIDTH * NETWORK_GOODPUT_FRACTION) + LATENCY_S) + LATENCY_S
    assert added == pytest.approx(expected, abs=0.05)
    assert shaped["loss"] == pytest.approx(plain["loss"], rel=1e-6)  # held, not changed


def test_a_receiver_asks_again_after_the_log_before_an_idle_gap_is_dropped(two_regions, tmp_path) -> None:
    """Waking from its sleep, a receiver asks for its transfer again; by then the flows before the
    network's last idle moment (its own included) are no longer replayed, their arrivals kept."""
    from executor.shaper import RECORD

    log = tmp_path / "transfers"
    log.write_bytes(RECORD.pack(0.0, ACTIVATION_BYTES, 0, 1) + RECORD.pack(10.0, ACTIVATION_BYTES, 0, 1))
    receiver = Shaper(two_regions, 1, str(log))
    each = ACTIVATION_BYTES / (BANDWIDTH * NETWORK_GOODPUT_FRACTION)
    for _ in range(2):
        assert receiver._arrival_s(0) == pytest.approx(each + LATENCY_S)
        assert receiver.first == 1  # the first flow ended before the second was posted
    assert receiver._arrival_s(1) == pytest.approx(10.0 + each + LATENCY_S)
