"""The owner's list (issue #14 target 6): what a page listing 200 running jobs costs.

One visitor starts J ``demo.timer`` jobs (R updates/s each); two sockets of the
same visitor follow them all with ``watch_mine``: one that takes batch frames
(``/ws/progress/?batch=1``, as the JavaScript client does) and one that does
not (a client written to the protocol without batches). Over the window each
socket counts the frames it receives and the job states inside them; then the
jobs are cancelled and each socket must receive every job's final state.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from . import harness, watchers

NAME = "ownerlist"
JOBS = 200
RATE = 2.0
WINDOW = {False: 10.0, True: 20.0}
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
COLUMNS = [
    ("socket", "socket"),
    ("frames_per_s", "frames/s"),
    ("states_per_s", "states/s"),
    ("states_per_frame", "states/frame"),
    ("finals", "finals"),
    ("final_lost", "lost"),
    ("server_cpu", "srv CPU (both)"),
    ("other_load", "other load"),
]


class Follower:
    """One socket following every job of the owner, counting what it gets."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.counting = False
        self.frames = 0
        self.states = 0
        self.finals: set[str] = set()
        self.seq: dict[str, int] = {}
        self.stepped_back = 0

    def take(self, frame: dict[str, Any]) -> None:
        for each in frame["frames"] if frame["type"] == "batch" else [frame]:
            states = each["jobs"] if each["type"] == "watching" else []
            states += [each["job"]] if each["type"] == "job" else []
            for state in states:
                if state["seq"] < self.seq.get(state["id"], 0):
                    self.stepped_back += 1
                self.seq[state["id"]] = max(state["seq"], self.seq.get(state["id"], 0))
                if state["status"] in TERMINAL:
                    self.finals.add(state["id"])
                self.states += self.counting
        self.frames += self.counting

    async def follow(self, port: int, headers: dict[str, str], stop: asyncio.Event) -> None:
        async with websockets.connect(
            f"ws://{harness.HOST}:{port}{self.path}",
            additional_headers=headers,
            max_size=None,
            compression=None,
        ) as ws:
            await ws.send(json.dumps({"action": "watch_mine"}))
            while not stop.is_set():
                try:
                    text = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                self.take(json.loads(text))


async def _measure(server: harness.Server, visitor: harness.Visitor, window: float) -> list[Any]:
    followers = [
        Follower("batches (?batch=1)", "/ws/progress/?batch=1"),
        Follower("no batches", "/ws/progress/"),
    ]
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(each.follow(server.port, visitor.ws_headers(), stop))
        for each in followers
    ]
    await asyncio.sleep(1.0)
    steps = int((window + 30) * RATE)
    ids = await asyncio.to_thread(visitor.start_jobs, JOBS, {"steps": steps, "interval": 1 / RATE})
    await asyncio.sleep(2.0)  # every job running, every socket following
    meter = harness.Meter([server.pid])
    for each in followers:
        each.counting = True
    start = meter.mark()
    await asyncio.sleep(window)
    end = meter.mark()
    for each in followers:
        each.counting = False
    stats = meter.between(start, end)
    meter.close()
    ender = watchers.our_ender(server, visitor)
    await asyncio.to_thread(ender, ids)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(len(each.finals) < len(ids) for each in followers):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [followers, stats, len(ids)]


def run(full: bool) -> dict[str, Any]:
    window = WINDOW[full]
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        workdir = Path(tmp)
        url = harness.sqlite_url(workdir, NAME)
        with harness.our_server("daphne", url, workdir) as server:
            visitor = watchers.our_visitor(server)
            followers, stats, jobs = asyncio.run(_measure(server, visitor, window))
    rows = [
        {
            "socket": each.name,
            "jobs": jobs,
            "rate": RATE,
            "window_s": window,
            "frames_per_s": round(each.frames / window, 1),
            "states_per_s": round(each.states / window, 1),
            "states_per_frame": round(each.states / each.frames, 1) if each.frames else None,
            "finals": len(each.finals),
            "final_lost": jobs - len(each.finals),
            "stepped_back": each.stepped_back,
            "server_cpu": stats["cpu"],
            "other_load": harness.other_load(stats),
        }
        for each in followers
    ]
    title = f"Owner's list: {jobs} jobs at {RATE:g} updates/s, one visitor, two sockets"
    return {"rows": rows, "table": harness.table(title, COLUMNS, rows)}
