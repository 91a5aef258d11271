"""The pipeline's point-to-point operations as NCCL runs them under batch_isend_irecv: all of a
rank's grouped operations on one stream, in the order they are posted, a group's operations
together (a bare isend would take a communicator of its own; the executor posts none when it
groups, which tests/executor/test_run.py checks with TASKLET_EXECUTOR_STRICT_P2P). A model of that
checks that the grouped exchanges of executor --backend nccl finish for every schedule, where
posting the receives ahead (the gloo path) would not."""

from __future__ import annotations

import pytest

from executor.schedule import _order, exchanges, grouped, peer_of


def finishes(schedule: str, stages: int, M: int, ahead: bool = False) -> bool:
    """Whether every op of an iteration completes when each rank's groups run one after another
    in posting order, an op of a group completing once the peer's current group holds its match
    and the data exists (a send's after the compute that makes it; a compute after the receive it
    needs)."""
    streams: list[list[list[tuple]]] = []
    for s in range(stages):
        steps = exchanges(schedule, s, stages, M)
        groups = [[step] for step in sorted(steps, key=lambda st: st[0] != "recv")] if ahead else grouped(steps)
        streams.append([[(s + 1 if peer_of(*op[:2]) == "following" else s - 1, *op) for op in group]
                        for group in groups])
    head = [0] * stages
    position = [0] * stages
    done: set[tuple] = set()
    computed: set[tuple] = set()

    def received(s: int, what: str, m: int) -> bool:
        first = s == 0 if what == "activation" else s == stages - 1
        return first or (s, "recv", what, m) in done

    progress = True
    while progress:
        progress = False
        for s in range(stages):
            while position[s] < len(_order(schedule, s, stages, M)):
                kind, m = _order(schedule, s, stages, M)[position[s]]
                if not received(s, "activation" if kind == "f" else "gradient", m):
                    break
                computed.add((s, kind, m))
                position[s] += 1
                progress = True
        for s in range(stages):
            if head[s] == len(streams[s]):
                continue
            for peer, op, what, m in streams[s][head[s]]:
                theirs = streams[peer][head[peer]] if head[peer] < len(streams[peer]) else []
                match = (s, "recv" if op == "send" else "send", what, m)
                sender = s if op == "send" else peer
                if (s, op, what, m) not in done and match in theirs \
                        and (sender, "f" if what == "activation" else "b", m) in computed:
                    done |= {(s, op, what, m), (peer, *match[1:])}
                    progress = True
            if all((s, op, what, m) in done for _, op, what, m in streams[s][head[s]]):
                head[s] += 1
                progress = True
    return all(p == len(_order(schedule, s, stages, M)) for s, p in enumerate(position)) \
        and all(head[s] == len(streams[s]) for s in range(stages))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages", [2, 3, 4, 6])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 8])
def test_grouped_exchanges_finish_under_nccl_ordering(schedule, stages, M) -> None:
    assert finishes(schedule, stages, M)


def test_receives_posted_ahead_would_not() -> None:
    assert not finishes("gpipe", 2, 2, ahead=True)
    assert not finishes("1f1b", 4, 8, ahead=True)


def test_exchanges_in_program_order() -> None:
    # 1F1B, the middle stage of 3, 3 micro-batches: fill one forward, then F/B pairs, then drain.
    assert exchanges("1f1b", 1, 3, 3) == [
        ("recv", "activation", 0), ("send", "activation", 0),
        ("recv", "activation", 1), ("send", "activation", 1), ("recv", "gradient", 0), ("send", "gradient", 0),
        ("recv", "activation", 2), ("send", "activation", 2), ("recv", "gradient", 1), ("send", "gradient", 1),
        ("recv", "gradient", 2), ("send", "gradient", 2)]
    assert [len(g) for g in grouped(exchanges("1f1b", 1, 3, 3))] == [1, 1, 1, 2, 2, 2, 1, 1, 1]
