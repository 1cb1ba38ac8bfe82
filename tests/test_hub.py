"""Fan-out in one process: one frame for many sockets, latest state wins, nothing lost."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer

from liveprogress import hub as hub_module
from liveprogress import publish as publish_module
from liveprogress.hub import Hub
from liveprogress.models import Job
from liveprogress.outbox import Outbox
from liveprogress.publish import publish
from liveprogress.runtime import get_runtime, stop_runtime

pytestmark = pytest.mark.asyncio


async def through_the_layer(monkeypatch):
    """Restart the runtime as it runs with a layer shared between processes (Redis):
    states go through the job's and the owner's groups (here the in-memory layer's)."""
    for module in (publish_module, hub_module):
        monkeypatch.setattr(module, "in_process", lambda layer: False)
    await stop_runtime()
    return await get_runtime()


@pytest.fixture
async def layered_runtime(runtime, monkeypatch):
    return await through_the_layer(monkeypatch)


@pytest.fixture(params=["in-process", "through-the-layer"])
async def any_runtime(request, runtime, monkeypatch):
    """Each way a state travels: straight to the hub, or through the layer."""
    if request.param == "in-process":
        return runtime
    return await through_the_layer(monkeypatch)


class SlowSocket:
    """A socket whose sends take a while, recording what it got."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.frames: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: str) -> None:
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        self.frames.append(frame)


async def settle(outbox: Outbox) -> None:
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not outbox._pending:
            return


async def test_slow_socket_skips_superseded_states_and_gets_the_last():
    socket = SlowSocket()
    socket.gate.clear()
    outbox = Outbox(socket.send)
    outbox.offer_state("a", 1, "a1")
    await asyncio.sleep(0.01)  # a1 is being sent, blocked
    for seq in range(2, 100):
        outbox.offer_state("a", seq, f"a{seq}")
    outbox.offer_state("b", 1, "b1")
    socket.gate.set()
    await settle(outbox)
    assert socket.frames == ["a1", "a99", "b1"]
    outbox.close()


async def test_states_never_go_backwards_but_answers_may_repeat():
    socket = SlowSocket()
    outbox = Outbox(socket.send)
    outbox.offer_state("a", 5, "a5")
    await settle(outbox)
    outbox.offer_state("a", 4, "a4")
    outbox.offer_state("a", 5, "a5-again")
    await settle(outbox)
    assert socket.frames == ["a5"]
    outbox.offer_state("a", 5, "a5-answer", answer=True)
    outbox.offer_state("a", 3, "a3-answer", answer=True)
    await settle(outbox)
    assert socket.frames == ["a5", "a5-answer"]
    outbox.close()


async def test_control_frames_keep_their_order():
    socket = SlowSocket()
    outbox = Outbox(socket.send)
    outbox.offer("e1")
    outbox.offer_state("a", 1, "a1")
    outbox.offer("e2")
    await settle(outbox)
    assert socket.frames == ["e1", "a1", "e2"]
    outbox.close()


async def test_one_encoded_frame_reaches_every_local_socket():
    hub = Hub()
    sockets = [SlowSocket() for _ in range(50)]
    outboxes = [Outbox(s.send) for s in sockets]
    for outbox in outboxes:
        await hub.watch_job("a", outbox)
    frame = json.dumps({"type": "job"})
    hub.deliver("a", "owner", 3, frame, False)
    for outbox in outboxes:
        await settle(outbox)
    assert all(s.frames[0] is frame for s in sockets)
    for outbox in outboxes:
        outbox.close()


async def test_one_group_membership_per_process_and_job(layered_runtime):
    layer = get_channel_layer()
    hub = layered_runtime.hub
    outboxes = [Outbox(SlowSocket().send) for _ in range(20)]
    for outbox in outboxes:
        await hub.watch_job("job-x", outbox)
    assert list(layer.groups["liveprogress.job.job-x"]) == [hub.channel]
    for outbox in outboxes:
        await hub.unwatch_job("job-x", outbox)
        outbox.close()
    assert "liveprogress.job.job-x" not in layer.groups


async def test_reconcile_delivers_what_the_layer_dropped(runtime):
    job = await Job.objects.acreate(kind="demo.timer", owner="session:x", seq=1)
    socket = SlowSocket()
    outbox = Outbox(socket.send)
    await runtime.hub.watch_job(str(job.id), outbox)
    # The job ends without any message on the layer (as if Redis lost it).
    await Job.objects.filter(pk=job.pk).aupdate(status="succeeded", seq=9)
    await asyncio.sleep(0.6)  # RECONCILE_INTERVAL is 0.2 s in the fast settings
    states = [json.loads(frame)["job"] for frame in socket.frames]
    assert states[-1]["status"] == "succeeded"
    assert states[-1]["seq"] == 9
    outbox.close()


async def test_published_state_reaches_watching_sockets(any_runtime):
    runtime = any_runtime
    job = await Job.objects.acreate(kind="demo.timer", owner="session:x", seq=4)
    by_job, by_owner = SlowSocket(), SlowSocket()
    job_outbox, owner_outbox = Outbox(by_job.send), Outbox(by_owner.send)
    await runtime.hub.watch_job(str(job.id), job_outbox)
    await runtime.hub.watch_owner("session:x", owner_outbox)
    await publish(job)
    await settle(job_outbox)
    await settle(owner_outbox)
    assert json.loads(by_job.frames[0])["job"]["seq"] == 4
    assert by_owner.frames == by_job.frames
    job_outbox.close()
    owner_outbox.close()


async def test_in_memory_layer_states_go_straight_to_the_hub(runtime, monkeypatch):
    """With the in-process layer a state reaches the hub's sockets at once, without
    a group_send (each scans every group of the layer) or a hop through a channel."""
    layer = get_channel_layer()
    sent = []

    async def group_send(group, message):
        sent.append(group)

    monkeypatch.setattr(layer, "group_send", group_send)
    job = await Job.objects.acreate(kind="demo.timer", owner="session:x", seq=4)
    socket = SlowSocket()
    outbox = Outbox(socket.send)
    await runtime.hub.watch_job(str(job.id), outbox)
    await runtime.hub.watch_owner("session:x", outbox)
    await publish(job)
    # Queued on the socket's outbox before publish() returned.
    assert outbox.newest_seq(str(job.id)) == 4
    await settle(outbox)
    assert [json.loads(frame)["job"]["seq"] for frame in socket.frames] == [4]
    assert sent == []
    # No job or owner group on the layer: only the control group, for cancels.
    assert list(layer.groups) == ["liveprogress.control"]
    outbox.close()


async def test_a_stopped_hub_gets_nothing_more(runtime):
    job = await Job.objects.acreate(kind="demo.timer", owner="session:x", seq=4)
    socket = SlowSocket()
    outbox = Outbox(socket.send)
    await runtime.hub.watch_job(str(job.id), outbox)
    await stop_runtime()
    await publish(job)
    assert outbox.newest_seq(str(job.id)) == 0
    outbox.close()


async def test_a_frame_that_can_t_be_sent_closes_the_socket_once():
    """Daphne refuses a message over 1 MiB: the socket is closed (the client
    reconnects), not left open and mute."""
    sent: list[str] = []
    broken: list[bool] = []

    async def send(frame: str) -> None:
        if "boom" in frame:
            raise ValueError("message too big")
        sent.append(frame)

    async def on_broken() -> None:
        broken.append(True)

    outbox = Outbox(send, on_broken=on_broken)
    outbox.offer('{"type":"ack"}')
    outbox.offer('{"type":"boom"}')
    outbox.offer('{"type":"after"}')
    async with asyncio.timeout(2):
        while not broken:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert sent == ['{"type":"ack"}'] and broken == [True]
    outbox.close()


async def test_a_burst_of_log_lines_is_split_under_the_frame_limit():
    from liveprogress.outbox import LogBatch
    from liveprogress.state import MAX_SENT_FRAME_BYTES

    batch = LogBatch("job-1")
    lines = [{"seq": n, "level": "info", "text": "é" * 2000, "at": 0.0} for n in range(1, 1001)]
    batch.add(lines, dropped_through=0)
    batch.dropped_through = 7
    frames = [json.loads(frame) for frame in batch.encode()]
    assert all(
        len(json.dumps(f, ensure_ascii=False).encode()) <= MAX_SENT_FRAME_BYTES for f in frames
    )
    assert [line["seq"] for f in frames for line in f["lines"]] == list(range(1, 1001))
    assert [f.get("dropped_through") for f in frames] == [7] + [None] * (len(frames) - 1)


async def test_a_reserved_place_keeps_what_comes_after_it_waiting():
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    outbox = Outbox(send)
    first = outbox.reserve()
    outbox.offer_state("j", 5, '{"seq":5}')
    outbox.offer("after")
    await asyncio.sleep(0.05)
    assert sent == []
    # What the reserved frame already carries is not sent again behind it.
    outbox.note_sent("j", 5)
    outbox.fill(first, "first")
    async with asyncio.timeout(2):
        while len(sent) < 2:
            await asyncio.sleep(0.01)
    assert sent == ["first", "after"]
    given_up = outbox.reserve()
    outbox.offer("next")
    outbox.fill(given_up, None)
    async with asyncio.timeout(2):
        while len(sent) < 3:
            await asyncio.sleep(0.01)
    assert sent[-1] == "next"
    outbox.close()
