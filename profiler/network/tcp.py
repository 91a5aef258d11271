"""TCP as a transfer between two hosts meets it, and the transports that stripe transfers over it.

Every figure comes from a standard, a vendor's documentation or a library's source (docs/model.md,
"The network"), and is checked against the study's single-transfer measurements (the development
set's p2p-transfer series, `sim fidelity`):

- goodput: a 9001-byte MTU (AWS EC2 inside a VPC) carries 8949 bytes of payload (IP 20, TCP 20
  and its timestamp option 12 bytes of headers); a rate limit (tc's netem, the NIC) counts the
  14-byte Ethernet header too. 64 MiB through 1 Gbit/s: 540.8 ms predicted, 541 measured.
- window: Linux advertises half of its largest receive buffer (tcp_rmem max 6 MiB,
  tcp_adv_win_scale 1), so one connection has at most 3 MiB in flight: rate ≤ 3 MiB / RTT.
- one connection: a host may limit what one TCP connection carries (``Host.connection_bandwidth``:
  AWS allows 5 Gbit/s between instances outside a cluster placement group; gloo's one connection
  moved 64 MiB in 107 ms, 5.0 Gbit/s, where NCCL's 16 moved 9.8).
- slow start: a fresh connection starts with 10 segments (Linux, RFC 6928) and doubles its window
  every round trip until it fills the path; a transfer on fresh connections pays the ramp once.
- transports: NCCL's socket transport on an AWS ENA stripes each transfer over 2 threads × 8
  sockets (NCCL src/transport/net_socket.cc); gloo sends over one connection per pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MTU_BYTES = 9001  # AWS EC2 jumbo frames inside a VPC
MSS_BYTES = MTU_BYTES - 20 - 20 - 12  # IPv4, TCP, TCP timestamp option
ETHERNET_HEADER_BYTES = 14  # what a Linux qdisc (netem's rate) counts beside the IP packet
GOODPUT_FRACTION = MSS_BYTES / (MTU_BYTES + ETHERNET_HEADER_BYTES)
RECEIVE_WINDOW_BYTES = 6 * 2**20 / 2  # tcp_rmem max 6 MiB, half advertised (tcp_adv_win_scale 1)
INITIAL_WINDOW_BYTES = 10 * MSS_BYTES  # Linux initcwnd, RFC 6928


@dataclass(frozen=True, slots=True, kw_only=True)
class Transport:
    """How a communication library moves one transfer between two hosts."""

    name: str
    connections: int  # TCP connections one transfer is striped over

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"transport {self.name!r}: connections must be at least 1, got {self.connections}")

    def flow_cap_bytes_per_s(self, rtt_s: float, connection_limit_bytes_per_s: float) -> float:
        """The most one transfer moves: every connection's window over the round trip, and the
        network's limit on one connection (payload rate)."""
        window = RECEIVE_WINDOW_BYTES / rtt_s if rtt_s > 0 else math.inf
        return self.connections * min(window, connection_limit_bytes_per_s)


NCCL = Transport(name="nccl", connections=16)  # NET/Socket on AWS ENA: 2 threads × 8 sockets
GLOO = Transport(name="gloo", connections=1)
TRANSPORTS = {t.name: t for t in (NCCL, GLOO)}


def slow_start_s(size_bytes: float, rate_bytes_per_s: float, rtt_s: float, connections: int) -> float:
    """Seconds beyond size / rate that a transfer on fresh connections spends in slow start: the
    window of all connections together starts at ``connections`` initial windows and doubles
    every round trip (sending at window / RTT) until it carries the rate; then the rate. Zero
    where the initial windows already fill the path."""
    if not (rtt_s > 0 and math.isfinite(rate_bytes_per_s)) or size_bytes <= 0:
        return 0.0
    initial = connections * INITIAL_WINDOW_BYTES
    full = rate_bytes_per_s * rtt_s  # the bytes in flight that carry the rate
    if full <= initial:
        return 0.0
    ramp_s = rtt_s * math.log2(full / initial)
    ramp_bytes = (full - initial) / math.log(2)  # ∫ of window(t) / RTT over the ramp
    if size_bytes <= ramp_bytes:  # done while still ramping
        spent = rtt_s * math.log2(1 + size_bytes * math.log(2) / initial)
        return spent - size_bytes / rate_bytes_per_s
    return ramp_s - ramp_bytes / rate_bytes_per_s
