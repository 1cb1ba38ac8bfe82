"""One measured run of W watchers over J jobs updating R times a second, on any server.

Shared by the fan-out scenario and the alternatives: the same load generators,
the same window, the same meters, whatever the server (ours, the original
example, a bare websockets broadcaster, HTTP polling).

The run: load generators connect W sockets (held: the server's RSS is read
here), the driver starts J jobs and hands their ids to the generators, which
subscribe; once every watcher has its job's snapshot the window opens; frames
received inside it give throughput and latency, the meters give the server's
CPU and RSS. After the window every watcher waits for its job's terminal state;
the ones that never arrive are counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import harness
from .harness import (
    HOST,
    TERMINAL,
    WS_PATH,
    Histogram,
    Meter,
    Profile,
    Server,
    Visitor,
    Workers,
    client_cpu,
    log,
    sleep_until,
    split,
)

#: Watchers per load-generator process (one process near saturation at ~10k frames/s).
WATCHERS_PER_PROCESS = 2500
#: Seconds after the last job's end that watchers wait for terminal states
#: (two RECONCILE_INTERVALs and a margin: the reconcile pass is the safety net).
TERMINAL_GRACE = 15.0
#: Seconds the driver may take to end every job after the window, and the sockets
#: it cancels them through.
END_TIMEOUT = 300.0
ENDERS = 20
#: Plain-page probe during a run: PROBE_CONNECTIONS visitors, each loading the page
#: every 1 / PROBE_RATE seconds (or as soon as the previous answer came, if later).
PROBE_RATE = 2.0
PROBE_CONNECTIONS = 5


@dataclass
class Load:
    """What a run asks of a server."""

    watchers: int
    jobs: int
    rate: float  # updates per second per job
    window: float  # seconds measured
    processes: int = 0  # load generators (0: one per WATCHERS_PER_PROCESS watchers)
    # Seconds more before the window may open: loops that start at connect (the
    # example's) must outlast the whole connect phase.
    settle_extra: float = 0.0
    # Seconds from the first job's start to the jobs' common end, for jobs that end
    # on their own (0: settle + window + 2 s).
    span: float = 0.0

    @property
    def generator_count(self) -> int:
        return self.processes or max(1, math.ceil(self.watchers / WATCHERS_PER_PROCESS))

    @property
    def settle(self) -> float:
        """Seconds allowed for starting the jobs and subscribing every watcher.

        Starting slows down as more jobs run: measured here, 100 jobs took 1.2 s,
        500 took 15 s and 1,000 took 42 s beside 10,000 sockets; the fit below
        has a 25 % margin. A window shortened all the same says so.
        """
        starting = 1.25 * (self.jobs / 80 + (self.jobs / 200) ** 2)
        return 3.0 + self.watchers / 800 + starting + self.settle_extra

    @property
    def job_seconds(self) -> float:
        return self.span or self.settle + self.window + 2.0

    @property
    def steps(self) -> int:
        return max(2, math.ceil(self.rate * self.job_seconds))


# How a run starts its jobs: (count, end_at, interval) -> job ids. Each job gets
# the steps that make it end at ``end_at`` (epoch seconds): all end together, however
# long starting them took.
JobStarter = Callable[[int, float, float], list[str]]
# How a run ends its jobs after the window: job ids -> the ids of those it did not
# see ended within END_TIMEOUT (empty: all ended).
JobEnder = Callable[[list[str]], set[str]]


def run(
    server: Server,
    load: Load,
    *,
    mode: str = "watch",
    protocol: str = "ours",
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
    start_jobs: JobStarter | None = None,
    end_jobs: JobEnder | None = None,
    probe: tuple[str, Mapping[str, str]] | None = None,
    poll_interval: float = 0.5,
    side: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One measured run; returns the figures of the row (see module docstring).

    ``side``: other processes the server needs (e.g. ``{"redis": pid}``), each
    metered apart over the window: ``<name>_cpu`` in the row.
    """
    counts = split(load.watchers, load.generator_count)
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    connect_allowance = 30.0 + load.watchers / 100
    job_span = 2 * load.settle + load.window + END_TIMEOUT
    deadline = time.time() + connect_allowance + job_span + TERMINAL_GRACE + 120
    url = url or f"ws://{HOST}:{server.port}{WS_PATH}"
    if mode == "watch":
        concurrency = max(8, 64 // len(counts))
        configs = [
            {"url": url, "headers": dict(headers or {}), "n": n, "offset": offset,
             "protocol": protocol, "concurrency": concurrency, "deadline": deadline}
            for n, offset in zip(counts, offsets, strict=True)
        ]  # fmt: skip
    else:
        cookie = dict(headers or {}).get("Cookie", "")
        configs = [
            {"port": server.port, "cookie": cookie, "n": n, "offset": offset,
             "interval": poll_interval, "deadline": deadline, "timeout": 30.0,
             # An overloaded server answers some pollers late: measure what it does.
             "subscribe_timeout": load.settle}
            for n, offset in zip(counts, offsets, strict=True)
        ]  # fmt: skip
    meter = Meter([server.pid])
    side_meters = {name: Meter([pid]) for name, pid in (side or {}).items()}
    side_marks: dict[str, dict[str, Any]] = {}
    row: dict[str, Any] = {
        "server": server.name, "watchers": load.watchers, "jobs": load.jobs,
        "rate": load.rate, "generators": len(counts),
    }  # fmt: skip
    spawned = time.time()
    try:
        with Workers(mode, configs) as workers:
            connected = workers.wait("connected", connect_allowance)
            held = meter.mark()
            connect_s = max(event["seconds"] for event in connected)
            ok = sum(event["ok"] for event in connected)
            failed: dict[str, int] = {}
            for event in connected:
                for name, count in event["failed"].items():
                    failed[name] = failed.get(name, 0) + count
            row |= {
                "connected": ok, "connect_failed": failed, "connect_s": round(connect_s, 2),
                "connects_per_s": round(ok / max(connect_s, 1e-3)),
                "rss_held_mb": round(held["rss"] / 2**20, 1),
            }  # fmt: skip
            log(f"{server.name}: {ok}/{load.watchers} connected in {connect_s:.1f} s")
            interval = 1.0 / load.rate
            ids: list[str] = []
            if start_jobs is not None:
                first_start = time.time()
                # Jobs the driver ends outlast any set-up; the others end on their own.
                end_at = first_start + (job_span if end_jobs else load.job_seconds)
                ids = start_jobs(load.jobs, end_at, interval)
                row["jobs_start_s"] = round(time.time() - first_start, 2)
                workers.send({"jobs": ids})
                subscribed = workers.wait("subscribed", load.settle + 120)
                row["subscribe_s"] = round(max(event["seconds"] for event in subscribed), 2)
                row["subscribed"] = sum(event["ok"] for event in subscribed)
                log(
                    f"{server.name}: {load.jobs} jobs started in {row['jobs_start_s']} s, "
                    f"{row['subscribed']} subscribed in {row['subscribe_s']} s"
                )
                first_end = last_end = end_at
            else:
                # The example's loops start at connect: the first at spawn, the last now.
                first_end = spawned + load.steps * interval
                last_end = time.time() + load.steps * interval
            t0 = time.time() + 1.0
            t1 = min(t0 + load.window, first_end - 1.0)
            if end_jobs is None:
                # Jobs that end on their own: the window takes what is left, at least 1 s.
                t1 = max(t0 + 1.0, first_end - 1.0)
            if t1 - t0 < load.window * 0.75:
                log(f"{server.name}: window cut to {t1 - t0:.1f} s (set-up took long)")
            workers.send({"window": [t0, t1], "until": deadline - 30})
            prober = None
            if probe is not None:
                path, probe_headers = probe
                prober = Workers(
                    "http",
                    [{"port": server.port, "method": "GET", "path": path,
                      "headers": dict(probe_headers), "concurrency": PROBE_CONNECTIONS,
                      "interval": 1 / PROBE_RATE, "t0": t0, "t1": t1, "timeout": 10.0,
                      "deadline": t1 + 60}],
                )  # fmt: skip
            sleep_until(t0)
            start = meter.mark()
            side_marks = {name: one.mark() for name, one in side_meters.items()}
            spy = Profile(server.pid, f"{server.name}-{load.watchers}-r{load.rate:g}", t1 - t0)
            sleep_until(t1)
            end = meter.mark()
            side_cpu = {
                f"{name}_cpu": one.between(side_marks[name], one.mark())["cpu"]
                for name, one in side_meters.items()
            }
            row["profile"] = spy.finish()
            if prober is not None:
                with prober:
                    page = prober.wait("result", 30)[0]
                page_hist = Histogram()
                page_hist.merge(page["hist"])
                summary = page_hist.summary_ms()
                row |= {"page_p50_ms": summary["p50_ms"], "page_p99_ms": summary["p99_ms"],
                        "page_timeouts": page["timeouts"], "page_errors": page["errors"],
                        "probe_cpu": page["window_cpu"]}  # fmt: skip
            # Pollers of an overloaded server may never see the end: no long wait for them.
            grace = TERMINAL_GRACE if mode == "watch" else 3.0
            unended: set[str] = set()
            if end_jobs is not None:
                ending = time.time()
                unended = end_jobs(ids)
                row["jobs_end_s"] = round(time.time() - ending, 2)
                row["jobs_not_ended"] = len(unended)
                log(f"{server.name}: jobs ended in {row['jobs_end_s']} s ({len(unended)} not)")
                until = time.time() + grace
            else:
                # A saturated loop stretches every step's sleep: jobs with a span may
                # end well after the moment they were given (the watchers stop early
                # once every final state has come).
                until = max(time.time(), last_end) + grace + load.span
            workers.send({"until": until})
            results = workers.wait("result", until - time.time() + 60)
    finally:
        meter.close()
        for one in side_meters.values():
            one.close()
    row |= summarize(results, load, meter.between(start, end), poll_interval, *side_cpu.values())
    row |= side_cpu
    row["terminal_times"] = [one for result in results for one in result.get("terminal_times", [])]
    if end_jobs is not None:
        # A watcher without the terminal state of a job that had not ended is no loss.
        missing: dict[str, int] = {}
        for result in results:
            for job, count in result.get("missing", {}).items():
                missing[job] = missing.get(job, 0) + count
        row["watchers_of_unended_jobs"] = sum(missing.get(job, 0) for job in unended)
        row["terminal_lost"] = sum(count for job, count in missing.items() if job not in unended)
    row["other_load"] = round(max(0.0, row["other_load"] - row.get("probe_cpu", 0.0)), 2)
    return row


def summarize(
    results: list[dict[str, Any]],
    load: Load,
    server: dict[str, Any],
    poll_interval: float,
    *side_cpu: float,
) -> dict[str, Any]:
    """The row's figures; ``side_cpu``: cores of the server's other processes (not other load)."""
    hist = Histogram()
    for result in results:
        hist.merge(result["hist"])
    window_s = max(results[0]["window_s"], 1e-9)
    frames = sum(result["frames_window"] for result in results)
    connected = sum(result["connected"] for result in results)
    fps = frames / window_s
    expected = connected * load.rate
    clients = client_cpu(results)
    latency = hist.summary_ms()
    terminal = Histogram()
    for result in results:
        if "terminal_hist" in result:
            terminal.merge(result["terminal_hist"])
    row: dict[str, Any] = {
        "window_s": round(window_s, 2),
        "frames_per_s": round(fps, 1),
        "expected_per_s": round(expected, 1),
        "delivered_pct": round(100 * fps / expected, 1) if expected else None,
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "max_ms": latency["max_ms"],
        "terminal_lost": sum(result["terminal_lost"] for result in results),
        # Receive time minus the job's finished_at, for every final state published.
        "terminal_n": terminal.n,
        "terminal_p50_ms": _ms(terminal.percentile(50)),
        "terminal_p95_ms": _ms(terminal.percentile(95)),
        "terminal_p99_ms": _ms(terminal.percentile(99)),
        "terminal_max_ms": _ms(terminal.max if terminal.n else None),
        "duplicates": sum(result.get("duplicates", 0) for result in results),
        "closed_early": sum(result.get("closed_early", 0) for result in results),
        "errors": _sum_dicts(result.get("errors", {}) for result in results),
        "server_cpu": server["cpu"],
        "server_cpu_each": server["cpu_each"],
        "server_rss_mb": server["rss_mb"],
        "server_peak_rss_mb": server["peak_rss_mb"],
        "cpu_us_per_frame": round(server["cpu"] / fps * 1e6, 1) if fps else None,
        "cpu_ms_per_watcher_s": round(server["cpu"] * 1000 / connected, 4) if connected else None,
        "client_cpu_max": clients["cpu_max"],
        "client_cpu_each": clients["cpu_each"],
        "client_saturated": clients["saturated"],
        "machine_busy": server["machine_busy"],
        # Cores busy with neither the server nor these load generators: contention.
        "other_load": harness.other_load(server, *clients["cpu_each"], *side_cpu),
        "steal": server["steal"],
    }
    if "requests_window" in results[0]:
        requests = sum(result["requests_window"] for result in results)
        request_hist = Histogram()
        for result in results:
            request_hist.merge(result["request_hist"])
        row["requests_per_s"] = round(requests / window_s, 1)
        row["request_p99_ms"] = request_hist.summary_ms()["p99_ms"]
        row["poll_failed"] = sum(result["failed"] for result in results)
        row["missed_ticks"] = sum(result["missed_ticks"] for result in results)
        # CPU per request, and what one watcher polling every interval costs at that price.
        if requests:
            per_request = server["cpu"] * window_s / requests
            row["cpu_ms_per_request"] = round(per_request * 1000, 3)
            row["cpu_ms_per_watcher_s_at_rate"] = round(per_request * 1000 / poll_interval, 3)
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _sum_dicts(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in dicts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total


def our_starter(visitor: Visitor) -> JobStarter:
    """Start demo.timer jobs through the JSON API, as one visitor."""

    def start(count: int, end_at: float, interval: float) -> list[str]:
        def params() -> dict[str, Any]:
            steps = max(2, math.ceil((end_at - time.time()) / interval))
            return {"steps": steps, "interval": interval}

        return visitor.start_jobs(count, params)

    return start


def our_ender(server: Server, visitor: Visitor) -> JobEnder:
    """End jobs as their owner would: ``cancel`` over WebSockets, until each is seen ended.

    A socket handles its frames one at a time, and a cancel waits for database
    writes, so ENDERS sockets share the jobs. Each reads while it sends (its
    answers must not pile up unread) and waits for the terminal state of its
    jobs, which its cancels subscribed it to.
    """

    async def end_some(ids: list[str], pending: set[str], deadline: float) -> None:
        # A loaded Daphne drops handshakes its app takes over 5 s to accept: retry.
        while time.time() < deadline and set(ids) & pending:
            try:
                async with aconnect(
                    f"ws://{HOST}:{server.port}{WS_PATH}", additional_headers=visitor.ws_headers(),
                    open_timeout=30, max_size=2**20, compression=None,
                ) as ws:  # fmt: skip
                    for job_id in ids:
                        if job_id in pending:
                            await ws.send(json.dumps({"action": "cancel", "job": job_id}))
                    while set(ids) & pending:
                        text = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.time()))
                        frame = json.loads(text)
                        if frame.get("type") == "job" and frame["job"]["status"] in TERMINAL:
                            pending.discard(frame["job"]["id"])
            except (OSError, InvalidHandshake, ConnectionClosed):
                await asyncio.sleep(1.0)

    async def end_all(ids: list[str]) -> set[str]:
        pending = set(ids)
        deadline = time.time() + END_TIMEOUT
        shares = [ids[i::ENDERS] for i in range(min(ENDERS, len(ids)))]
        with contextlib.suppress(TimeoutError):
            await asyncio.gather(*(end_some(share, pending, deadline) for share in shares))
        return pending

    return lambda ids: asyncio.run(end_all(ids))


def our_visitor(server: Server) -> Visitor:
    visitor = Visitor(server.port)
    visitor.visit()
    return visitor
