"""A job's ETA before its first item: learned from its kind's past runs (robust to
an odd one), shown while it is queued and from its first running state, then
handed over to its own recent rate; each state says which it carries."""

from __future__ import annotations

import json

import pytest

from liveprogress import actions, eta
from liveprogress.eta import JobEta
from liveprogress.history import (
    RUNS_KEPT,
    KindHistory,
    Run,
    Sample,
    expected_seconds,
    of_kind,
    record,
)
from liveprogress.models import PastRun
from liveprogress.progress import ProgressSnapshot, Timings
from tests.jobs import collect
from tests.test_operations import ended

OWNER = "session:history"


def test_whole_runs_take_the_median_that_one_odd_run_does_not_move():
    runs = [Sample(1.0), Sample(1.1), Sample(0.9), Sample(10.0)]
    assert expected_seconds(runs) == pytest.approx(1.05)
    assert expected_seconds([]) is None


def test_runs_of_different_sizes_give_a_line_with_its_setup_time():
    # 2 s to set up, then 0.1 s a row; one run hit a locked table.
    runs = [Sample(2 + 0.1 * rows, rows) for rows in (10, 20, 40, 80)] + [Sample(60.0, 20)]
    assert expected_seconds(runs, 100) == pytest.approx(12.0)
    assert expected_seconds(runs, 10) == pytest.approx(3.0)
    # The size unknown (queued): a typical run.
    assert expected_seconds(runs) == pytest.approx(6.0)


