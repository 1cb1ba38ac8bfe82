"""Timestamps through the path of final states, in the server: where their lag goes.

``python -m bench --only finale --asgi-app bench.finaltrace_app:application`` runs the
demo site with the library's fan-out path wrapped (nothing in ``src/`` changes):

- each job's ending: its function returned (``_finish`` called), the ending task
  running, the publish lock taken, ``finished_at``, the final write called,
  started and ended in the database thread, back on the loop, published
  (encoded and handed to the hub, which queues it in every outbox);
- each outbox queueing a final state (what was pending there, whether a frame
  was being sent) and each socket send of it (start, end: handed to the server);
- every ``sync_to_async`` call: what, on which thread, called / started / ended /
  back on the loop, so the database thread's queue is seen;
- the event loop: lateness of a 10 ms timer and the ready queue's length, sampled;
- frames handed to sockets, per 100 ms.

``GET /__finaltrace__`` answers all of it as JSON; :func:`analyze` joins it with
the watchers' receive times into the parts of each final state's lag. The
wrappers cost a few microseconds per frame; the runs say how much they moved.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

PATH = "/__finaltrace__"


def fetch(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", PATH)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)

    return {"n": len(ordered), "p50": pick(50), "p95": pick(95), "p99": pick(99),
            "max": round(1000 * ordered[-1], 1)}  # fmt: skip


def analyze(trace: dict[str, Any], received: list[list[Any]]) -> dict[str, Any]:
    """The parts of each final state's lag, in ms (p50/p95/p99/max over jobs or watchers).

    ``received``: (job id, finished_at, receive time) per watcher, from the load
    generators. Sends and receives of a job are paired in time order (the trace
    can't tell which client socket is which server socket).
    """
    jobs = {job: stamps for job, stamps in trace["jobs"].items() if "published" in stamps}
    sync_final = {
        row[0].split(":", 1)[1]: row for row in trace["sync"] if row[0].startswith("final:")
    }
    parts: dict[str, list[float]] = {
        name: []
        for name in (
            "returned_to_finish_running", "finish_running_to_locked", "locked_to_finished_at",
            "finished_at_to_write_call", "write_queue_wait", "write_execute", "write_back_on_loop",
            "written_to_publish", "publish_and_enqueue",
        )
    }  # fmt: skip
    for job, s in jobs.items():
        parts["returned_to_finish_running"].append(s["finish_running"] - s["returned"])
        parts["finish_running_to_locked"].append(s["locked"] - s["finish_running"])
        parts["locked_to_finished_at"].append(s["finished_at"] - s["locked"])
        parts["finished_at_to_write_call"].append(s["write"] - s["finished_at"])
        row = sync_final.get(job)
        if row is not None and row[4] is not None:
            parts["write_queue_wait"].append(row[4] - row[3])
            parts["write_execute"].append(row[5] - row[4])
            parts["write_back_on_loop"].append(s["written"] - row[5])
        parts["written_to_publish"].append(s["publish"] - s["written"])
        parts["publish_and_enqueue"].append(s["published"] - s["publish"])
    enqueued: dict[str, list[float]] = {}
    for job, _outbox, at, _pending, _sending, accepted in trace["enqueued"]:
        if accepted:
            enqueued.setdefault(job, []).append(at)
    sent: dict[str, list[tuple[float, float]]] = {}
    for job, _outbox, start, end in trace["sent"]:
        sent.setdefault(job, []).append((start, end))
    got: dict[str, list[float]] = {}
    for job, _finished, at in received:
        got.setdefault(job, []).append(at)
    watcher_parts: dict[str, list[float]] = {
        "enqueued_to_send_start": [], "send_call": [], "sent_to_received": [],
    }  # fmt: skip
    # Per outbox: the final state waited from its queueing to its send.
    by_outbox = {(row[0], row[1]): row[2] for row in trace["enqueued"] if row[5]}
    for job, _outbox, start, end in trace["sent"]:
        queued = by_outbox.get((job, _outbox))
        if queued is not None:
            watcher_parts["enqueued_to_send_start"].append(start - queued)
        watcher_parts["send_call"].append(end - start)
    for job, ends in sent.items():
        arrivals = sorted(got.get(job, []))
        for (_, end), arrival in zip(
            sorted(ends, key=lambda pair: pair[1]), arrivals, strict=False
        ):
            watcher_parts["sent_to_received"].append(arrival - end)
    total = [at - finished for _job_id, finished, at in received]
    finishes = [s["finished_at"] for s in jobs.values()]
    first = min(finishes) if finishes else 0.0
    last_arrival = max((at for *_, at in received), default=first)
    # The database thread around the ending: what it ran, from the first job's end
    # to the last final write's end.
    last_written = max((s["written"] for s in jobs.values()), default=first)
    busy: dict[str, dict[str, float]] = {}
    for label, name, _thread, _called, started, ended, _back in trace["sync"]:
        if started is None or ended is None or ended < first or started > last_written:
            continue
        kind = "final write" if label.startswith("final:") else name
        entry = busy.setdefault(kind, {"calls": 0, "ms": 0.0})
        entry["calls"] += 1
        entry["ms"] = round(entry["ms"] + 1000 * (ended - started), 1)
    threads = sorted({row[2] for row in trace["sync"] if row[0].startswith("final:")})
    loop_end = [row for row in trace["loop"] if first - 0.05 <= row[0] <= last_arrival]
    loop_before = [row for row in trace["loop"] if first - 3.0 <= row[0] < first - 0.5]
    queued_behind = [row[3] for row in trace["enqueued"] if row[5]]
    return {
        "jobs": len(jobs),
        "watchers": len(received),
        "ending_span_ms": round(1000 * (max(finishes) - first), 1) if finishes else None,
        "last_final_written_after_first_finish_ms": round(1000 * (last_written - first), 1),
        "last_received_after_first_finish_ms": round(1000 * (last_arrival - first), 1),
        "total": _pcts(total),
        "job_parts": {name: _pcts(values) for name, values in parts.items()},
        "watcher_parts": {name: _pcts(values) for name, values in watcher_parts.items()},
        "pending_in_outbox_when_final_queued": _pcts([n / 1000 for n in queued_behind]),
        "sending_when_final_queued": sum(1 for row in trace["enqueued"] if row[4] and row[5]),
        "db_thread_during_ending": busy,
        "final_write_threads": threads,
        "loop_lateness_steady": _pcts([row[1] for row in loop_before]),
        "loop_lateness_ending": _pcts([row[1] for row in loop_end]),
        "loop_ready_ending_max": max((row[2] for row in loop_end), default=None),
        "loop_ready_steady_max": max((row[2] for row in loop_before), default=None),
    }
