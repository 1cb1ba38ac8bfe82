"""What every scenario shares: servers, visitors, load-generator processes, meters, output.

- :class:`Server` runs one server process (ours under Daphne or Uvicorn, or one of
  the alternatives in ``bench/``) on a free port of 127.0.0.1 and stops it;
  :func:`asgi_server` runs any ASGI application under any of :data:`SERVER_KINDS`.
- :class:`Meter` samples a process's CPU and RSS with psutil, and the whole
  machine's CPU, so other load on the machine (contention) shows in the figures.
- :class:`Workers` runs load generators (``python -m bench.loadgen``) in their own
  processes; they talk JSON lines over stdin/stdout and report their own CPU.
- :class:`Histogram` merges latencies from many processes (1 % buckets).
- :func:`table` prints a scenario's figures; :func:`save` writes them as JSON.

Every wait here is bounded; every process started here is stopped here.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"
HOST = "127.0.0.1"
WS_PATH = "/ws/progress/"
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
#: Settings for our server in every scenario: caps high enough for the load.
SERVER_SETTINGS = {
    "MAX_ACTIVE_PER_OWNER": 5000,
    "MAX_ACTIVE_TOTAL": 5000,
    # The load comes from one address (loopback), as visitors who are not signed in.
    "MAX_ACTIVE_PER_ADDRESS": 5000,
    "ANONYMOUS_SHARE": 1,
    # The driver's own socket cancels every job at the end of a run, and watches them.
    "MAX_SUBSCRIPTIONS": 20000,
    "MAX_FRAMES_PER_SECOND": 20000,
    "FRAME_BURST": 20000,
}
#: The ASGI application of our server (``--asgi-app`` swaps in a prototype).
OUR_APP = "proyecto.asgi:application"
#: Seconds a server may take to answer after start.
START_TIMEOUT = 60.0
#: Seconds a server may take to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
#: A client process whose CPU use over the window is above this is saturated.
SATURATED = 0.90


# Every process started here, so none outlives the run, however it ends.
_CHILDREN: list[subprocess.Popen[Any]] = []


@atexit.register
def _kill_children() -> None:
    for process in _CHILDREN:
        if process.poll() is None:
            process.kill()


# -- the machine ------------------------------------------------------------------------


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    """The machine and stack the figures come from."""
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = [
        "Django", "channels", "daphne", "uvicorn", "websockets", "gunicorn", "Twisted",
        "autobahn", "psycopg", "psutil", "hypercorn", "granian", "uvloop", "httptools",
        "wsproto",
    ]  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in packages},
        "sqlite": __import__("sqlite3").sqlite_version,
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "commit": _git("rev-parse", "--short", "HEAD"),
        "package_changed_since_commit": bool(_git("status", "--porcelain", "src", "proyecto")),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes that each keep a core busy meanwhile: the shared machine
    other figures were taken on, made on purpose (``--other-load N``). Each row's
    *other load* column then counts them."""
    code = "import time\nwhile True: time.perf_counter()"
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# -- servers ----------------------------------------------------------------------------


class Server:
    """One server process on ``HOST:port``; a context manager that starts and stops it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        ready: str = "http",
        ready_path: str = "/",
        workdir: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(os.environ) | dict(env or {})
        self.env["PYTHONUNBUFFERED"] = "1"
        self.ready = ready
        self.ready_path = ready_path
        self.workdir = workdir or Path(tempfile.gettempdir())
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{name}-{port}.log"

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _CHILDREN.append(self.process)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} did not answer within {START_TIMEOUT} s")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            if self.ready == "tcp":
                with socket.create_connection((HOST, self.port), timeout=1):
                    return True
            connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                connection.request("GET", self.ready_path)
                connection.getresponse().read()
                return True
            finally:
                connection.close()
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        self.keep_log()

    def keep_log(self) -> None:
        """Keep the server's output in ``bench/results/logs/`` when it reported errors."""
        text = self.log_text()
        if "Traceback" in text or "ERROR" in text:
            LOGS.mkdir(parents=True, exist_ok=True)
            name = f"{self.name}-{self.port}" + (f"-{TAG}" if TAG else "")
            (LOGS / f"{name}.log").write_text(text)
            log(f"{self.name}: errors in its output, kept in {LOGS.relative_to(REPO)}/{name}.log")

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