def test_runs_all_of_one_size_scale_per_unit():
    runs = [Sample(5.0, 50), Sample(5.5, 50), Sample(50.0, 50)]
    assert expected_seconds(runs, 100) == pytest.approx(11.0)
    # Runs that counted nothing say nothing per unit: the median run.
    assert expected_seconds([Sample(3.0), Sample(4.0)], 100) == pytest.approx(3.5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_each_kind_and_stage_keeps_its_newest_runs(fast):
    from django.utils import timezone

    for index in range(RUNS_KEPT + 5):
        await record(
            Run("tests.kept", timezone.now(), float(index), index, (("Load", index / 2, None),))
        )
    assert await PastRun.objects.filter(kind="tests.kept").acount() == 2 * RUNS_KEPT
    history = await of_kind("tests.kept")
    # The newest 20 runs: 5..24.
    assert [sample.seconds for sample in history.runs[""]][-1] == 5.0
    assert history.expected("Load") == pytest.approx(14.5 / 2)
    assert history.last_stages == {"Load"}


def states_of(seen, job_id):
    return [
        json.loads(message["frame"])["job"]
        for message in seen.messages
        if message["job"] == str(job_id)
    ]


def took(job) -> float:
    return (job.finished_at - job.started_at).total_seconds()


@pytest.mark.asyncio
async def test_a_fourth_run_knows_its_time_before_its_first_item(runtime):
    # 0.3 s of setup before the first item, then 15 items in 1.5 s.
    params = {"warmup": 0.3, "steps": 15, "interval": 0.1}
    for _ in range(3):
        final = await ended((await actions.start_job(OWNER, "tests.paced", params)).id)
        assert final.status == "succeeded"
    async with collect(owner=OWNER) as seen:
        fourth = await actions.start_job(OWNER, "tests.paced", params)
        final = await ended(fourth.id)
    real = took(final)
    states = states_of(seen, fourth.id)
    queued = [state for state in states if state["status"] == "queued"]
    running = [state for state in states if state["status"] == "running"]
    # Queued: how long it should run, from past runs.
    assert queued[0]["eta_source"] == "history"
    assert queued[0]["eta_s"] == pytest.approx(real, rel=0.25)
    # Its first running state, before its first item: what is left by past runs.
    first = running[0]
    assert (first["current"], first["eta_source"]) == (0, "history")
    assert first["eta_s"] == pytest.approx(real, rel=0.25)
    # Then its rate comes in, blended: a run shorter than the rate's window keeps
    # leaning on past runs. Once blended, it never goes back.
    sources = [state["eta_source"] for state in running if state["eta_s"] is not None]
    assert sources[0] == "history"
    assert "blend" in sources
    assert set(sources[sources.index("blend") :]) == {"blend"}
    # Never a wild jump: each ETA is the one before it, counted down, within a
    # quarter of the run (the rate's first samples count its setup as slow going).
    timed = [(state["updated_at"], state["eta_s"]) for state in running if state["eta_s"]]
    for (before_at, before), (at, after) in zip(timed, timed[1:], strict=False):
        assert abs(after - (before - (at - before_at))) < 0.25 * real, timed
    # The ended state carries no ETA, nor its source.
    assert (states[-1]["eta_s"], states[-1]["eta_source"]) == (None, None)


@pytest.mark.asyncio
async def test_the_rate_takes_over_once_its_window_has_seen_enough(runtime, monkeypatch):
    # A window of 0.5 s: the handover a 10-s window makes over a long run.
    monkeypatch.setattr(eta, "ETA_WINDOW_S", 0.5)
    # Past runs twice as long as this one: on a loaded machine this run still never
    # outlasts what they expect (an overdue run drops their ETA, and the rate's
    # would then come first).
    slower = {"steps": 15, "interval": 0.2}
    await ended((await actions.start_job(OWNER, "tests.paced", slower)).id)
    async with collect(owner=OWNER) as seen:
        second = await actions.start_job(OWNER, "tests.paced", {"steps": 15, "interval": 0.1})
        await ended(second.id)
    running = [s for s in states_of(seen, second.id) if s["status"] == "running"]
    sources = [state["eta_source"] for state in running if state["eta_s"] is not None]
    assert sources[0] == "history"
    # In order, never back: history, then blend, then rate. (A loaded machine may
    # publish no state while the window fills, so blend may go unseen.)
    rank = {"history": 0, "blend": 1, "rate": 2}
    assert [rank[source] for source in sources] == sorted(rank[source] for source in sources)
    assert sources[-1] == "rate", sources


@pytest.mark.asyncio
async def test_one_run_ten_times_longer_barely_moves_the_estimate(runtime):
    short = {"steps": 3, "interval": 0.1}
    runs = [short, short, {"steps": 3, "interval": 1.0}, short]
    times = []
    for params in runs:
        times.append(took(await ended((await actions.start_job(OWNER, "tests.paced", params)).id)))
    assert times[2] > 8 * min(times)
    queued = await actions.start_job(OWNER, "tests.paced", short)
    assert queued.eta_source == "history"
    typical = sorted(times)[1]
    assert queued.eta_s == pytest.approx(typical, rel=0.25)
    # A mean would have said more than twice as long.
    assert sum(times) / len(times) > 2 * queued.eta_s
    await ended(queued.id)


@pytest.mark.asyncio
async def test_a_bigger_run_is_expected_to_take_longer_per_unit(runtime):
    for steps in (4, 8):
        await ended((await actions.start_job(OWNER, "tests.paced", {"steps": steps})).id)
    async with collect(owner=OWNER) as seen:
        bigger = await actions.start_job(OWNER, "tests.paced", {"steps": 16, "warmup": 0.3})
        final = await ended(bigger.id)
    counted = [
        state
        for state in states_of(seen, bigger.id)
        if state["status"] == "running" and state["total"] == 16
    ]
    first = counted[0]
    assert first["eta_source"] == "history"
    # What was left when it was said (a loaded machine may publish it a little late).
    left = took(final) - (first["updated_at"] - first["started_at"])
    assert first["eta_s"] == pytest.approx(left, rel=0.25)


@pytest.mark.asyncio
async def test_stages_are_learned_one_by_one(runtime):
    for _ in range(2):
        await ended((await actions.start_job(OWNER, "tests.staged", {})).id)
    history = await of_kind("tests.staged")
    assert history.expected("Fetch") == pytest.approx(0.4, rel=0.25)
    assert history.expected("Load") == pytest.approx(0.8, rel=0.25)
    async with collect(owner=OWNER) as seen:
        third = await actions.start_job(OWNER, "tests.staged", {})
        final = await ended(third.id)
    running = [s for s in states_of(seen, third.id) if s["status"] == "running" and s["eta_s"]]
    # In its first stage, before its first item, the second stage (not named yet by
    # this run) counts too.
    fetching = next(s for s in running if s["stages"] and s["stages"][0]["fraction"] == 0)
    assert fetching["eta_source"] == "history"
    assert fetching["eta_s"] == pytest.approx(took(final), rel=0.25)
    loading = next(
        s
        for s in running
        if len(s["stages"]) == 2
        and s["stages"][1]["status"] == "running"
        and s["eta_source"] == "history"
    )
    assert loading["eta_s"] == pytest.approx(0.8, rel=0.3)


def test_a_run_that_goes_on_from_an_earlier_attempt_expects_only_what_is_left():
    past = KindHistory({"": (Sample(10.0, 100), Sample(10.0, 100))})
    resumed = JobEta(past)
    # It went on from row 60 of 100, and has run for 1 s: 4 s left, not 9.
    at_sixty = ProgressSnapshot(current=60, total=100, message="")
    estimate = resumed.estimate(at_sixty, Timings(units=100), running_s=1.0)
    assert (estimate.eta_s, estimate.source) == (4.0, "history")
    # A fresh run 1 s in, still on its setup: a run less the time it has run.
    fresh = JobEta(past).estimate(ProgressSnapshot(0, 100, ""), Timings(units=100), 1.0)
    assert fresh.eta_s == 9.0
    # Past what its past runs expect: no ETA from them.
    late = JobEta(past).estimate(ProgressSnapshot(0, 100, ""), Timings(units=100), 11.0)
    assert (late.eta_s, late.source) == (None, "")
