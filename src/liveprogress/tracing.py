"""OpenTelemetry tracing: a span for each run of a job, a child of the request that
started it (docs/metrics.md#tracing).

A job runs later than the request that started it, and often in another process
(a task worker). So the request's trace context is written into the job's row
when the job is made (:func:`capture`, W3C ``traceparent`` headers through the
global propagator) and read back where it runs (:func:`job_span`). The span
carries the job's id, kind, attempt and the kind of its owner (never the
owner's key: it holds a session key or a user id), an event per stage entered,
the error a failed run raised, and how the run ended.

With opentelemetry-api installed, spans go wherever the site's SDK sends them
(none configured: the API's no-op, which costs next to nothing). Without it,
every hook here returns at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .models import Job
    from .progress import Progress

#: Whether opentelemetry-api is installed (the ``tracing`` extra): checked once. The
#: package first: find_spec of a submodule raises when its package is missing.
INSTALLED = (
    importlib.util.find_spec("opentelemetry") is not None
    and importlib.util.find_spec("opentelemetry.trace") is not None
)

#: The tracer's name, as a site's SDK sees it (instrumentation scope).
TRACER_NAME = "liveprogress"

# The span of each run under way in this process, by its Progress: a sync job's
# stages are entered in a thread that has not the run's context.
_spans: dict[Progress, Span] = {}


def capture() -> dict[str, str]:
    """The current trace context as headers (``traceparent``, ``tracestate``), to keep
    in ``Job.trace_context``; empty without opentelemetry or a current span."""
    if not INSTALLED:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def job_span(job: Job, progress: Progress) -> Iterator[None]:
    """A span around one run of ``job``, current while it runs (jobs it starts are its
    children), child of the context kept in ``job.trace_context``; it ends with the
    job's status as the run left it."""
    if not INSTALLED:
        yield
        return
    from opentelemetry import context, propagate, trace

    parent = propagate.extract(job.trace_context or {})
    attributes: dict[str, Any] = {
        "liveprogress.job.id": str(job.id),
        "liveprogress.job.kind": job.kind,
        "liveprogress.job.attempt": job.attempts,
        "liveprogress.job.owner_kind": job.owner.partition(":")[0],
    }
    if job.parent_id is not None:
        attributes["liveprogress.job.parent_id"] = str(job.parent_id)
    span = trace.get_tracer(TRACER_NAME).start_span(
        f"liveprogress.job {job.kind}", context=parent, attributes=attributes
    )
    token = context.attach(trace.set_span_in_context(span))
    _spans[progress] = span
    try:
        yield
    finally:
        del _spans[progress]
        context.detach(token)
        _end(span, job)


def _end(span: Span, job: Job) -> None:
    from opentelemetry.trace import StatusCode

    # A run given back to the queue for another attempt is still `queued`.
    ended = "retried" if job.status == "queued" else str(job.status)
    span.set_attribute("liveprogress.job.status", ended)
    if ended in ("failed", "interrupted", "retried"):
        span.set_status(StatusCode.ERROR, job.error or ended)
    span.end()


def record_error(progress: Progress, error: BaseException) -> None:
    """The error the run's function raised, on its span."""
    span = _spans.get(progress)
    if span is not None:
        span.record_exception(error)


def stage_started(progress: Progress, name: str) -> None:
    """An event on the run's span: the job entered the stage ``name``."""
    span = _spans.get(progress)
    if span is not None:
        span.add_event("liveprogress.stage", {"liveprogress.stage.name": name})
