"""OpenTelemetry: a job's span is the child of the request that started it, with its
stages as events and its error recorded; without opentelemetry nothing is traced."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from liveprogress import actions, tracing
from liveprogress.models import Job

OWNER = "session:traced-visitor"
pytestmark = pytest.mark.asyncio

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    """The SDK with an in-memory exporter, as a site would configure it (the global
    provider can be set once per process: the exporter is shared, cleared per test)."""
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(sdk)
    if trace.get_tracer_provider() is not sdk:
        pytest.skip("another tracer provider is set in this process")
    return sdk


@pytest.fixture
def spans():
    _exporter.clear()
    yield _exporter
    _exporter.clear()


async def run(runtime, kind, params=None):
    job = await actions.start_job(OWNER, kind, params or {}, internal=True)
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 30)
    return await Job.objects.aget(pk=job.pk)


def job_spans(exporter, kind):
    return [
        span for span in exporter.get_finished_spans() if span.name == f"liveprogress.job {kind}"
    ]


async def test_a_failing_job_s_span_is_the_request_s_child_with_stages_and_error(
    runtime, spans, provider
):
    with provider.get_tracer("tests").start_as_current_span("POST /api/jobs/") as request:
        started = await actions.start_job(OWNER, "tests.fails_in_stage", {})
    await asyncio.wait_for(runtime.runner.wait(str(started.id)), 30)
    job = await Job.objects.aget(pk=started.pk)
    assert job.status == "failed"
    # What the row keeps is the request's W3C trace context.
    assert job.trace_context["traceparent"].split("-")[1:3] == [
        format(request.get_span_context().trace_id, "032x"),
        format(request.get_span_context().span_id, "016x"),
    ]

    (span,) = job_spans(spans, "tests.fails_in_stage")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context.trace_id == request.get_span_context().trace_id
    assert span.attributes["liveprogress.job.id"] == str(job.id)
    assert span.attributes["liveprogress.job.kind"] == "tests.fails_in_stage"
    assert span.attributes["liveprogress.job.attempt"] == 1
    assert span.attributes["liveprogress.job.owner_kind"] == "session"
    assert span.attributes["liveprogress.job.status"] == "failed"
    # The owner's key (a session key here) is never on the span.
    assert all("traced-visitor" not in str(value) for value in span.attributes.values())
    # Its stages in order (the sync function enters them in its own thread), then the error.
    stages = [
        event.attributes["liveprogress.stage.name"]
        for event in span.events
        if event.name == "liveprogress.stage"
    ]
    assert stages == ["First", "Second"]
    (error,) = [event for event in span.events if event.name == "exception"]
    assert error.attributes["exception.type"] == "ValueError"
    assert error.attributes["exception.message"] == "broken in the second stage"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "broken in the second stage"
    # The span ends once the run has ended and said so.
    assert span.end_time >= span.start_time


async def test_a_succeeding_job_s_span_has_no_error(runtime, spans):
    job = await run(runtime, "tests.rich", {"rows": 3, "delay": 0})
    assert job.status == "succeeded"
    (span,) = job_spans(spans, "tests.rich")
    assert span.attributes["liveprogress.job.status"] == "succeeded"
    assert span.status.status_code == StatusCode.UNSET
    assert [event.attributes["liveprogress.stage.name"] for event in span.events] == [
        "Read",
        "Work",
        "Write",
    ]
    # Started outside any span: a trace of its own.
    assert job.trace_context == {}
    assert span.parent is None


async def test_jobs_a_job_starts_are_children_of_its_span(runtime, spans):
    parent = await run(runtime, "tests.parent", {"children": 2, "steps": 1, "interval": 0})
    assert parent.status == "succeeded"
    (parent_span,) = job_spans(spans, "tests.parent")
    children = job_spans(spans, "demo.timer")
    assert len(children) == 2
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == parent_span.context.span_id
        assert child.attributes["liveprogress.job.parent_id"] == str(parent.id)


async def test_without_opentelemetry_nothing_is_kept_nor_traced(runtime, spans, monkeypatch):
    monkeypatch.setattr(tracing, "INSTALLED", False)
    with trace.get_tracer("tests").start_as_current_span("POST /api/jobs/"):
        job = await run(runtime, "tests.fails_in_stage")
    assert job.status == "failed"
    assert job.trace_context == {}
    assert job_spans(spans, "tests.fails_in_stage") == []


async def test_the_parent_is_read_from_the_row_as_another_process_would(
    runtime, spans, monkeypatch
):
    """The run's task starts with an empty context (the in-process runner's, a
    worker's): the parent can only come from ``job.trace_context``, here the
    headers a request in another process left."""
    remote = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    monkeypatch.setattr(tracing, "capture", lambda: dict(remote))
    job = await run(runtime, "demo.timer", {"steps": 1, "interval": 0})
    assert job.trace_context == remote
    (span,) = job_spans(spans, "demo.timer")
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
