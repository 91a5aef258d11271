"""Benchmark: simulate a synthetic GPipe program (8 stages x 8 replicas x 512 micro-batches).

Run as ``python benchmarks/bench_engine.py [--stages S --replicas R --micro-batches M]``.
Prints the best-of-N wall time of ``simulator.engine.simulate.simulate`` and modelled operations per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script from anywhere: the repository root holds the simulator package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.network.routes import Network, Route  # noqa: E402
from profiler.trace import Category
from simulator.engine.simulate import simulate  # noqa: E402
from simulator.lowering.program import Op, Program, Stream, Transfer  # noqa: E402

# Synthetic but plausible magnitudes: 10 ms forward, twice that backward, 16 MiB activations over
# a 10 GB/s NIC with 10 us latency (order of a 100 Gbit/s RDMA fabric).
FWD_S = 10e-3
BWD_S = 20e-3
ACTIVATION_BYTES = 16 * 2**20
NIC_BYTES_PER_S = 10e9
LATENCY_S = 10e-6


def nic_network(devices: int) -> Network:
    """Every device has an egress and an ingress NIC resource; a route crosses both."""
    names = tuple(f"{kind}{d}" for d in range(devices) for kind in ("egress", "ingress"))
    routes = {
        (a, b): Route(resources=(2 * a, 2 * b + 1), flow_cap_bytes_per_s=float("inf"),
                      latency_s=LATENCY_S)
        for a in range(devices)
        for b in range(devices)
        if a != b
    }
    return Network(
        resource_names=names, capacities_bytes_per_s=(NIC_BYTES_PER_S,) * len(names), routes=routes
    )


class _Ids:
    """Hands out consecutive integer ids."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def gpipe_program(stages: int, replicas: int, micro_batches: int) -> Program:
    """GPipe: all forwards then all backwards per stage; sends and receives on their own streams."""
    ids = _Ids()
    streams: list[Stream] = []
    transfers: list[Transfer] = []
    for replica in range(replicas):
        devices = [replica * stages + s for s in range(stages)]
        # act[s][m]: stage s -> s+1 activation; grad[s][m]: stage s+1 -> s gradient
        act = [[ids() for _ in range(micro_batches)] for _ in range(stages - 1)]
        grad = [[ids() for _ in range(micro_batches)] for _ in range(stages - 1)]
        for s in range(stages - 1):
            for m in range(micro_batches):
                for tid, src, dst in ((act[s][m], s, s + 1), (grad[s][m], s + 1, s)):
                    transfers.append(Transfer(id=tid, src_device=devices[src],
                                              dst_device=devices[dst],
                                              size_bytes=ACTIVATION_BYTES,
                                              category=Category.PIPELINE))
        for s, device in enumerate(devices):
            streams.extend(_stage_streams(f"r{replica}s{s}", device, s, stages, micro_batches,
                                          act, grad, ids))
    return Program(streams=tuple(streams), transfers=tuple(transfers))


def _stage_streams(name: str, device: int, s: int, stages: int, micro_batches: int,
                   act: list[list[int]], grad: list[list[int]], ids: _Ids) -> list[Stream]:
    """One stage's main, send and receive streams."""
    first, last = s == 0, s == stages - 1
    forward, backward = range(micro_batches), list(reversed(range(micro_batches)))
    recv_act = [] if first else [Op(id=ids(), category=Category.PIPELINE, label=f"recv F{m}",
                                    recvs=(act[s - 1][m],)) for m in forward]
    recv_grad = [] if last else [Op(id=ids(), category=Category.PIPELINE, label=f"recv B{m}",
                                    recvs=(grad[s][m],)) for m in backward]
    fwd = [Op(id=ids(), category=Category.FORWARD, label=f"F{m}", duration_s=FWD_S,
              deps=() if first else (recv_act[m].id,)) for m in forward]
    bwd = [Op(id=ids(), category=Category.BACKWARD, label=f"B{m}", duration_s=BWD_S,
              deps=(fwd[m].id,) if last else (recv_grad[i].id,))
           for i, m in enumerate(backward)]
    sends = [] if last else [Op(id=ids(), category=Category.PIPELINE, label=f"send F{m}",
                                sends=(act[s][m],), deps=(fwd[m].id,)) for m in forward]
    sends += [] if first else [Op(id=ids(), category=Category.PIPELINE, label=f"send B{m}",
                                  sends=(grad[s - 1][m],), deps=(bwd[i].id,))
                               for i, m in enumerate(backward)]
    return [
        Stream(name=name, devices=(device,), main=True, ops=tuple(fwd + bwd)),
        Stream(name=f"{name}.send", devices=(device,), main=False, ops=tuple(sends)),
        Stream(name=f"{name}.recv", devices=(device,), main=False,
               ops=tuple(recv_act + recv_grad)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--micro-batches", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-spans", action="store_true", help="simulate with record_spans=False")
    args = parser.parse_args()
    program = gpipe_program(args.stages, args.replicas, args.micro_batches)
    network = nic_network(args.stages * args.replicas)
    best_s = float("inf")
    for _ in range(args.repeats):
        began = time.perf_counter()
        result = simulate(program, network, record_spans=not args.no_spans)
        best_s = min(best_s, time.perf_counter() - began)
    print(f"program: {args.stages} stages x {args.replicas} replicas x {args.micro_batches} "
          f"micro-batches, {program.op_count} ops, {len(program.transfers)} transfers")
    print(f"simulated makespan: {result.makespan_s:.6f} s")
    print(f"best of {args.repeats}: {best_s:.3f} s, "
          f"{result.operations / best_s:,.0f} modelled operations/s")


if __name__ == "__main__":
    main()
