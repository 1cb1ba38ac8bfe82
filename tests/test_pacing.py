"""Pacing and batches: under any batching or holding back, each job's states reach a
socket in seq order, never stepping back, and every final state arrives at once.

Timings are the benchmarks' (bench/, BENCHMARKS.md); these tests check what
arrives and in which order.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pytest

from liveprogress.hub import Hub
from liveprogress.outbox import Outbox, batched
from liveprogress.pacing import HOLD_MAX_S, LAG_HIGH_S, PROBE_S, Pacer
from liveprogress.publish import ending
from liveprogress.state import MAX_SENT_FRAME_BYTES

from .test_consumers import connect, new_session, terminal

pytestmark = pytest.mark.asyncio

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


class Socket:
    """A socket that takes every frame at once, recording it parsed."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        self.frames.append(json.loads(text))

    def states(self) -> list[tuple[str, int, str]]:
        """(job, seq, status) of every state received, batches unpacked, in order."""
        return [
            (frame["job"]["id"], frame["job"]["seq"], frame["job"]["status"])
            for frame in unpacked(self.frames)
            if frame["type"] == "job"
        ]


def unpacked(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        out.extend(frame["frames"] if frame["type"] == "batch" else [frame])
    return out


def state(job: str, seq: int, status: str = "running") -> str:
    return json.dumps({"type": "job", "job": {"id": job, "seq": seq, "status": status}})


async def turn() -> None:
    """Let a send started in this turn finish (at once on 3.12+, next turn on 3.11)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def make_lag(pacer: Pacer) -> None:
    """Block the loop past the pacer's threshold until it measures the lag."""
    deadline = time.monotonic() + 5
    while not pacer.lagging:
        assert time.monotonic() < deadline, "the pacer never saw the loop lag"
        await asyncio.sleep(PROBE_S / 2)
        time.sleep(LAG_HIGH_S * 3)


async def test_a_socket_that_takes_batches_gets_what_waits_as_one_frame_in_order():
    pacer = Pacer(round_s=0.05)
    socket = Socket()
    outbox = Outbox(socket.send, pacer=pacer, batches=True)
    for seq in (1, 2, 3):
        for job in ("a", "b", "c"):
            outbox.offer_state(job, seq, state(job, seq))
    await turn()
    assert socket.frames == []  # running states wait for the round
    await asyncio.sleep(0.15)
    assert [frame["type"] for frame in socket.frames] == ["batch"]
    assert socket.states() == [("a", 3, "running"), ("b", 3, "running"), ("c", 3, "running")]
    # A final state goes at once, after what waited before it (a's newer state).
    outbox.offer_state("a", 4, state("a", 4))
    outbox.offer_state("b", 4, state("b", 4, "succeeded"), last=True)
    await turn()
    assert socket.states()[3:] == [("a", 4, "running"), ("b", 4, "succeeded")]
    assert socket.frames[-1]["type"] == "batch"
    # A lone frame goes as itself.
    outbox.offer(json.dumps({"type": "error", "code": "x"}))
    await turn()
    assert socket.frames[-1] == {"type": "error", "code": "x"}
    outbox.close()
    assert pacer.open_outboxes == 0


async def test_batches_stay_under_the_frame_limit_and_keep_every_frame_in_order():
    big = "é" * (MAX_SENT_FRAME_BYTES // 5)  # 2 bytes a character: 0.4 of the limit
    frames = [
        json.dumps({"type": "log", "n": n, "text": big}, ensure_ascii=False) for n in range(7)
    ]
    sent = batched(frames)
    assert len(sent) > 1
    assert all(len(frame.encode()) <= MAX_SENT_FRAME_BYTES for frame in sent)
    assert [each["n"] for each in unpacked([json.loads(frame) for frame in sent])] == list(range(7))
    small = [state("a", 1), state("b", 1)]
    assert unpacked([json.loads(frame) for frame in batched(small)]) == [
        json.loads(frame) for frame in small
    ]
    assert batched([small[0]]) == [small[0]]


async def test_while_the_loop_lags_running_states_wait_and_final_states_do_not():
    hub = Hub()
    pacer = hub.pacer
    sockets = [Socket() for _ in range(20)]
    outboxes = [Outbox(socket.send, pacer=pacer) for socket in sockets]
    for outbox in outboxes:
        await hub.watch_job("a", outbox)
    # The loop keeps up: a running state goes to every socket at once.
    hub.deliver("a", "owner", 1, state("a", 1), False)
    await turn()
    assert all(socket.states() == [("a", 1, "running")] for socket in sockets)

    await make_lag(pacer)
    for seq in range(2, 50):
        hub.deliver("a", "owner", seq, state("a", seq), False)
    await turn()
    assert all(socket.states() == [("a", 1, "running")] for socket in sockets)
    hub.deliver("a", "owner", 50, state("a", 50, "succeeded"), True)
    await turn()
    for socket in sockets:
        # The states held back were superseded: the final one replaced them.
        assert socket.states() == [("a", 1, "running"), ("a", 50, "succeeded")]
    for outbox in outboxes:
        outbox.close()
    assert pacer.open_outboxes == 0


async def test_running_states_give_way_to_a_final_state_being_written():
    hub = Hub()
    socket = Socket()
    outbox = Outbox(socket.send, pacer=hub.pacer)
    for job in ("a", "b"):
        await hub.watch_job(job, outbox)
    with ending():  # a's final state is being written
        hub.deliver("b", "owner", 1, state("b", 1), False)
        await asyncio.sleep(0.05)
        assert socket.states() == []  # b's running state waits
        hub.deliver("a", "owner", 7, state("a", 7, "cancelled"), True)
        await turn()
        # The final state goes at once (b's waiting state, queued before it, with it).
        assert socket.states() == [("b", 1, "running"), ("a", 7, "cancelled")]
        hub.deliver("b", "owner", 2, state("b", 2), False)
        await asyncio.sleep(0.05)
        assert socket.states()[2:] == []
    await asyncio.sleep(0.05)
    assert socket.states()[2:] == [("b", 2, "running")]  # out once the ending is
    # An ending that never finishes holds nothing for long.
    with ending():
        hub.deliver("b", "owner", 3, state("b", 3), False)
        await asyncio.sleep(HOLD_MAX_S + 0.2)
        assert socket.states()[3:] == [("b", 3, "running")]
    outbox.close()


async def test_paced_states_of_many_jobs_never_step_back_and_every_final_arrives():
    hub = Hub()
    pacer = hub.pacer
    jobs = [f"job{n}" for n in range(10)]
    sockets = [Socket() for _ in range(30)]
    outboxes = [
        Outbox(socket.send, pacer=pacer, batches=n % 2 == 0) for n, socket in enumerate(sockets)
    ]
    for n, outbox in enumerate(outboxes):
        for job in jobs[n % 3 :: 3]:
            await hub.watch_job(job, outbox)
    await make_lag(pacer)
    for seq in range(1, 30):
        for job in jobs:
            hub.deliver(job, "owner", seq, state(job, seq), False)
        await asyncio.sleep(0.01)
        if seq % 10 == 0:
            time.sleep(LAG_HIGH_S * 2)  # the loop stays late
    for job in jobs:
        hub.deliver(job, "owner", 30, state(job, 30, "failed"), True)
    await turn()
    offered = received = 0
    for n, socket in enumerate(sockets):
        watched = jobs[n % 3 :: 3]
        got = socket.states()
        for job in watched:
            seqs = [seq for each, seq, _ in got if each == job]
            assert seqs == sorted(set(seqs)), (job, seqs)
            assert seqs[-1] == 30  # the final state, at once
            assert [status for each, _, status in got if each == job][-1] == "failed"
        offered += 30 * len(watched)
        received += len(got)
    assert received < offered  # running states were held back and coalesced
    for outbox in outboxes:
        outbox.close()


async def test_the_pace_comes_back_once_the_loop_keeps_up():
    pacer = Pacer(round_s=0.05)
    socket = Socket()
    outbox = Outbox(socket.send, pacer=pacer)
    await make_lag(pacer)
    deadline = time.monotonic() + 10
    while pacer.lagging:
        assert time.monotonic() < deadline, f"still paced: interval {pacer.interval}"
        await asyncio.sleep(PROBE_S)
    outbox.offer_state("a", 1, state("a", 1))
    await turn()
    assert socket.states() == [("a", 1, "running")]
    outbox.close()


async def test_a_socket_that_asks_for_batches_gets_them_and_every_state_in_order(runtime):
    session_key = await new_session()
    ws = await connect(session_key, path="/ws/progress/?batch=1")
    try:
        await ws.send_json_to({"action": "watch_mine"})
        assert (await ws.receive_json_from(3))["type"] == "watching"
        ids = []
        for _ in range(5):
            await ws.send_json_to(
                {
                    "action": "start",
                    "kind": "demo.timer",
                    "params": {"steps": 10, "interval": 0.03},
                }
            )
        frames: list[dict[str, Any]] = []
        ended: set[str] = set()
        async with asyncio.timeout(20):
            while len(ended) < 5:
                frame = await ws.receive_json_from(10)
                frames.append(frame)
                for each in unpacked([frame]):
                    if each["type"] == "job":
                        if each["job"]["id"] not in ids:
                            ids.append(each["job"]["id"])
                        if each["job"]["status"] in TERMINAL:
                            ended.add(each["job"]["id"])
        states = [each["job"] for each in unpacked(frames) if each["type"] == "job"]
        for job_id in ids:
            seqs = [each["seq"] for each in states if each["id"] == job_id]
            assert seqs == sorted(seqs), seqs  # an answer may repeat the seq just sent
            assert [each["status"] for each in states if each["id"] == job_id][-1] == "succeeded"
        # Five jobs reporting every 30 ms, sent in rounds of 0.1 s: several states a frame.
        assert any(frame["type"] == "batch" and len(frame["frames"]) > 1 for frame in frames)
        assert len(frames) < len(states)
    finally:
        await ws.disconnect()


async def test_a_socket_that_does_not_ask_gets_no_batch(runtime):
    ws = await connect(await new_session())
    try:
        await ws.send_json_to({"action": "watch_mine"})
        assert (await ws.receive_json_from(3))["type"] == "watching"
        for _ in range(3):
            await ws.send_json_to(
                {"action": "start", "kind": "demo.timer", "params": {"steps": 5, "interval": 0.02}}
            )
        finals = 0
        async with asyncio.timeout(20):
            while finals < 3:
                frame = await ws.receive_json_from(10)
                assert frame["type"] != "batch"
                finals += terminal(frame)
    finally:
        await ws.disconnect()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks: Python 3.12+")
async def test_a_final_state_goes_out_in_the_turn_it_is_published():
    hub = Hub()
    socket = Socket()
    outbox = Outbox(socket.send, pacer=hub.pacer)
    await hub.watch_job("a", outbox)
    hub.deliver("a", "owner", 1, state("a", 1, "succeeded"), True)
    # No await in between: no wake-up, no loop iteration on the way.
    assert socket.states() == [("a", 1, "succeeded")]
    outbox.close()