def sqlite_url(workdir: Path, name: str = "bench") -> str:
    """A migrated SQLite database of its own: a copy of one migrated template per workdir."""
    template = workdir / "template.sqlite3"
    if not template.exists():
        migrate(f"sqlite:///{template}")
    path = workdir / f"{name}.sqlite3"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def server_env(database_url: str, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "proyecto.settings",
        "DATABASE_URL": database_url,
        "LIVEPROGRESS_SETTINGS_JSON": json.dumps(dict(SERVER_SETTINGS) | dict(settings or {})),
    }


def migrate(database_url: str) -> None:
    env = dict(os.environ) | server_env(database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO, env=env, check=True, timeout=300,
    )  # fmt: skip


#: The servers :func:`asgi_server` runs an app under (ours: :func:`our_server`; each
#: one's ceiling: :func:`bare_asgi_server`): kind -> its command line after
#: ``python -m`` (``{host}``, ``{port}`` and ``{app}`` filled in). No access log, as in
#: production. Uvicorn's ``auto`` loop and parser pick uvloop and httptools whenever
#: they are installed (the ``bench`` extra installs them), so every Uvicorn kind names
#: its own: ``uvicorn`` stays what it measured before, asyncio and h11.
SERVER_KINDS: dict[str, list[str]] = {
    "daphne": ["daphne", "-v", "0", "-b", "{host}", "-p", "{port}", "{app}"],
    # The websockets implementation gives backpressure.
    "uvicorn": ["uvicorn", "--ws", "websockets", "--loop", "asyncio", "--http", "h11",
                "--log-level", "warning", "--no-access-log", "--host", "{host}",
                "--port", "{port}", "{app}"],
    "uvicorn-wsproto": ["uvicorn", "--ws", "wsproto", "--loop", "asyncio", "--http", "h11",
                        "--log-level", "warning", "--no-access-log", "--host", "{host}",
                        "--port", "{port}", "{app}"],
    "uvicorn-fast": ["uvicorn", "--ws", "websockets", "--loop", "uvloop", "--http",
                     "httptools", "--log-level", "warning", "--no-access-log", "--host",
                     "{host}", "--port", "{port}", "{app}"],
    # websockets' newer sans-I/O implementation (the legacy one frames in Python).
    "uvicorn-sansio": ["uvicorn", "--ws", "websockets-sansio", "--loop", "uvloop", "--http",
                       "httptools", "--log-level", "warning", "--no-access-log", "--host",
                       "{host}", "--port", "{port}", "{app}"],
    # asyncio worker, WebSockets by wsproto; no access log unless --access-logfile.
    "hypercorn": ["hypercorn", "-b", "{host}:{port}", "--log-level", "warning", "{app}"],
    # One worker process (a child of Granian's own), one runtime thread, WebSockets on;
    # the loop it picks itself (``auto``: uvloop when installed) named here.
    "granian": ["granian", "--interface", "asgi", "--host", "{host}", "--port", "{port}",
                "--workers", "1", "--ws", "--loop", "uvloop", "--log-level", "warning",
                "--no-access-log", "{app}"],
}  # fmt: skip


def asgi_server(
    kind: str,
    app: str,
    workdir: Path,
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
) -> Server:
    """Any ASGI application (``module:attribute``) under one of :data:`SERVER_KINDS`."""
    if kind not in SERVER_KINDS:
        raise ValueError(f"Unknown server {kind!r}, must be one of: {', '.join(SERVER_KINDS)}")
    port = free_port()
    fill = {"host": HOST, "port": str(port), "app": app}
    argv = [sys.executable, "-m", *(part.format(**fill) for part in SERVER_KINDS[kind])]
    return Server(name, argv, port=port, env=env, ready_path=ready_path, workdir=workdir)


