"""A load generator: one process of many clients, driven by ``bench.harness.Workers``.

    python -m bench.loadgen MODE CONFIG_JSON

Modes:

- ``watch``: WebSocket watchers. Connects ``n`` sockets, then (protocols ``ours`` and
  ``bare``) waits for ``{"jobs": [...]}`` on stdin and subscribes socket ``i`` to job
  ``(offset + i) % J``; counts job frames; ``example`` sockets start their own timed
  loop on connect and need no subscribe.
- ``poll``: HTTP pollers, each ``GET /api/jobs/<id>/`` every ``interval`` seconds on a
  keep-alive connection (celery-progress's design).
- ``http``: ``concurrency`` keep-alive connections sending one request again and
  again between two moments (a page probe, job starts, blocking job requests).

``watch`` and ``poll`` then wait for ``{"window": [t0, t1], "until": t}`` on stdin
(later ``{"until": t}`` lines move the end, once the driver knows when jobs ended):
frames received between t0 and t1 are counted, with their publish-to-receive latency
(now minus the timestamp the frame carries: ``job.updated_at`` or ``ts``), and the
process's own CPU over the window is reported, so a saturated client shows. After
t1 they wait for every watcher's terminal state until ``until``, count those that
never came, and print ``{"event": "result", ...}``.

Everything is bounded: ``deadline`` (epoch seconds) ends the process whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import signal
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

from .harness import HOST, TERMINAL, Histogram

EXAMPLE_DONE = "¡Proceso completado!"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Commands:
    """JSON commands from the driver on stdin, one a line."""

    def __init__(self) -> None:
        # A command may list thousands of job ids: well past the default 64 KiB line.
        self.reader = asyncio.StreamReader(limit=64 * 1024 * 1024)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader), sys.stdin)

    async def next(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise SystemExit("the driver went away")
        return json.loads(line)


async def wait_done(done: asyncio.Event, commands: Commands, until: list[float]) -> None:
    """Wait for ``done`` until ``until[0]``, which ``{"until": t}`` commands move."""

    async def updates() -> None:
        while True:
            try:
                command = await commands.next()
            except SystemExit:
                until[0] = 0.0
                return
            if "until" in command:
                until[0] = command["until"]

    listener = asyncio.create_task(updates())
    try:
        while not done.is_set() and time.time() < until[0]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), min(0.5, max(0.01, until[0] - time.time())))
    finally:
        listener.cancel()


class Window:
    """The measured interval, and this process's CPU over it."""

    def __init__(self) -> None:
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.cpu0 = self.cpu1 = 0.0

    def set(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, t1
        loop = asyncio.get_running_loop()
        now = time.time()
        loop.call_later(max(0.0, t0 - now), self._start)
        loop.call_later(max(0.0, t1 - now), self._end)

    def _start(self) -> None:
        self.cpu0 = cpu_seconds()

    def _end(self) -> None:
        self.cpu1 = cpu_seconds()

    def __contains__(self, moment: float) -> bool:
        return self.t0 <= moment <= self.t1

    @property
    def cpu(self) -> float:
        return round((self.cpu1 - self.cpu0) / max(self.t1 - self.t0, 1e-9), 3)


# -- watch ------------------------------------------------------------------------------


class Watchers:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.protocol = config["protocol"]
        self.n = config["n"]
        self.sockets: list[Any] = []
        self.job_of: list[str] = []
        self.first = [False] * self.n
        self.terminal = [False] * self.n
        self.last_seq = [0] * self.n
        self.window = Window()
        self.hist = Histogram()
        # Terminal-state lag: receive time minus the job's ``finished_at`` (the
        # server's stamp as the ending begins, after the function returned), for
        # final states that came as a publish (not as a subscribe's snapshot).
        self.terminal_hist = Histogram()
        self.terminal_times: list[tuple[str, float, float]] = []
        self.frames_window = 0
        self.frames_total = 0
        self.duplicates = 0
        self.errors: dict[str, int] = {}
        self.closed_early = 0
        self.connect_failed: dict[str, int] = {}
        self.subscribed = 0
        self.done = 0
        self.all_subscribed = asyncio.Event()
        self.all_done = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(self.config.get("concurrency", 50))
        headers = self.config.get("headers") or {}

        async def one(index: int) -> Any:
            async with gate:
                try:
                    return await connect(
                        self.config["url"], additional_headers=headers, compression=None,
                        ping_interval=None, open_timeout=60, close_timeout=1, max_size=2**20,
                    )  # fmt: skip
                except Exception as exc:
                    name = type(exc).__name__
                    self.connect_failed[name] = self.connect_failed.get(name, 0) + 1
                    return None

        self.sockets = await asyncio.gather(*(one(i) for i in range(self.n)))

    def start_reading(self) -> None:
        for index, ws in enumerate(self.sockets):
            if ws is not None:
                self.readers.append(asyncio.create_task(self.read(index, ws)))

    async def subscribe(self, jobs: list[str]) -> None:
        offset = self.config["offset"]
        self.job_of = [jobs[(offset + i) % len(jobs)] for i in range(self.n)]
        for index, ws in enumerate(self.sockets):
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.send(json.dumps({"action": "subscribe", "job": self.job_of[index]}))

    def _first(self, index: int) -> None:
        self.first[index] = True
        self.subscribed += 1
        if self.subscribed >= self.live:
            self.all_subscribed.set()

    @property
    def live(self) -> int:
        return sum(ws is not None for ws in self.sockets)

    async def read(self, index: int, ws: Any) -> None:
        example = self.protocol == "example"
        try:
            async for text in ws:
                now = time.time()
                frame = json.loads(text)
                if example:
                    stamp, seq = frame["ts"], frame["progress"]
                    final = frame.get("message") == EXAMPLE_DONE
                else:
                    if frame.get("type") == "subscribed":
                        # The answer to subscribe when the socket already holds the state.
                        if not self.first[index]:
                            self._first(index)
                        continue
                    if frame.get("type") != "job":
                        code = str(frame.get("code", frame.get("type")))
                        self.errors[code] = self.errors.get(code, 0) + 1
                        continue
                    job = frame["job"]
                    stamp, seq = job["updated_at"], job["seq"]
                    final = job["status"] in TERMINAL
                self.frames_total += 1
                # The example's frames carry a whole percent, not a sequence number.
                if seq <= self.last_seq[index] and not final and not example:
                    self.duplicates += 1
                self.last_seq[index] = max(seq, self.last_seq[index])
                if not self.first[index]:
                    self._first(index)
                    if not example:
                        # The answer to subscribe is the snapshot: not a publish.
                        if final:
                            self._final(index)
                        continue
                if now in self.window:
                    self.frames_window += 1
                    self.hist.add(now - stamp)
                if final and not self.terminal[index]:
                    if not example and job.get("finished_at"):
                        self.terminal_hist.add(now - job["finished_at"])
                        self.terminal_times.append((job["id"], job["finished_at"], now))
                    self._final(index)
        except Exception as exc:
            # A socket the server closed or reset: counted, never retried.
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
        if not self.terminal[index]:
            self.closed_early += 1

    def _final(self, index: int) -> None:
        self.terminal[index] = True
        self.done += 1
        if self.done >= self.live:
            self.all_done.set()

    def result(self) -> dict[str, Any]:
        live = self.live
        return {
            "connected": live,
            "connect_failed": self.connect_failed,
            "subscribed": self.subscribed,
            "frames_window": self.frames_window,
            "frames_total": self.frames_total,
            "window_s": self.window.t1 - self.window.t0,
            "hist": self.hist.to_dict(),
            "terminal_hist": self.terminal_hist.to_dict(),
            # (job id, finished_at, received) of each final state received as a publish.
            "terminal_times": self.terminal_times,
            "terminal": self.done,
            "terminal_lost": live - self.done,
            # job id -> watchers of it that got no terminal state (the driver tells a
            # loss from a job that had not ended yet).
            "missing": self.missing(),
            "duplicates": self.duplicates,
            "errors": self.errors,
            "closed_early": self.closed_early,
            "window_cpu": self.window.cpu,
        }

    def missing(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for index, ws in enumerate(self.sockets):
            if ws is not None and not self.terminal[index] and index < len(self.job_of):
                job = self.job_of[index]
                counts[job] = counts.get(job, 0) + 1
        return counts

    def abort(self) -> None:
        for task in self.readers:
            task.cancel()
        for ws in self.sockets:
            if ws is not None and ws.transport is not None:
                ws.transport.abort()


async def watch(config: dict[str, Any]) -> None:
    commands = Commands()
    await commands.open()
    watchers = Watchers(config)
    started, cpu = time.monotonic(), cpu_seconds()
    await watchers.connect_all()
    watchers.start_reading()
    emit(
        "connected",
        ok=watchers.live,
        failed=watchers.connect_failed,
        seconds=round(time.monotonic() - started, 2),
        cpu=round(cpu_seconds() - cpu, 2),
    )
    if config["protocol"] != "example":
        jobs = (await commands.next())["jobs"]
        started = time.monotonic()
        await watchers.subscribe(jobs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                watchers.all_subscribed.wait(), config.get("subscribe_timeout", 120)
            )
        emit(
            "subscribed",
            ok=watchers.subscribed,
            seconds=round(time.monotonic() - started, 2),
        )
    command = await commands.next()
    watchers.window.set(*command["window"])
    await wait_done(watchers.all_done, commands, [command["until"]])
    # The window may still be open when every watcher is done: wait for its end.
    await asyncio.sleep(max(0.0, watchers.window.t1 - time.time()) + 0.05)
    emit("result", **watchers.result())
    watchers.abort()


# -- HTTP -------------------------------------------------------------------------------


class Http:
    """A minimal HTTP/1.1 client on one keep-alive connection (no dependencies)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        if self.reader is None:
            raise ConnectionError("not connected")
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length)
        else:
            data, close = await self.reader.read(), True
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


async def poll(config: dict[str, Any]) -> None:
    commands = Commands()
    await commands.open()
    n, interval, timeout = config["n"], config["interval"], config.get("timeout", 10.0)
    headers = {"Cookie": config["cookie"], "Accept": "application/json"}
    clients = [Http(config["port"], headers) for _ in range(n)]
    emit("connected", ok=n, failed={}, seconds=0.0, cpu=round(cpu_seconds(), 2))
    jobs = (await commands.next())["jobs"]
    window = Window()
    hist, request_hist = Histogram(), Histogram()
    counts = {"requests_window": 0, "frames_window": 0, "failed": 0, "done": 0, "missed_ticks": 0}
    first_answered = asyncio.Event()
    all_done = asyncio.Event()
    answered = [0]
    until = [time.time() + 3600.0]

    async def poller(index: int) -> None:
        job = jobs[(config["offset"] + index) % len(jobs)]
        client = clients[index]
        last_seq, seen = 0, False
        tick = time.time() + random.uniform(0, interval)
        while time.time() < until[0]:
            await asyncio.sleep(max(0.0, tick - time.time()))
            sent = time.time()
            try:
                status, body = await asyncio.wait_for(
                    client.request("GET", f"/api/jobs/{job}/"), timeout
                )
                state = json.loads(body)
                if status != 200:
                    raise ValueError(status)
            except Exception:
                client.close()
                counts["failed"] += 1
                state = None
            now = time.time()
            if sent in window:
                counts["requests_window"] += 1
                request_hist.add(now - sent)
            if state is not None:
                if not seen:
                    seen = True
                    answered[0] += 1
                    if answered[0] >= n:
                        first_answered.set()
                elif state["seq"] > last_seq and now in window:
                    counts["frames_window"] += 1
                    hist.add(now - state["updated_at"])
                last_seq = max(last_seq, state["seq"])
                if state["status"] in TERMINAL:
                    counts["done"] += 1
                    if counts["done"] >= n:
                        all_done.set()
                    return
            tick += interval
            if tick < time.time():
                skipped = int((time.time() - tick) / interval) + 1
                counts["missed_ticks"] += skipped
                tick += skipped * interval

    started = time.monotonic()
    tasks = [asyncio.create_task(poller(i)) for i in range(n)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first_answered.wait(), config.get("subscribe_timeout", 120))
    emit("subscribed", ok=answered[0], seconds=round(time.monotonic() - started, 2))
    command = await commands.next()
    window.set(*command["window"])
    until[0] = command["until"]
    await wait_done(all_done, commands, until)
    for task in tasks:
        task.cancel()
    await asyncio.sleep(max(0.0, window.t1 - time.time()) + 0.05)
    emit(
        "result",
        connected=n,
        subscribed=answered[0],
        frames_window=counts["frames_window"],
        requests_window=counts["requests_window"],
        window_s=window.t1 - window.t0,
        hist=hist.to_dict(),
        request_hist=request_hist.to_dict(),
        terminal=counts["done"],
        terminal_lost=n - counts["done"],
        failed=counts["failed"],
        missed_ticks=counts["missed_ticks"],
        window_cpu=window.cpu,
    )
    for client in clients:
        client.close()


async def http(config: dict[str, Any]) -> None:
    """``concurrency`` connections, each sending requests from t0 to t1."""
    t0, t1 = config["t0"], config["t1"]
    timeout = config.get("timeout", 10.0)
    interval = config.get("interval", 0.0)
    per_connection = config.get("per_connection", 0)  # 0: no limit
    body = json.dumps(config["body"]).encode() if "body" in config else b""
    headers = dict(config.get("headers") or {})
    if body:
        headers["Content-Type"] = "application/json"
    hist = Histogram()
    statuses: dict[str, int] = {}
    counts = {"timeouts": 0, "errors": 0}
    window = Window()
    window.set(t0, t1)

    async def connection(index: int) -> None:
        client = Http(config["port"], headers)
        done = 0
        tick = t0 + (interval * index / max(config["concurrency"], 1))
        while True:
            await asyncio.sleep(max(0.0, tick - time.time()))
            sent = time.time()
            if sent >= t1 or (per_connection and done >= per_connection):
                break
            try:
                status, _ = await asyncio.wait_for(
                    client.request(config["method"], config["path"], body),
                    min(timeout, t1 + timeout - sent),
                )
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            except TimeoutError:
                client.close()
                counts["timeouts"] += 1
            except Exception:
                client.close()
                counts["errors"] += 1
                await asyncio.sleep(0.05)
            hist.add(time.time() - sent)
            done += 1
            tick = max(tick + interval, time.time()) if interval else time.time()
        client.close()

    await asyncio.gather(*(connection(i) for i in range(config["concurrency"])))
    await asyncio.sleep(max(0.0, t1 - time.time()) + 0.05)
    emit(
        "result",
        statuses=statuses,
        hist=hist.to_dict(),
        window_s=t1 - t0,
        window_cpu=window.cpu,
        **counts,
    )


MODES = {"watch": watch, "poll": poll, "http": http}


def main() -> None:
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    # The last word on boundedness: SIGALRM ends the process after its deadline.
    signal.alarm(max(1, int(config["deadline"] - time.time()) + 30))
    try:
        asyncio.run(asyncio.wait_for(MODES[mode](config), config["deadline"] - time.time()))
    except TimeoutError:
        emit("exit_deadline")
        sys.exit(3)


if __name__ == "__main__":
    main()
