"""The ceiling: a bare ``websockets`` server broadcasting the same frames as ours.

    python -m bench.bare_ws --port PORT

No Django, no database, no channel layer: J simulated jobs each tick R times a
second, build the same wire state as ``liveprogress.state.job_state`` (with
``updated_at`` set at publish), encode it once and ``broadcast()`` it to the
job's subscribers. Clients speak our protocol's subset: ``subscribe`` answers
the job's current state, then every state follows. The driver starts the jobs
with ``{"action": "start_jobs", "count": J, "steps": N, "interval": S}``, answered
``{"type": "jobs", "ids": [...]}``, and ends them all (``cancelled``) with
``{"action": "end_jobs"}``, answered ``{"type": "ended"}``. ``GET /page`` is a plain
page. Each job's first tick has a random phase, as jobs started one by one over HTTP
would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SUBSCRIBERS: dict[str, set[ServerConnection]] = {}
STATES: dict[str, dict[str, Any]] = {}
TASKS: list[asyncio.Task[None]] = []
#: Set by ``end_jobs``: every job ends at its next tick, ``cancelled``.
STOP = asyncio.Event()
PAGE = b"<!doctype html><title>Progress</title><p>A plain page.</p>"


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def new_state(job_id: str, steps: int) -> dict[str, Any]:
    now = time.time()
    return {
        "id": job_id, "kind": "demo.timer", "status": "running", "current": 0,
        "total": steps, "percent": 0.0, "progress": 0, "message": "Progreso: 0%", "seq": 1,
        "eta_s": None, "result": None, "error": "", "cancel_requested": False,
        "created_at": now, "started_at": now, "updated_at": now, "finished_at": None,
    }  # fmt: skip


async def job_frames(
    state: dict[str, Any], steps: int, interval: float, stop: asyncio.Event
) -> AsyncIterator[str]:
    """The frames of one simulated job, each encoded once: a tick every ``interval``
    (after a random phase), then its final state, ``cancelled`` once ``stop`` is set.
    Shared with ``bench/bare_asgi.py``."""
    await asyncio.sleep(random.uniform(0, interval))
    status = "succeeded"
    for step in range(1, steps + 1):
        try:
            await asyncio.wait_for(stop.wait(), interval)
            status = "cancelled"
            break
        except TimeoutError:
            pass
        percent = step * 100 // steps
        state.update(
            current=step,
            percent=round(step * 100 / steps, 2),
            progress=percent,
            message=f"Progreso: {percent}%",
            seq=state["seq"] + 1,
            updated_at=time.time(),
        )
        yield encode({"type": "job", "job": state})
    now = time.time()
    state.update(status=status, message="¡Proceso completado!", seq=state["seq"] + 1,
                 result={"steps": steps}, updated_at=now, finished_at=now)  # fmt: skip
    yield encode({"type": "job", "job": state})


def start_jobs(
    frame: dict[str, Any],
    states: dict[str, dict[str, Any]],
    tasks: list[asyncio.Task[None]],
    run: Callable[[str, int, float], Coroutine[Any, Any, None]],
) -> list[str]:
    """A ``start_jobs`` action: ``count`` new jobs in ``states``, each run as
    ``run(job_id, steps, interval)`` in a task kept in ``tasks``; their ids.
    Shared with ``bench/bare_asgi.py``."""
    ids = [str(uuid.uuid4()) for _ in range(frame["count"])]
    loop = asyncio.get_running_loop()
    for job_id in ids:
        states[job_id] = new_state(job_id, frame["steps"])
        tasks.append(loop.create_task(run(job_id, frame["steps"], frame["interval"])))
    return ids


async def run_job(job_id: str, steps: int, interval: float) -> None:
    async for frame in job_frames(STATES[job_id], steps, interval, STOP):
        broadcast(SUBSCRIBERS.get(job_id, ()), frame)


async def handler(ws: ServerConnection) -> None:
    watching: set[str] = set()
    try:
        async for text in ws:
            frame = json.loads(text)
            action = frame.get("action")
            if action == "subscribe" and frame.get("job") in STATES:
                job_id = frame["job"]
                SUBSCRIBERS.setdefault(job_id, set()).add(ws)
                watching.add(job_id)
                await ws.send(encode({"type": "job", "job": STATES[job_id]}))
            elif action == "start_jobs":
                ids = start_jobs(frame, STATES, TASKS, run_job)
                await ws.send(encode({"type": "jobs", "ids": ids}))
            elif action == "end_jobs":
                STOP.set()
                await asyncio.gather(*TASKS)
                await ws.send(encode({"type": "ended"}))
            else:
                await ws.send(encode({"type": "error", "code": "bad_request"}))
    except ConnectionClosed:
        pass  # load generators abort their sockets at the end of a run
    finally:
        for job_id in watching:
            SUBSCRIBERS.get(job_id, set()).discard(ws)


def plain_page(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    response = connection.respond(HTTPStatus.OK, "")
    response.body = PAGE
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Length"] = str(len(PAGE))
    return response


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler, "127.0.0.1", args.port, process_request=plain_page, compression=None,
        ping_interval=None, max_size=2**20,
    ):  # fmt: skip
        await stop


if __name__ == "__main__":
    asyncio.run(main())
