"""The ceiling of each ASGI server: ``bench/bare_ws.py`` as a raw ASGI 3 application.

    daphne|uvicorn|hypercorn|granian ... bench.bare_asgi:application

No Django, no Channels, no database: the same protocol subset, the same simulated
jobs and the same frames as the bare ``websockets`` server (its ``job_frames``,
``start_jobs``, ``encode`` and page are imported from it), served by whichever ASGI
server runs it. Each job's task encodes its state once per tick and sends it to each
subscriber in turn with ``await send({"type": "websocket.send", "text": frame})``;
a subscriber whose ``send`` raises is dropped. Its frames per server core-second
under server X are X's ceiling: what our app could reach under X if the library
cost nothing.

Scopes: ``websocket`` on any path is accepted (the watchers connect to
``/ws/progress/``, the driver's ``start_jobs``/``end_jobs`` socket to ``/``, as with
the bare server); ``http`` answers ``GET /page`` with the plain page, anything else
404; ``lifespan`` completes startup and shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .bare_ws import PAGE, encode, job_frames, start_jobs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: job id -> {connection number: that connection's ``send``}.
SUBSCRIBERS: dict[str, dict[int, Send]] = {}
STATES: dict[str, dict[str, Any]] = {}
TASKS: list[asyncio.Task[None]] = []
#: Set by ``end_jobs``: every job ends at its next tick, ``cancelled``.
STOP = asyncio.Event()
_CONNECTIONS = itertools.count()


async def run_job(job_id: str, steps: int, interval: float) -> None:
    async for frame in job_frames(STATES[job_id], steps, interval, STOP):
        subscribers = SUBSCRIBERS.get(job_id)
        if not subscribers:
            continue
        message = {"type": "websocket.send", "text": frame}
        for number, send in list(subscribers.items()):
            try:
                await send(message)
            except Exception:
                subscribers.pop(number, None)


async def websocket(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    number = next(_CONNECTIONS)
    watching: set[str] = set()
    try:
        while True:
            # Load generators abort their sockets at the end of a run: a disconnect.
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            frame = json.loads(text if text is not None else message.get("bytes") or b"")
            action = frame.get("action")
            if action == "subscribe" and frame.get("job") in STATES:
                job_id = frame["job"]
                SUBSCRIBERS.setdefault(job_id, {})[number] = send
                watching.add(job_id)
                answer = encode({"type": "job", "job": STATES[job_id]})
            elif action == "start_jobs":
                ids = start_jobs(frame, STATES, TASKS, run_job)
                answer = encode({"type": "jobs", "ids": ids})
            elif action == "end_jobs":
                STOP.set()
                await asyncio.gather(*TASKS)
                answer = encode({"type": "ended"})
            else:
                answer = encode({"type": "error", "code": "bad_request"})
            try:
                await send({"type": "websocket.send", "text": answer})
            except Exception:
                break  # the socket is gone (each server raises its own error)
    finally:
        for job_id in watching:
            SUBSCRIBERS.get(job_id, {}).pop(number, None)


async def http(scope: Scope, send: Send) -> None:
    if scope["method"] == "GET" and scope["path"] == "/page":
        status, body, kind = 200, PAGE, b"text/html; charset=utf-8"
    else:
        status, body, kind = 404, b"Not found", b"text/plain; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":
        await http(scope, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