def our_server(
    kind: str, database_url: str, workdir: Path, settings: Mapping[str, Any] | None = None
) -> Server:
    """The demo site (``proyecto``) under one of :data:`SERVER_KINDS`, as a deployment runs it."""
    return asgi_server(
        kind, OUR_APP, workdir, name=f"ours-{kind}", env=server_env(database_url, settings),
        ready_path="/api/jobs/",
    )  # fmt: skip


#: The raw ASGI twin of the bare websockets server: each server kind's own ceiling.
BARE_ASGI_APP = "bench.bare_asgi:application"


def bare_asgi_server(kind: str, workdir: Path) -> Server:
    """``bench/bare_asgi.py`` under one of :data:`SERVER_KINDS` (no database)."""
    return asgi_server(kind, BARE_ASGI_APP, workdir, name=f"bare-asgi-{kind}", ready_path="/page")


def our_serve(
    procs: int, database_url: str, redis_url: str, workdir: Path,
    settings: Mapping[str, Any] | None = None,
) -> Server:  # fmt: skip
    """The demo site as ``make serve PROCS=procs`` runs it (scripts/serve: Uvicorn's
    ``--workers``, one port, the Redis layer at ``redis_url``)."""
    port = free_port()
    env = server_env(database_url, settings) | {
        "PY": sys.executable, "BIND": HOST, "PORT": str(port), "PROCS": str(procs),
        "REDIS_URL": redis_url,
    }  # fmt: skip
    return Server(
        f"serve-{procs}", ["bash", "scripts/serve"], port=port, env=env,
        ready_path="/api/jobs/", workdir=workdir,
    )  # fmt: skip


