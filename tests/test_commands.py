"""The ``runjob`` and ``watchjob`` commands, and the terminal bar they share.

Most tests call the commands in this process (``call_command``); what crosses
processes (a watcher of a job another process runs, Ctrl-C) runs ``manage.py``
for real on a SQLite file of its own. The failing kind is ``tests.fail`` from
``tests/jobs.py`` (a sync job raising ``ValueError("boom")``).
"""

from __future__ import annotations

import getpass
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.db import connections
from django.utils import timezone

from liveprogress.cli import TerminalBar
from liveprogress.models import Job, Status
from liveprogress.state import job_state
from tests.servers import REPO_ROOT, migrate, server_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast")]

#: The settings of the ``manage.py`` processes: short intervals, as in ``fast``.
PROCESS_SETTINGS = {"PUBLISH_INTERVAL": 0.02, "PERSIST_INTERVAL": 0.2, "HEARTBEAT_INTERVAL": 0.2}
#: Seconds a ``manage.py`` process, or a wait for what it writes, may take.
PROCESS_TIMEOUT = 30.0

TIMER = ["demo.timer", "--param", "steps=3", "--param", "interval=0.01"]


def run(*args: str) -> tuple[str, str]:
    """Call a command here; its stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def ended_job(status: Status, **fields: Any) -> Job:
    """A job row that some other process ran and ended."""
    now = timezone.now()
    values: dict[str, Any] = {
        "kind": "demo.timer",
        "owner": "session:someone-else",
        "status": status,
        "current": 4,
        "total": 4,
        "message": "Process completed!",
        "seq": 7,
        "started_at": now - timedelta(seconds=2),
        "updated_at": now,
        "finished_at": now,
        **fields,
    }
    return Job.objects.create(**values)


# -- runjob ------------------------------------------------------------------------


def test_runjob_runs_the_job_here_and_prints_its_result():
    out, err = run("runjob", *TIMER)

    job = Job.objects.get()
    assert out == 'succeeded: {"steps": 3}\n'
    assert f"demo.timer {job.id}\n" in err
    assert "3/3" in err
    assert "100%" in err
    assert (job.status, job.current, job.total) == (Status.SUCCEEDED, 3, 3)
    assert job.result == {"steps": 3}
    assert job.owner == f"cli:{getpass.getuser()}"


def test_runjob_json_prints_the_final_state():
    out, _ = run("runjob", *TIMER, "--json")

    state = json.loads(out)
    job = Job.objects.get()
    assert state["id"] == str(job.id)
    assert state["status"] == "succeeded"
    assert state["result"] == {"steps": 3}
    assert (state["current"], state["total"], state["percent"]) == (3, 3, 100.0)
    assert state["finished_at"] is not None


@pytest.mark.parametrize(
    ("language", "message"),
    [([], "¡Proceso completado!"), (["--language", "en"], "Process completed!")],
)
def test_runjob_writes_the_job_messages_in_its_language(language, message):
    out, err = run("runjob", *TIMER, *language, "--json")

    assert json.loads(out)["message"] == message
    assert message in err
    assert Job.objects.get().language == ("en" if language else "es")


def test_runjob_refuses_a_language_the_site_does_not_offer():
    with pytest.raises(CommandError, match="unsupported language 'fr', must be one of: es, en"):
        run("runjob", *TIMER, "--language", "fr")


@pytest.mark.parametrize(
    ("param", "detail"),
    [
        ("steps=0", "steps: Input should be greater than or equal to 1"),
        ("steps=abc", "steps: Input should be a valid integer"),
        ("unknown=1", "unknown: unknown parameter"),
    ],
)
def test_runjob_names_the_bad_param_and_starts_nothing(param, detail):
    with pytest.raises(CommandError, match=detail):
        run("runjob", "demo.timer", "--param", param)
    assert not Job.objects.exists()


def test_runjob_takes_params_as_strict_json():
    out, _ = run("runjob", "demo.timer", "--params", '{"steps": 2, "interval": 0}')
    assert out == 'succeeded: {"steps": 2}\n'

    with pytest.raises(CommandError, match="steps: Input should be a valid integer"):
        run("runjob", "demo.timer", "--params", '{"steps": "2"}')


@pytest.mark.parametrize(
    ("args", "detail"),
    [
        (["--param", "steps=2", "--params", "{}"], "use one"),
        (["--param", "steps=2", "--param", "steps=3"], "--param steps is given twice"),
        (["--param", "steps"], "expected NAME=VALUE, got 'steps'"),
        (["--params", "[2]"], "must be a JSON object"),
        (["--params", "{steps"], "not valid JSON"),
    ],
)
def test_runjob_rejects_malformed_params(args, detail):
    with pytest.raises(CommandError, match=detail):
        run("runjob", "demo.timer", *args)
    assert not Job.objects.exists()


def test_runjob_lists_the_kinds_when_the_kind_is_unknown():
    detail = r"Unknown job kind 'nope', must be one of: .*demo\.timer"
    with pytest.raises(CommandError, match=detail):
        run("runjob", "nope")


def test_runjob_as_a_user(django_user_model):
    user = django_user_model.objects.create_user("ana")
    run("runjob", *TIMER, "--user", "ana")
    assert Job.objects.get().owner == f"user:{user.pk}"

    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("runjob", *TIMER, "--user", "ghost")


def test_runjob_fails_with_the_job_error():
    with pytest.raises(CommandError, match="failed: boom") as raised:
        run("runjob", "tests.fail")

    job = Job.objects.get()
    assert raised.value.returncode == 1
    assert str(job.id) in str(raised.value)
    assert (job.status, job.error) == (Status.FAILED, "boom")


def test_runjob_off_the_main_thread_runs_without_a_ctrl_c_handler():
    outcome: list[tuple[str, str] | BaseException] = []

    def call() -> None:
        try:
            outcome.append(run("runjob", *TIMER))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(PROCESS_TIMEOUT)

    assert not thread.is_alive()
    assert isinstance(outcome[0], tuple), outcome
    assert outcome[0][0] == 'succeeded: {"steps": 3}\n'


def test_runjob_prints_log_lines_above_the_bar_and_the_stage_in_it():
    # tests.rich: stages Read, Work, Write; a warning every 5th row of its tracked loop.
    out, err = run("runjob", "tests.rich", "--param", "rows=20", "--param", "delay=0.01")

    assert out == 'succeeded: {"rows": 20}\n'
    logged = [line for line in err.replace("\r", "\n").split("\n") if line.startswith("[")]
    assert logged == [
        "[info] reading",
        "[warning] row 5 is <bad> & skipped",
        "[warning] row 10 is <bad> & skipped",
        "[warning] row 15 is <bad> & skipped",
        "[warning] row 20 is <bad> & skipped",
        "[info] written",
    ]
    # While it worked: the stage beside the status, and a rate of rows per second.
    working = [draw for draw in err.split("\r") if draw.startswith("running [Work]: ")]
    assert working, err
    assert any(re.search(r", [0-9.]+/s[],]", draw) for draw in working), working
    assert "succeeded: 100%" in err


# -- watchjob ----------------------------------------------------------------------


def test_watchjob_prints_an_ended_job_at_once():
    job = ended_job(Status.SUCCEEDED, result={"steps": 4})

    out, err = run("watchjob", str(job.id))

    assert out == 'succeeded: {"steps": 4}\n'
    assert f"demo.timer {job.id}\n" in err
    assert "4/4" in err

    out, _ = run("watchjob", str(job.id), "--json")
    assert json.loads(out) == json.loads(json.dumps(job_state(job)))


@pytest.mark.parametrize(
    ("status", "error", "detail"),
    [
        (Status.FAILED, "boom", "failed: boom"),
        (Status.CANCELLED, "", "cancelled"),
        (Status.INTERRUPTED, "The server stopped", "interrupted: The server stopped"),
    ],
)
def test_watchjob_fails_for_a_job_that_did_not_succeed(status, error, detail):
    job = ended_job(status, error=error)

    with pytest.raises(CommandError, match=detail) as raised:
        run("watchjob", str(job.id), "--json")
    assert raised.value.returncode == 1


def test_watchjob_unknown_and_malformed_ids():
    with pytest.raises(CommandError, match="No such job"):
        run("watchjob", str(uuid.uuid4()))
    with pytest.raises(CommandError, match="not a job id"):
        run("watchjob", "42")
    with pytest.raises(CommandError, match="must be a positive number of seconds"):
        run("watchjob", str(uuid.uuid4()), "--interval", "0")


def test_watchjob_ends_a_job_whose_process_died():
    long_ago = timezone.now() - timedelta(hours=1)
    job = ended_job(
        Status.RUNNING,
        finished_at=None,
        worker="gone.example:1:dead",
        heartbeat_at=long_ago,
        updated_at=long_ago,
    )

    with pytest.raises(CommandError, match="interrupted: The process running this job stopped"):
        run("watchjob", str(job.id))
    job.refresh_from_db()
    assert job.status == Status.INTERRUPTED


def test_watchjob_stops_watching_on_ctrl_c_and_leaves_the_job_be(monkeypatch):
    job = ended_job(
        Status.RUNNING,
        current=1,
        finished_at=None,
        message="working",
        eta_s=12.0,
        worker="elsewhere.example:1:alive",
        heartbeat_at=timezone.now(),
    )

    def ctrl_c(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("liveprogress.management.commands.watchjob.time.sleep", ctrl_c)
    err = StringIO()
    with pytest.raises(CommandError, match="Stopped watching") as raised:
        call_command("watchjob", str(job.id), stdout=StringIO(), stderr=err)

    assert raised.value.returncode == 130
    assert "running:  25%" in err.getvalue()
    assert "1/4 [00:02<00:12, working]" in err.getvalue()
    job.refresh_from_db()
    assert job.status == Status.RUNNING


# -- the bar -----------------------------------------------------------------------


def test_bar_counts_without_a_percent_while_the_total_is_unknown():
    now = timezone.now()
    job = Job(
        kind="demo.timer",
        status=Status.RUNNING,
        current=5,
        total=None,
        message="counting",
        started_at=now - timedelta(seconds=3),
        updated_at=now,
    )
    err = StringIO()
    bar = TerminalBar(OutputWrapper(err))

    bar.update(job_state(job))
    bar.close()

    drawn = err.getvalue()
    assert drawn.startswith(f"demo.timer {job.id}\n\r")
    assert drawn.endswith("\rrunning: 5 [00:03<?, counting]\n")
    assert "%" not in drawn


# -- without tqdm (it is the optional ``cli`` extra) -------------------------------


@pytest.fixture
def no_tqdm(monkeypatch):
    """tqdm made unimportable, as in an install without the ``cli`` extra."""
    monkeypatch.setitem(sys.modules, "tqdm", None)


def test_bar_prints_plain_lines_without_tqdm(no_tqdm):
    now = timezone.now()
    job = Job(
        kind="demo.timer",
        status=Status.RUNNING,
        current=1,
        total=4,
        message="working",
        started_at=now - timedelta(seconds=2),
        updated_at=now,
        eta_s=12,
    )
    err = StringIO()
    bar = TerminalBar(OutputWrapper(err))

    bar.update(job_state(job))
    bar.update(job_state(job))  # the same line: not printed again
    bar.log([{"level": "warning", "text": "row 2 skipped"}])
    job.status, job.current, job.message, job.finished_at = Status.SUCCEEDED, 4, "done", now
    bar.close(job_state(job))

    assert err.getvalue().split("\n") == [
        f"demo.timer {job.id}",
        "running:  25% 1/4 [00:02<00:12, working]",
        "[warning] row 2 skipped",
        "succeeded: 100% 4/4 [00:02, done]",
        "",
    ]


def test_bar_without_tqdm_prints_at_most_a_line_a_second_but_always_the_last(no_tqdm):
    job = Job(kind="demo.timer", status=Status.RUNNING, current=0, total=100)
    err = StringIO()
    bar = TerminalBar(OutputWrapper(err))

    for current in range(100):
        job.current = current
        bar.update(job_state(job))
    bar.close()

    lines = err.getvalue().splitlines()
    assert lines[1] == "running:   0% 0/100 [00:00<?]"
    assert lines[-1] == "running:  99% 99/100 [00:00<?]"
    assert len(lines) <= 4, lines


def test_runjob_and_watchjob_work_without_tqdm(no_tqdm):
    out, err = run("runjob", *TIMER)

    job = Job.objects.get()
    assert out == 'succeeded: {"steps": 3}\n'
    assert "\r" not in err
    assert err.splitlines()[0] == f"demo.timer {job.id}"
    assert err.splitlines()[-1].startswith("succeeded: 100% 3/3 [")

    out, err = run("watchjob", str(job.id))
    assert out == 'succeeded: {"steps": 3}\n'
    assert err.splitlines()[-1].startswith("succeeded: 100% 3/3 [")


# -- across processes --------------------------------------------------------------


def manage(*args: str, env: dict[str, str], **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def wait_for_job(db_file: Path, process: subprocess.Popen[str], status: str) -> str:
    """The id of the one job in ``db_file`` once it has ``status``; bounded."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(db_file, timeout=5)) as db:
            row = db.execute("SELECT id, status FROM liveprogress_job").fetchone()
        if row is not None and row[1] == status:
            return str(uuid.UUID(row[0]))
        if process.poll() is not None:
            pytest.fail(f"manage.py exited {process.returncode}: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"no job became {status} within {PROCESS_TIMEOUT}s")


def stored_status(db_file: Path, job_id: str) -> str:
    with closing(sqlite3.connect(db_file, timeout=5)) as db:
        query = "SELECT status FROM liveprogress_job WHERE id = ?"
        return db.execute(query, (uuid.UUID(job_id).hex,)).fetchone()[0]


@pytest.fixture
def process_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A migrated SQLite file of its own, and the environment of processes using it."""
    db_file = tmp_path / "db.sqlite3"
    env = server_env(db_file, liveprogress=PROCESS_SETTINGS)
    migrate(db_file, env)
    return db_file, env


def watchjob(job_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``manage.py watchjob JOB_ID`` in a process of its own, to its end."""
    return subprocess.run(
        [sys.executable, "manage.py", "watchjob", job_id, "--interval", "0.1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def test_watchjob_follows_a_job_that_another_process_runs(process_env):
    db_file, env = process_env
    # ~5 s of work: the watcher (a Django process of its own) starts well before its end,
    # even on a loaded machine.
    runner = manage(
        "runjob", "demo.timer", "--param", "steps=10", "--param", "interval=0.5", env=env
    )
    try:
        job_id = wait_for_job(db_file, runner, "running")
        watcher = watchjob(job_id, env)
        runner_out, runner_err = runner.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        runner.kill()
        runner.wait()

    assert runner.returncode == 0, runner_err
    assert runner_out == 'succeeded: {"steps": 10}\n'
    assert watcher.returncode == 0, watcher.stderr
    assert watcher.stdout == 'succeeded: {"steps": 10}\n'
    # It followed the job while it ran, then drew its end.
    assert "running: " in watcher.stderr
    assert "succeeded: 100%" in watcher.stderr


def test_ctrl_c_cancels_the_job_runjob_runs(process_env):
    db_file, env = process_env
    args = ["demo.timer", "--param", "steps=100", "--param", "interval=0.1", "--json"]
    runner = manage("runjob", *args, env=env)
    try:
        job_id = wait_for_job(db_file, runner, "running")
        runner.send_signal(signal.SIGINT)
        out, err = runner.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        runner.kill()
        runner.wait()

    assert runner.returncode == 1, err
    state = json.loads(out)
    assert (state["id"], state["status"]) == (job_id, "cancelled")
    assert state["current"] < 100
    assert f"Job {job_id} cancelled" in err
    assert stored_status(db_file, job_id) == "cancelled"


def test_watchjob_prints_the_log_lines_of_a_job_another_process_runs(tmp_path):
    db_file = tmp_path / "db.sqlite3"
    env = server_env(db_file, liveprogress={**PROCESS_SETTINGS, "JOB_MODULES": ["tests.jobs"]})
    migrate(db_file, env)
    # ~5 s of work: the watcher (a Django process of its own) starts well before its end,
    # even on a loaded machine.
    args = ["tests.rich", "--param", "rows=60", "--param", "delay=0.04", "--param", "bad_every=20"]
    runner = manage("runjob", *args, env=env)
    try:
        job_id = wait_for_job(db_file, runner, "running")
        watcher = watchjob(job_id, env)
        runner.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        runner.kill()
        runner.wait()

    assert runner.returncode == 0
    assert watcher.returncode == 0, watcher.stderr
    assert watcher.stdout == 'succeeded: {"rows": 60}\n'
    # Every stored line once, in order: those logged before it looked too.
    logged = [
        line for line in watcher.stderr.replace("\r", "\n").split("\n") if line.startswith("[")
    ]
    assert logged == [
        "[info] reading",
        "[warning] row 20 is <bad> & skipped",
        "[warning] row 40 is <bad> & skipped",
        "[warning] row 60 is <bad> & skipped",
        "[info] written",
    ]
    assert "running [Work]: " in watcher.stderr
