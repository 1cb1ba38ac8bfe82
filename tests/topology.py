"""The scale-out topology for integration tests: Redis, PostgreSQL, workers.

Each test module gets its own Redis server (on a free port, so a test may
restart it) and its own PostgreSQL database on the machine's server, dropped
afterwards, or a PostgreSQL server of its own (``PostgresCluster``) when a test
stops and starts it; Daphne servers come from ``tests/servers.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.servers import HOST, REPO_ROOT, STOP_TIMEOUT, free_port

POSTGRES_ADMIN_URL = os.environ.get(
    "LIVEPROGRESS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class RedisServer:
    """A private redis-server on a free loopback port, keeping nothing on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection((HOST, self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None


class PostgresDatabase:
    """A database of its own on the machine's PostgreSQL, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"liveprogress_test_{uuid.uuid4().hex[:12]}"
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(sql)

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class PostgresCluster:
    """A PostgreSQL server of its own (``initdb``) on a free loopback port, with trust
    auth and nothing synced to disk, which a test may stop and start: never the
    machine's server, which others use.

    Its files are in a fresh folder under the system's temporary one (a socket's
    path must stay short); as root, the server runs as the ``postgres`` user, since
    PostgreSQL refuses to run as root. ``init()`` once, then ``start()``/``stop()``
    as often as wanted, ``destroy()`` at the end.
    """

    #: Seconds pg_ctl waits for the server to start or stop.
    PG_CTL_TIMEOUT = 60

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="lp-pg-"))
        self.data = self.directory / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.directory, self.user)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = found[-1].parent if found else Path(shutil.which("initdb") or "initdb").parent

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{name}"

    def _run(self, *command: str) -> None:
        done = subprocess.run(  # noqa: S603 (our own binaries and arguments)
            [str(self.bin / command[0]), *command[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=self.PG_CTL_TIMEOUT + 10,
            check=False,
        )
        if done.returncode != 0:
            log = self.directory / "server.log"
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"{command[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                + server_log[-4000:]
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={HOST} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "-t", str(self.PG_CTL_TIMEOUT), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server now ("fast": open connections are cut, as when it goes down)."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(self.PG_CTL_TIMEOUT),
            "stop",
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """A new database on this server; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


class Worker:
    """A task queue's worker process, run from the checkout with ``env``: by default
    ``manage.py db_worker`` (django-tasks-db's worker, running liveprogress jobs).

    It leads a process group of its own: :meth:`kill` is SIGKILL to the whole group
    and to the children that left it (RQ's work horse leads a group of its own), as
    when its machine dies; :meth:`stop` SIGTERM to the group (RQ's worker waits for
    its horse).
    """

    #: The command of django-tasks-db's worker.
    DB_WORKER = ("manage.py", "db_worker", "--interval", "0.1")

    def __init__(
        self, env: dict[str, str], log_path: Path, command: tuple[str, ...] = DB_WORKER
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.command = [sys.executable, *command]
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            strays = descendants(self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children left behind (a group that outlived its leader) go too.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def descendants(pid: int) -> list[int]:
    """The processes under ``pid``, at any depth, read from Linux's /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The fields after the command, which is in parentheses: state, parent.
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    waiting = [pid]
    while waiting:
        below = children.get(waiting.pop(), [])
        found += below
        waiting += below
    return found
