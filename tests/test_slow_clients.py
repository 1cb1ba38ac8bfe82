"""A client that stops reading costs the server bounded memory and nobody else any delay.

Under Uvicorn (websockets), a send to a socket that doesn't read waits, and the
socket's outbox keeps only the newest state per job: superseded states are
skipped, the final one still arrives. Daphne applies no backpressure to the
application; there the bound is its keepalive: a client that doesn't answer
pings is dropped after ``--ping-interval`` + ``--ping-timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from pathlib import Path

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tests.servers import (
    HOST,
    DaphneServer,
    UvicornServer,
    Visitor,
    is_terminal,
    send_json,
)

pytestmark = pytest.mark.integration

JOBS = 20
SLOW_CLIENTS = 3
SECONDS = 5.0
SETTINGS = {"MAX_ACTIVE_PER_OWNER": 50, "JOB_MODULES": ["tests.jobs"]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class NonReader:
    """A WebSocket client that reads nothing until told: a raw socket, a tiny receive
    buffer and websockets' sans-I/O protocol, so nothing reads on its behalf."""

    def __init__(self, server, visitor: Visitor) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((HOST, server.port))
        self.protocol = ClientProtocol(parse_uri(server.ws_url()))
        request = self.protocol.connect()
        request.headers["Cookie"] = visitor.cookie_header()
        request.headers["Origin"] = server.origin
        self.protocol.send_request(request)
        self._flush()
        while not self.protocol.events_received():
            self.protocol.receive_data(self.sock.recv(65536))
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        self.closed = False

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def send_json(self, frame: dict) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def read_until(self, done, timeout: float) -> list[dict]:
        """Read at last: every text frame until ``done(frames)`` or the server closes."""
        frames: list[dict] = []
        deadline = time.monotonic() + timeout
        while not done(frames) and time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            self.protocol.receive_data(data)
            self._flush()  # pongs
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    frames.append(json.loads(event.data))
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    self.closed = True
        return frames

    def close(self) -> None:
        self.sock.close()


async def watch_latency(ws, job_id: str, until: float) -> list[float]:
    """Publish-to-receive delays of one job's states, read as they come."""
    await send_json(ws, {"action": "subscribe", "job": job_id})
    delays = []
    while time.time() < until:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 1))
        except TimeoutError:
            continue
        if frame.get("type") == "job":
            delays.append(time.time() - frame["job"]["updated_at"])
            if frame["job"]["status"] not in ("queued", "running"):
                break
    return delays


async def load(server):
    """Start the chatty jobs, the slow clients and one normal watcher; measure."""
    owner = Visitor(server)
    jobs = []
    for _ in range(JOBS):
        status, state = owner.post_json(
            "/api/jobs/", {"kind": "tests.chatty", "params": {"seconds": SECONDS}}
        )
        assert status == 201, state
        jobs.append(state["id"])
    slow = [NonReader(server, owner) for _ in range(SLOW_CLIENTS)]
    for client in slow:
        for job_id in jobs:
            client.send_json({"action": "subscribe", "job": job_id})
    baseline = rss_mb(server.pid)
    samples = []

    async def sample():
        while True:
            samples.append(rss_mb(server.pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    async with owner.ws() as watcher:
        delays = await watch_latency(watcher, jobs[0], time.time() + SECONDS + 3)
    sampler.cancel()
    return owner, jobs, slow, baseline, samples, delays


def ended(frames: list[dict]) -> set[str]:
    return {f["job"]["id"] for f in frames if is_terminal(f)}


def report(name, baseline, samples, delays):
    p99 = statistics.quantiles(delays, n=100)[98] if len(delays) > 2 else max(delays)
    print(  # noqa: T201 (the figures measured, shown with -s)
        f"\n[{name}] server RSS {baseline:.0f} MB -> max {max(samples):.0f} MB; "
        f"normal watcher: {len(delays)} states, p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms"
    )
    return p99


async def test_under_uvicorn_a_slow_socket_gets_the_newest_states_only(tmp_path_factory):
    db = tmp_path_factory.mktemp("slow-uvicorn") / "db.sqlite3"
    with UvicornServer(db, liveprogress=SETTINGS) as server:
        owner, jobs, slow, baseline, samples, delays = await load(server)
        p99 = report("uvicorn", baseline, samples, delays)
        # Now the slow clients read: what waited for them is little, and ends right.
        published = SECONDS / 0.1  # states per job at one per PUBLISH_INTERVAL
        for client in slow:
            frames = client.read_until(lambda fs: ended(fs) == set(jobs), 30)
            states = [f for f in frames if f.get("type") == "job"]
            assert ended(frames) == set(jobs)
            # Latest wins: far fewer states than were published reached it.
            got = f"[uvicorn] a slow client got {len(states)} of ~{published * JOBS:.0f} states"
            print(got)  # noqa: T201 (the figure measured, shown with -s)
            assert len(states) < 0.5 * published * JOBS
            client.close()
    # Memory: no growth that tracks what the slow clients didn't read (~20 MB/s).
    assert max(samples) - baseline < 40
    assert p99 < 1.0


async def test_under_daphne_a_socket_that_stops_reading_is_dropped(tmp_path_factory):
    db = tmp_path_factory.mktemp("slow-daphne") / "db.sqlite3"
    args = ["--ping-interval", "1", "--ping-timeout", "2"]
    with DaphneServer(db, liveprogress=SETTINGS, args=args) as server:
        started = time.monotonic()
        owner, jobs, slow, baseline, samples, delays = await load(server)
        p99 = report("daphne", baseline, samples, delays)
        for client in slow:
            # The server dropped it (no answer to its pings); what it buffered for it
            # went with the connection (ending a job never closes a socket).
            client.read_until(lambda fs: False, 30)
            assert client.closed
            client.close()
        assert time.monotonic() - started < 60
    assert p99 < 1.0