class Redis:
    """A private redis-server on a free port of ``HOST``, keeping nothing on disk; a
    context manager (its own process, so its CPU is measured apart from the machine's)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.server = Server(
            "redis", ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                      "--appendonly", "no", "--dir", str(workdir)],
            port=self.port, ready="tcp", workdir=workdir,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.server.pid

    def __enter__(self) -> Redis:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


#: Set by ``python -m bench --profile``: py-spy records the server during each window.
PROFILE = False
PROFILES = RESULTS / "profiles"
#: Set by ``python -m bench --tag NAME``: results and profiles get the suffix ``-NAME``.
TAG = ""


class Profile:
    """``py-spy record`` of a server process over a window (when ``PROFILE`` is on).

    The collapsed stacks go to ``bench/results/profiles/NAME.txt``; :meth:`finish`
    answers the functions with the most samples, own and inclusive, in percent.
    """

    def __init__(self, pid: int, name: str, seconds: float) -> None:
        self.path = PROFILES / (f"{name}-{TAG}.txt" if TAG else f"{name}.txt")
        self.process: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not PROFILE or not Path(spy).exists():
            return
        PROFILES.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
             "--rate", "100", "--format", "raw", "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _CHILDREN.append(self.process)

    def finish(self, n: int = 25) -> dict[str, Any] | None:
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.path.exists():
            return None
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
            total += int(count)

        def top(counts: dict[str, int]) -> list[tuple[str, float]]:
            ranked = sorted(counts.items(), key=lambda item: -item[1])[:n]
            return [(name, round(100 * count / max(total, 1), 1)) for name, count in ranked]

        return {
            "file": str(self.path.relative_to(REPO)),
            "samples": total,
            "own": top(own),
            "inclusive": top(inclusive),
        }


# -- visitors ---------------------------------------------------------------------------


class Visitor:
    """One browser session against our server: session + CSRF cookies, keep-alive HTTP."""

    def __init__(self, origin_port: int, timeout: float = 30.0) -> None:
        self.port = origin_port
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._local = threading.local()

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                HOST, self.port, timeout=self.timeout
            )
        return connection

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        all_headers = {"Accept": "application/json", **(headers or {})}
        if self.cookies:
            all_headers["Cookie"] = self.cookie_header
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, path, body=data, headers=all_headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def visit(self) -> None:
        status, _ = self.request("GET", "/progress/")
        if status != 200 or "sessionid" not in self.cookies:
            raise RuntimeError(f"GET /progress/ answered {status}, cookies {list(self.cookies)}")

    def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request(
            "POST", path, body,
            {"X-CSRFToken": self.cookies.get("csrftoken", ""),
             "Referer": self.origin + "/progress/", "Origin": self.origin},
        )  # fmt: skip

    def start_jobs(
        self,
        count: int,
        params: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        threads: int = 8,
    ) -> list[str]:
        """Start ``count`` demo.timer jobs through ``POST /api/jobs/``; their ids.

        ``params`` may be a function, called for each job as it is started.
        """

        def one(_: int) -> str:
            body = {"kind": "demo.timer", "params": dict(params() if callable(params) else params)}
            status, state = self.post_json("/api/jobs/", body)
            if status != 201:
                raise RuntimeError(f"POST /api/jobs/ answered {status}: {state}")
            return state["id"]

        pool = ThreadPoolExecutor(threads)
        try:
            return list(pool.map(one, range(count)))
        finally:
            pool.shutdown(cancel_futures=True)

    def ws_headers(self) -> dict[str, str]:
        return {"Cookie": self.cookie_header, "Origin": self.origin}


# -- meters -----------------------------------------------------------------------------


class Meter:
    """CPU and RSS of some processes, and of the whole machine, between two marks.

    A thread samples RSS every ``every`` seconds, so the peak between marks is known.
    """

    def __init__(self, pids: Iterable[int], every: float = 0.25) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.every = every
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        total = 0
        for process in self.processes:
            try:
                total += process.memory_info().rss
                total += sum(child.memory_info().rss for child in process.children(True))
            except psutil.Error:
                pass
        return total

    def _cpu(self) -> float:
        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
                for child in process.children(True):
                    ctimes = child.cpu_times()
                    total += ctimes.user + ctimes.system
            except psutil.Error:
                pass
        return total

    def _cpu_each(self) -> dict[int, float]:
        """CPU seconds of each process and each of its children, by pid."""
        each: dict[int, float] = {}
        for process in self.processes:
            try:
                for one in [process, *process.children(True)]:
                    times = one.cpu_times()
                    each[one.pid] = times.user + times.system
            except psutil.Error:
                pass
        return each

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_rss = max(self.peak_rss, self._rss())

    def mark(self) -> dict[str, Any]:
        machine_times = psutil.cpu_times()
        steal = getattr(machine_times, "steal", 0.0)
        idle = machine_times.idle + getattr(machine_times, "iowait", 0.0)
        self.peak_rss = max(self.peak_rss, rss := self._rss())
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "wall": time.time(),
            "cpu": self._cpu(),
            "cpu_each": self._cpu_each(),
            "busy": sum(machine_times) - idle - steal,
            "steal": steal,
            "softirq": getattr(machine_times, "softirq", 0.0),
            "driver": own.ru_utime + own.ru_stime,
            "rss": rss,
        }

    def between(self, start: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, Any]:
        """Cores used between two marks: by the processes, the machine, the driver.

        ``machine_busy`` leaves out ``steal`` (time the hypervisor gave to other
        machines), which is reported apart: both are contention the figures suffer.
        """
        wall = max(end["wall"] - start["wall"], 1e-9)

        def cores(key: str) -> float:
            return round((end[key] - start[key]) / wall, 3)

        # Cores of each process that used any (the server processes behind one port).
        each = [
            round((cpu - start["cpu_each"].get(pid, 0.0)) / wall, 3)
            for pid, cpu in end["cpu_each"].items()
        ]
        return {
            "seconds": round(wall, 2),
            "cpu": cores("cpu"),
            "cpu_each": sorted((x for x in each if x >= 0.01), reverse=True),
            "machine_busy": cores("busy"),
            "steal": cores("steal"),
            "softirq": cores("softirq"),
            "driver_cpu": cores("driver"),
            "rss_mb": round(end["rss"] / 2**20, 1),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


# -- latency ----------------------------------------------------------------------------


class Histogram:
    """Latencies in seconds, in buckets 1 % wide: mergeable across processes."""

    BASE = math.log(1.01)
    FLOOR = 1e-5

    def __init__(self, counts: Mapping[int | str, int] | None = None) -> None:
        self.counts: dict[int, int] = {int(k): v for k, v in (counts or {}).items()}
        self.n = sum(self.counts.values())
        self.max = 0.0

    def add(self, seconds: float) -> None:
        bucket = int(math.log(max(seconds, self.FLOOR)) / self.BASE)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Mapping[str, Any]) -> None:
        for key, count in other["counts"].items():
            self.counts[int(key)] = self.counts.get(int(key), 0) + count
        self.n += other["n"]
        self.max = max(self.max, other["max"])

    def percentile(self, q: float) -> float | None:
        if not self.n:
            return None
        rank = q / 100 * self.n
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(math.exp((bucket + 0.5) * self.BASE), self.max or math.inf)
        return self.max

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "n": self.n, "max": self.max}

    def summary_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        return {
            "n": self.n,
            "p50_ms": ms(self.percentile(50)),
            "p99_ms": ms(self.percentile(99)),
            "max_ms": ms(self.max if self.n else None),
        }


# -- load generators --------------------------------------------------------------------


class Workers:
    """Load-generator processes (``python -m bench.loadgen MODE CONFIG``), JSON lines both ways.

    Each prints events ``{"event": NAME, ...}``; :meth:`wait` collects one event of
    every worker, :meth:`send` writes a command to every worker's stdin.
    """

    def __init__(self, mode: str, configs: Sequence[Mapping[str, Any]]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.events: list[queue.Queue[dict[str, Any]]] = []
        self.stderr: list[list[str]] = []
        for config in configs:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", mode, json.dumps(config)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1,
            )  # fmt: skip
            _CHILDREN.append(process)
            events: queue.Queue[dict[str, Any]] = queue.Queue()
            errors: list[str] = []
            threading.Thread(target=self._read, args=(process, events), daemon=True).start()
            threading.Thread(
                target=lambda p=process, e=errors: e.extend(p.stderr), daemon=True
            ).start()
            self.processes.append(process)
            self.events.append(events)
            self.stderr.append(errors)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    @staticmethod
    def _read(process: subprocess.Popen[str], events: queue.Queue[dict[str, Any]]) -> None:
        for line in process.stdout or ():
            try:
                events.put(json.loads(line))
            except ValueError:
                continue
        events.put({"event": "exit", "code": process.wait()})

    def wait(self, name: str, timeout: float) -> list[dict[str, Any]]:
        """One ``name`` event from every worker; RuntimeError if one exits or times out."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        for index, events in enumerate(self.events):
            while True:
                try:
                    event = events.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError(
                        f"load generator {index} sent no {name!r} within {timeout:.0f} s"
                    ) from None
                if event.get("event") == name:
                    found.append(event)
                    break
                if event.get("event") == "exit":
                    time.sleep(0.2)
                    raise RuntimeError(
                        f"load generator {index} exited ({event['code']}) before {name!r}: "
                        + "".join(self.stderr[index])[-2000:]
                    )
        return found

    def send(self, command: Mapping[str, Any]) -> None:
        line = json.dumps(command) + "\n"
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write(line)
                    process.stdin.flush()
                except OSError:
                    pass

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def other_load(stats: Mapping[str, float], *accounted: float) -> float:
    """Cores busy with none of the measured processes (nor this driver): other work."""
    return round(max(0.0, stats["machine_busy"] - stats["cpu"] - stats["driver_cpu"]
                     - sum(accounted)), 2)  # fmt: skip


def client_cpu(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The load generators' own CPU over the window: the busiest one, and whether saturated."""
    shares = [result.get("window_cpu", 0.0) for result in results]
    busiest = max(shares, default=0.0)
    return {
        "processes": len(shares),
        "cpu_each": [round(share, 2) for share in shares],
        "cpu_max": round(busiest, 2),
        "saturated": busiest >= SATURATED,
    }


# -- output -----------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: ``columns`` are (key, heading) pairs."""
    cells = [[heading for _, heading in columns]]
    cells += [[fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for line in cells[1:]:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def save(name: str, data: Mapping[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}-{TAG}.json" if TAG else f"{name}.json")
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"  -> {path.relative_to(REPO)}", flush=True)
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours in (None, 0) or theirs is None:
        return None
    return round(theirs / ours, 3)


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    value = work()
    return value, time.monotonic() - started
