"""Prometheus metrics: scraped from two real server processes sharing one multiprocess
directory while jobs run, the numbers checked against what ran; who may read them;
the checks that name a broken setup."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
from typing import Any

import pytest
from django.core.checks import Error, Warning
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from liveprogress import checks, metrics
from liveprogress.outbox import Outbox
from tests.servers import (
    REPO_ROOT,
    DaphneServer,
    Visitor,
    frames_until,
    is_terminal,
    send_json,
    wait_for_http,
)

TOKEN = "scrape-me-3f9c1d0b7a2e4c58"  # noqa: S105 (the test servers' own)
SETTINGS = {
    "METRICS": True,
    "METRICS_TOKEN": TOKEN,
    "JOB_MODULES": ["tests.jobs"],
    "PUBLISH_INTERVAL": 0.05,
    "PERSIST_INTERVAL": 0.2,
}
LONG = {"kind": "demo.timer", "params": {"steps": 6000, "interval": 0.05}}
QUICK = {"kind": "demo.timer", "params": {"steps": 3, "interval": 0.01}}
WATCHED = {"kind": "demo.timer", "params": {"steps": 6, "interval": 0.05}}
FAILING = {"kind": "tests.fail"}
METRICS_PATH = "/liveprogress/metrics/"


def samples(text: str) -> list[Any]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0: none)."""
    return sum(
        sample.value
        for sample in samples(text)
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def scraped(server: DaphneServer) -> str:
    """The metrics body, read with the token."""
    visitor = Visitor(server)
    status, _ = visitor.get(METRICS_PATH, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, (status, visitor.last_text)
    assert visitor.last_headers["Content-Type"].startswith("text/plain")
    return visitor.last_text


def start(visitor: Visitor, body: dict[str, Any]) -> str:
    status, state = visitor.post_json("/api/jobs/", body)
    assert status == 201, state
    return state["id"]


def status_of(visitor: Visitor, job_id: str) -> str:
    status, state = visitor.get(f"/api/jobs/{job_id}/")
    assert status == 200, state
    return state["status"]


def wait_status(visitor: Visitor, job_ids: list[str], wanted: set[str], timeout: float = 30):
    wait_for_http(lambda: all(status_of(visitor, job) in wanted for job in job_ids), timeout)


def shell(server: DaphneServer, code: str) -> None:
    manage = [sys.executable, str(REPO_ROOT / "manage.py"), "shell", "-c", code]
    subprocess.run(manage, env=server.env, check=True, timeout=60, capture_output=True)


def sign_in(server: DaphneServer, username: str, *, staff: bool) -> Visitor:
    """A visitor signed in through the admin's login form as a new user (the admin
    lets only staff in: one who is not staff loses it once signed in, session kept)."""
    users = "from django.contrib.auth.models import User; User.objects"
    shell(server, f"{users}.create_user({username!r}, password='pw-Secret-1', is_staff=True)")
    visitor = Visitor(server)
    visitor.visit("/admin/login/")
    form = {
        "username": username,
        "password": "pw-Secret-1",
        "csrfmiddlewaretoken": visitor.cookie("csrftoken"),
    }
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Referer": server.url("/admin/login/"),
        "Origin": server.origin,
    }
    visitor.request("POST", "/admin/login/", urllib.parse.urlencode(form).encode(), headers)
    assert visitor.cookie("sessionid"), visitor.last_text[:500]
    if not staff:
        shell(server, f"{users}.filter(username={username!r}).update(is_staff=False)")
    return visitor


@pytest.mark.integration
def test_two_processes_scraped_while_jobs_run(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    db = tmp_path / "db.sqlite3"
    with (
        DaphneServer(db, env, liveprogress=SETTINGS) as one,
        DaphneServer(db, env, liveprogress=SETTINGS) as two,
    ):
        alice, bob = Visitor(one), Visitor(two)
        # Long runs (cancelled at the end), quick ones that succeed, and some that fail,
        # started through both processes.
        long_alice = [start(alice, LONG), start(alice, LONG)]
        long_bob = [start(bob, LONG)]
        quick_alice = [start(alice, QUICK) for _ in range(3)]
        failing_alice = [start(alice, FAILING) for _ in range(2)]
        quick_bob = [start(bob, QUICK)]
        failing_bob = [start(bob, FAILING)]
        wait_status(alice, quick_alice, {"succeeded"})
        wait_status(alice, failing_alice, {"failed"})
        wait_status(bob, quick_bob, {"succeeded"})
        wait_status(bob, failing_bob, {"failed"})
        wait_status(alice, long_alice, {"running"})
        wait_status(bob, long_bob, {"running"})

        # A socket on the first process follows a job to its end; the second
        # process's scrape sees it open (the gauge is summed over the processes).
        watched = start(alice, WATCHED)

        async def follow() -> list[Any]:
            async with alice.ws() as ws:
                await send_json(ws, {"action": "subscribe", "job": watched})
                open_now = scraped(two)
                assert value(open_now, "liveprogress_connections", transport="websocket") == 1
                return await frames_until(ws, lambda frame: is_terminal(frame, watched))

        received = asyncio.run(follow())
        # An event stream on the second process, to its end too.
        streamed = start(bob, WATCHED)
        with bob.events(f"/api/jobs/{streamed}/events/") as stream:
            events = stream.events_until(
                lambda event: (
                    event["event"] == "job" and event["data"]["job"]["status"] == "succeeded"
                )
            )
        wait_for_http(
            lambda: (
                value(scraped(one), "liveprogress_connections", transport="websocket") == 0
                and value(scraped(one), "liveprogress_connections", transport="sse") == 0
            )
        )
        # Each process writes its frames' numbers within metrics.FLUSH_S.
        wait_for_http(
            lambda: (
                value(scraped(one), "liveprogress_frames_sent_total", transport="websocket")
                >= len(received)
            )
        )
        time.sleep(metrics.FLUSH_S + 0.5)

        body = scraped(one)
        # From the database: what ran, whichever process ran it; the long runs are active.
        assert value(body, "liveprogress_jobs", kind="demo.timer", status="running") == 3
        assert value(body, "liveprogress_jobs", kind="demo.timer", status="queued") == 0
        assert value(body, "liveprogress_jobs", kind="demo.timer", status="succeeded") == 6
        assert value(body, "liveprogress_jobs", kind="tests.fail", status="failed") == 3
        assert value(body, "liveprogress_jobs", kind="tests.fail", status="succeeded") == 0
        # From the processes' files: one duration per job that ended, by how.
        count = "liveprogress_job_duration_seconds_count"
        assert value(body, count, kind="demo.timer", status="succeeded") == 6
        assert value(body, count, kind="tests.fail", status="failed") == 3
        assert value(body, count, kind="demo.timer", status="running") == 0
        assert value(body, "liveprogress_job_duration_seconds_sum", kind="demo.timer") > 0
        # Every frame the socket got was counted, and nothing else went out on a socket.
        assert value(body, "liveprogress_frames_sent_total", transport="websocket") == len(received)
        sse_frames = value(body, "liveprogress_frames_sent_total", transport="sse")
        assert len(events) <= sse_frames <= len(events) + 2
        # A lag per state sent live (the first answers come from the database: none).
        lags = value(body, "liveprogress_send_lag_seconds_count")
        assert 0 < lags <= len(received) + sse_frames
        assert value(body, "liveprogress_send_lag_seconds_bucket", le="+Inf") == lags
        assert 0 <= value(body, "liveprogress_send_lag_seconds_sum") < lags * 2.0
        # The long runs' progress went through the write-behind.
        assert value(body, "liveprogress_writebehind_batch_jobs_count") > 0
        assert value(body, "liveprogress_writebehind_batch_jobs_sum") >= value(
            body, "liveprogress_writebehind_batch_jobs_count"
        )
        # The other process answers the same numbers.
        other = scraped(two)
        for name, labels in [
            ("liveprogress_jobs", {"kind": "demo.timer", "status": "running"}),
            (count, {"kind": "demo.timer", "status": "succeeded"}),
            (count, {"kind": "tests.fail", "status": "failed"}),
            ("liveprogress_frames_sent_total", {"transport": "websocket"}),
        ]:
            assert value(other, name, **labels) == value(body, name, **labels), name

        # Who may read them: not a stranger, not a wrong token, not a user who is not
        # staff; the token and a staff session may.
        stranger = Visitor(one)
        status, error = stranger.get(METRICS_PATH)
        assert (status, error["code"]) == (401, "unauthorized")
        assert stranger.last_headers["WWW-Authenticate"].startswith("Bearer")
        status, error = stranger.get(METRICS_PATH, {"Authorization": "Bearer not-" + TOKEN})
        assert (status, error["code"]) == (401, "unauthorized")
        status, error = sign_in(one, "ana", staff=False).get(METRICS_PATH)
        assert (status, error["code"]) == (403, "forbidden")
        staff = sign_in(two, "root", staff=True)
        status, _ = staff.get(METRICS_PATH)
        assert status == 200
        assert "liveprogress_jobs{" in staff.last_text

        # Cancelled, the long runs end and are timed as cancelled.
        for visitor, job_ids in ((alice, long_alice), (bob, long_bob)):
            for job_id in job_ids:
                assert visitor.post_json(f"/api/jobs/{job_id}/cancel/")[0] in (200, 202)
            wait_status(visitor, job_ids, {"cancelled"})
        body = scraped(two)
        assert value(body, "liveprogress_jobs", kind="demo.timer", status="running") == 0
        assert value(body, count, kind="demo.timer", status="cancelled") == 3
        # Both processes wrote their own files in the shared directory.
        assert {path.name.rsplit("_", 1)[-1] for path in shared.glob("*.db")} >= {
            f"{one.pid}.db",
            f"{two.pid}.db",
        }


# -- in one process ---------------------------------------------------------------------


@pytest.fixture
def metrics_on(settings, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings.LIVEPROGRESS = {"METRICS": True, "METRICS_TOKEN": TOKEN}
    yield
    metrics.flush()


def test_a_socket_s_lags_batched_equal_one_observation_each(metrics_on):
    lags = [0.0, 0.0004, 0.001, 0.003, 0.04, 0.2, 0.7, 3.0, 9.0, 20.0]
    reference = Histogram(
        "reference", "", registry=CollectorRegistry(), buckets=metrics.LAG_BUCKETS
    )
    for lag in lags:
        reference.observe(lag)
    registry = metrics.series().registry
    before = {
        sample.labels.get("le"): sample.value
        for family in registry.collect()
        if family.name == "liveprogress_send_lag_seconds"
        for sample in family.samples
        if sample.name.endswith(("_bucket", "_count"))
    }
    meter = metrics.Meter("websocket")
    for lag in lags:
        meter.lag(lag)
    meter.flush()
    for sample in next(family for family in reference.collect()).samples:
        if sample.name.endswith(("_bucket", "_count")):
            le = sample.labels.get("le")
            name = "liveprogress_send_lag_seconds" + sample.name.removeprefix("reference")
            labels = {"le": le} if le else {}
            assert registry.get_sample_value(name, labels) - before[le] == sample.value, le


def test_off_nothing_is_counted(settings, monkeypatch):
    settings.LIVEPROGRESS = {}
    assert metrics.meter("websocket") is None
    settings.LIVEPROGRESS = {"METRICS": True}
    monkeypatch.setattr(metrics, "installed", lambda: False)
    assert metrics.meter("websocket") is None


@pytest.mark.django_db
def test_the_endpoint_is_not_there_unless_the_site_turned_it_on(client, settings):
    settings.LIVEPROGRESS = {"METRICS_TOKEN": TOKEN}
    response = client.get(METRICS_PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert "LIVEPROGRESS['METRICS']" in json.loads(response.content)["detail"]


@pytest.mark.django_db
def test_without_a_token_set_no_bearer_is_taken(client, settings, django_user_model):
    settings.LIVEPROGRESS = {"METRICS": True}
    response = client.get(METRICS_PATH, headers={"Authorization": "Bearer "})
    assert response.status_code == 401
    assert client.post(METRICS_PATH).status_code == 405
    client.force_login(django_user_model.objects.create_user("boss", is_staff=True))
    response = client.get(METRICS_PATH)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_on_without_prometheus_client_the_endpoint_names_the_fix(client, settings, monkeypatch):
    settings.LIVEPROGRESS = {"METRICS": True, "METRICS_TOKEN": TOKEN}
    monkeypatch.setattr(metrics, "installed", lambda: False)
    with pytest.raises(ImproperlyConfigured, match=r"django-liveprogress\[metrics\]"):
        client.get(METRICS_PATH, headers={"Authorization": f"Bearer {TOKEN}"})


def test_checks_name_a_broken_setup(settings, monkeypatch, tmp_path):
    settings.LIVEPROGRESS = {"METRICS": True}
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert checks.check_metrics() == []
    monkeypatch.setattr(metrics, "installed", lambda: False)
    (error,) = checks.check_metrics()
    assert isinstance(error, Error) and error.id == "liveprogress.E010"
    assert "django-liveprogress[metrics]" in error.hint
    monkeypatch.undo()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    (error,) = checks.check_metrics()
    assert error.id == "liveprogress.E011"
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    settings.LIVEPROGRESS = {"METRICS": True, "RUNNER": "tasks"}
    (warning,) = checks.check_metrics()
    assert isinstance(warning, Warning) and warning.id == "liveprogress.W012"
    settings.LIVEPROGRESS = {}
    assert checks.check_metrics() == []


def sample_value(name: str, **labels: str) -> float:
    metrics.flush()
    return metrics.series().registry.get_sample_value(name, labels) or 0.0


async def test_a_slow_socket_s_skipped_states_frames_and_lag_are_counted(metrics_on):
    """A socket still sending its first state gets three more: the middle two are
    replaced before they go (skipped), the newest goes; each frame sent is counted,
    each state sent live has its lag."""
    released = asyncio.Event()
    sent: list[str] = []

    async def slow_send(frame: str) -> None:
        await released.wait()
        sent.append(frame)

    before = {
        "frames": sample_value("liveprogress_frames_sent_total", transport="websocket"),
        "skipped": sample_value("liveprogress_states_skipped_total", transport="websocket"),
        "lags": sample_value("liveprogress_send_lag_seconds_count"),
        "open": sample_value("liveprogress_connections", transport="websocket"),
    }
    outbox = Outbox(slow_send)
    assert sample_value("liveprogress_connections", transport="websocket") == before["open"] + 1
    published = time.time()
    outbox.offer_state("job-1", 1, "state 1", published_at=published)
    # Its send under way (on Python 3.11 the flush starts at the loop's next turn,
    # on 3.12+ at once): what comes next waits behind it.
    await asyncio.sleep(0)
    for seq in (2, 3, 4):
        outbox.offer_state("job-1", seq, f"state {seq}", published_at=published)
    released.set()
    while outbox.busy:
        await asyncio.sleep(0.01)
    assert sent == ["state 1", "state 4"]
    outbox.close()
    frames = sample_value("liveprogress_frames_sent_total", transport="websocket")
    assert frames - before["frames"] == 2
    skipped = sample_value("liveprogress_states_skipped_total", transport="websocket")
    assert skipped - before["skipped"] == 2
    assert sample_value("liveprogress_send_lag_seconds_count") - before["lags"] == 2
    assert sample_value("liveprogress_connections", transport="websocket") == before["open"]
