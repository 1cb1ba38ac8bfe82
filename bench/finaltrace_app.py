"""The demo site with the path of final states timed: the server side of ``bench/finaltrace.py``.

``python -m bench --only finale --asgi-app bench.finaltrace_app:application``.
Importing it wraps the library's functions (nothing in ``src/`` changes).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import json
import os
import threading
import time
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")
django.setup()

from asgiref.sync import SyncToAsync  # noqa: E402

from liveprogress import consumers, execution, finalwrites, outbox  # noqa: E402
from proyecto.asgi import application as _inner  # noqa: E402

from .finaltrace import PATH  # noqa: E402

LOOP_SAMPLE_S = 0.01
BIN_S = 0.1

_label: contextvars.ContextVar[str] = contextvars.ContextVar("finaltrace_label", default="")
_lock = threading.Lock()
TRACE: dict[str, Any] = {
    "jobs": {},  # job id -> {stage: epoch seconds}
    "enqueued": [],  # [job, outbox, t, pending before, sending, accepted]
    "sent": [],  # [job, outbox, start, end]
    "sync": [],  # [label, function, thread, called, started, ended, back]
    "loop": [],  # [t, lateness s, ready handles]
    "frames": {},  # 100 ms bin -> frames handed to sockets
}
_terminal_frames: dict[str, str] = {}


def _job(job_id: Any) -> dict[str, float]:
    return TRACE["jobs"].setdefault(str(job_id), {})


# -- the ending ------------------------------------------------------------------------

_finish = execution.Execution._finish


def _traced_finish(self: Any, status: Any, result: Any, error: str) -> Any:
    # Called by run() right after the function returned, on the job's task.
    stamps = _job(self.job.id)
    stamps["returned"] = time.time()

    async def finish() -> None:
        stamps["finish_running"] = time.time()
        await _finish(self, status, result, error)
        stamps["finish_done"] = time.time()

    return finish()


_take_last = execution.Execution._take_last_progress


async def _traced_take_last(self: Any) -> None:
    if self._function_done:
        _job(self.job.id)["locked"] = time.time()
    await _take_last(self)


_send_state = execution.Execution._send


async def _traced_send(self: Any) -> None:
    if not self._finished:
        await _send_state(self)
        return
    stamps = _job(self.job.id)
    stamps["finished_at"] = self.job.finished_at.timestamp()
    stamps["publish"] = time.time()
    await _send_state(self)
    stamps["published"] = time.time()


_end = finalwrites.FinalWrites.end


async def _traced_end(self: Any, job_id: Any, values: dict[str, Any]) -> bool:
    stamps = _job(job_id)
    stamps["write"] = time.time()
    token = _label.set(f"final:{job_id}")
    try:
        return await _end(self, job_id, values)
    finally:
        _label.reset(token)
        stamps["written"] = time.time()


# -- the database thread ---------------------------------------------------------------

_call = SyncToAsync.__call__


async def _traced_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    func = self.func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    record: list[Any] = [_label.get(), name, "", time.time(), None, None, None]

    @functools.wraps(func)
    def timed(*a: Any, **k: Any) -> Any:
        record[2] = threading.current_thread().name
        record[4] = time.time()
        try:
            return func(*a, **k)
        finally:
            record[5] = time.time()

    clone = copy.copy(self)
    clone.func = timed
    try:
        return await _call(clone, *args, **kwargs)
    finally:
        record[6] = time.time()
        with _lock:
            TRACE["sync"].append(record)


# -- outboxes and sockets --------------------------------------------------------------

_offer_state = outbox.Outbox.offer_state


def _traced_offer_state(
    self: Any, job_id: str, seq: int, frame: str, *, answer: bool = False, last: bool = False
) -> None:
    if not last:
        _offer_state(self, job_id, seq, frame, answer=answer, last=last)
        return
    _terminal_frames[frame] = job_id
    pending, sending = len(self._pending), self._sending
    _offer_state(self, job_id, seq, frame, answer=answer, last=last)
    accepted = self._pending.get(("job", job_id)) is frame
    TRACE["enqueued"].append([job_id, id(self), time.time(), pending, sending, accepted])


_send_text = consumers.ProgressConsumer._send_text


async def _traced_send_text(self: Any, text: str) -> None:
    start = time.time()
    await _send_text(self, text)
    end = time.time()
    key = str(int(end / BIN_S))
    TRACE["frames"][key] = TRACE["frames"].get(key, 0) + 1
    job_id = _terminal_frames.get(text)
    if job_id is not None:
        TRACE["sent"].append([job_id, id(self.outbox), start, end])


# -- the loop --------------------------------------------------------------------------

_monitor: asyncio.Task[None] | None = None


async def _watch_loop() -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LOOP_SAMPLE_S)
        late = loop.time() - before - LOOP_SAMPLE_S
        TRACE["loop"].append([time.time(), round(late, 5), len(getattr(loop, "_ready", ()))])


execution.Execution._finish = _traced_finish  # type: ignore[method-assign]
execution.Execution._take_last_progress = _traced_take_last  # type: ignore[method-assign]
execution.Execution._send = _traced_send  # type: ignore[method-assign]
finalwrites.FinalWrites.end = _traced_end  # type: ignore[method-assign]
SyncToAsync.__call__ = _traced_call  # type: ignore[method-assign]
outbox.Outbox.offer_state = _traced_offer_state  # type: ignore[method-assign]
consumers.ProgressConsumer._send_text = _traced_send_text  # type: ignore[method-assign]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _monitor
    if _monitor is None:
        _monitor = asyncio.get_running_loop().create_task(
            _watch_loop(), context=contextvars.Context()
        )
    if scope["type"] == "http" and scope["path"] == PATH:
        body = json.dumps(TRACE).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return
    await _inner(scope, receive, send)
