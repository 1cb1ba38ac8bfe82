"""Property-based fuzzing (hypothesis) of the WebSocket and the JSON API.

Whatever a client sends, it gets the documented kinds of answer and nothing
else: states, acks and listings of its own jobs only, or an error frame whose
code is one of the five docs/protocol.md lists. The socket keeps serving, no consumer
task dies, and the jobs of someone else stay exactly as they were, row for row.

Everything goes through the demo site's real stack: ``proyecto.asgi.application``
(origin check, session, auth) for the socket, ``AsyncClient`` with CSRF enforced
and a real session for the API. Hypothesis drives async tests through
pytest-asyncio, on the loop of the ``runtime`` fixture; the fixtures (runtime,
victims) are shared by all the examples of a test on purpose, hence the
suppressed ``function_scoped_fixture`` health check. ``database=None``: failing
examples are not saved between runs (hypothesis still keeps caches in a
``.hypothesis/`` directory that ignores itself for git).

The bugs this found stay as regression tests at the end. The fuzz leaves out
only multipart bodies (they have their own test there); lone surrogates go
everywhere, and the check that answers are strict UTF-8 is its own test's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import hypothesis
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from liveprogress import actions
from liveprogress.models import Job
from tests.conftest import FAST
from tests.test_api import visit
from tests.test_consumers import connect, new_session

# Small frames, so that too_large and deep nesting past the parser's recursion
# limit are both cheap to reach.
MAX_BYTES = 4096

CODES = {"bad_request", "not_found", "forbidden", "limit", "too_large"}
# The HTTP status of each error code (docs/protocol.md, "Errors"); 405 is a bad_request too.
STATUS_OF_CODE = {
    "bad_request": {400, 405},
    "forbidden": {403},
    "not_found": {404},
    "too_large": {413},
    "limit": {429},
}
STATE_KEYS = {
    "attempt",
    "max_attempts",
    "retry_at",
    "run_after",
    "queue_position",
    "resumed_from",
    "pause_requested",
    "paused_at",
    "id",
    "kind",
    "status",
    "current",
    "total",
    "percent",
    "progress",
    "message",
    "seq",
    "eta_s",
    "eta_source",
    "starts_in_s",
    "rate",
    "stages",
    "log_seq",
    "log_dropped",
    "result",
    "files",
    "expires_at",
    "expired",
    "parent",
    "error",
    "cancel_requested",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
}
STATUSES = {"queued", "running", "paused", "succeeded", "failed", "cancelled", "interrupted"}
ACTIONS = ("subscribe", "unsubscribe", "cancel", "start", "watch_mine")

FUZZ = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.fixture
def fast(settings):
    """FAST, with no heartbeat writes nor sweeps during a test (the victims' rows
    must stay identical to the byte) and small frames."""
    settings.LIVEPROGRESS = {
        **FAST,
        "HEARTBEAT_INTERVAL": 600.0,
        "STALE_AFTER": 3600.0,
        "MAX_FRAME_BYTES": MAX_BYTES,
    }
    return settings.LIVEPROGRESS


# -- the jobs of someone else --------------------------------------------------------------


@dataclass
class Victim:
    owner: str
    ids: list[str]

    async def rows(self) -> list[dict[str, Any]]:
        """Every field of every row of the victim, to compare before and after."""
        return [row async for row in Job.objects.filter(owner=self.owner).order_by("id").values()]


async def settled(runtime, job: Job, timeout: float = 5) -> None:
    """Wait until a job running here has written everything it published: its row is still."""
    execution = runtime.runner.executions[str(job.id)]
    async with asyncio.timeout(timeout):
        while True:
            row = await Job.objects.aget(pk=job.pk)
            if row.status == "running" and row.seq == execution.job.seq:
                await asyncio.sleep(0.05)
                if (await Job.objects.aget(pk=job.pk)).seq == row.seq:
                    return
            await asyncio.sleep(0.02)


@pytest.fixture
async def victim(runtime) -> Victim:
    """Four jobs of another visitor, in every state a stranger could try to touch:
    running in this process (idle for a minute), queued and unclaimed, running in
    another process, ended."""
    owner = f"session:{await new_session()}"
    running = await actions.start_job(owner, "demo.timer", {"steps": 2, "interval": 60.0})
    await settled(runtime, running)
    now = timezone.now()
    # Handed over (dispatched_at set) and never claimed: no dispatch loop starts it.
    queued = await Job.objects.acreate(
        kind="demo.timer",
        owner=owner,
        params={"steps": 3, "interval": 1.0},
        seq=1,
        dispatched_at=now,
    )
    elsewhere = await Job.objects.acreate(
        kind="demo.timer",
        owner=owner,
        params={"steps": 10, "interval": 1.0},
        status="running",
        seq=9,
        current=4,
        total=10,
        message="Progreso: 40%",
        worker="elsewhere:1:boot",
        heartbeat_at=now,
        started_at=now - timedelta(seconds=4),
    )
    ended = await Job.objects.acreate(
        kind="demo.timer",
        owner=owner,
        params={"steps": 2, "interval": 0.0},
        status="succeeded",
        seq=12,
        current=2,
        total=2,
        result={"steps": 2},
        message="¡Proceso completado!",
        started_at=now,
        finished_at=now,
    )
    return Victim(owner, [str(job.id) for job in (running, queued, elsewhere, ended)])


@dataclass
class Fuzzer:
    key: str
    owner: str
    mine: str


@pytest.fixture
async def fuzzer(runtime) -> Fuzzer:
    """The visitor who sends the frames, with one ended job of its own."""
    key = await new_session()
    owner = f"session:{key}"
    now = timezone.now()
    mine = await Job.objects.acreate(
        kind="demo.timer",
        owner=owner,
        status="succeeded",
        seq=7,
        current=1,
        total=1,
        result={"steps": 1},
        started_at=now,
        finished_at=now,
    )
    return Fuzzer(key, owner, str(mine.id))


# -- strategies ----------------------------------------------------------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=30)
BIG_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**300])
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), BIG_INTS, FLOATS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def spellings(job_id: str) -> list[str]:
    """Ways of writing one UUID that ``uuid.UUID`` reads as the same id."""
    hex_ = uuid.UUID(job_id).hex
    return [
        job_id,
        job_id.upper(),
        "{" + job_id + "}",
        "urn:uuid:" + job_id,
        hex_,
        hex_.upper(),
        "uuid:" + hex_,
        "-".join(hex_[i : i + 4] for i in range(0, 32, 4)),
    ]


def good_ids(victim: Victim, fuzzer: Fuzzer) -> st.SearchStrategy[str]:
    """Ids a request could name: random, the victim's, the fuzzer's own, in any spelling."""
    foreign = [spelling for job_id in victim.ids for spelling in spellings(job_id)]
    return st.one_of(
        st.uuids().map(str), st.sampled_from(foreign), st.sampled_from(spellings(fuzzer.mine))
    )


def job_ids(victim: Victim, fuzzer: Fuzzer) -> st.SearchStrategy[Any]:
    return st.one_of(good_ids(victim, fuzzer), good_ids(victim, fuzzer), TEXT, VALUES)


GOOD_AFTER = st.one_of(st.integers(0, 40), BIG_INTS.filter(lambda n: n >= 0))
AFTER = st.one_of(
    st.integers(-3, 40),
    BIG_INTS,
    st.booleans(),
    FLOATS,
    st.text("0123456789", min_size=1, max_size=5),
    VALUES,
)
KINDS = st.one_of(
    st.sampled_from(["demo.timer", "", "demo.timer ", "DEMO.TIMER", "demo", "demo.timer\x00"]),
    TEXT,
    VALUES,
)
FORGED = ("owner", "user", "session", "user_id")


def params(victim: Victim) -> st.SearchStrategy[Any]:
    """Valid parameters (short jobs) and every wrong type and name, owner and user
    fields forged as the victim's included."""
    forged = st.sampled_from([victim.owner, "user:1", 1, {"id": 1}])
    valid = st.fixed_dictionaries(
        {}, optional={"steps": st.integers(1, 3), "interval": st.floats(0, 0.02)}
    )
    named = st.fixed_dictionaries(
        {},
        optional={
            "steps": st.one_of(st.integers(), BIG_INTS, VALUES),
            "interval": st.one_of(FLOATS, VALUES),
            "owner": forged,
            "user": forged,
        },
    )
    return st.one_of(valid, valid, named, st.dictionaries(TEXT, VALUES, max_size=3), VALUES)


def requests(victim: Victim, fuzzer: Fuzzer) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed requests of every action, with forged owner fields on top."""
    ids = good_ids(victim, fuzzer)
    forged = st.dictionaries(
        st.sampled_from(FORGED), st.sampled_from([victim.owner, "user:1", 1]), max_size=2
    )

    def request(action: str, fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return {**extra, "action": action, **fields}

    return st.one_of(
        st.builds(
            request,
            st.just("subscribe"),
            st.fixed_dictionaries({"job": ids}, optional={"after": GOOD_AFTER}),
            forged,
        ),
        st.builds(
            request,
            st.sampled_from(["unsubscribe", "cancel"]),
            st.fixed_dictionaries({"job": ids}),
            forged,
        ),
        st.builds(
            request,
            st.just("start"),
            st.fixed_dictionaries(
                {"kind": st.just("demo.timer")},
                optional={"params": params(victim)},
            ),
            forged,
        ),
        st.builds(request, st.just("watch_mine"), st.just({}), forged),
    )


def frames(victim: Victim, fuzzer: Fuzzer) -> st.SearchStrategy[Any]:
    """Frames as JSON values: requests, requests with one field missing, mistyped,
    huge or forged, objects of anything, and values that are not objects."""
    fields = {
        "job": job_ids(victim, fuzzer),
        "after": AFTER,
        "kind": KINDS,
        "params": params(victim),
    }

    def mutate(request: dict[str, Any], field: str, value: Any, drop: bool) -> dict[str, Any]:
        changed = dict(request)
        if drop:
            changed.pop(field, None)
        else:
            changed[field] = value
        return changed

    well_formed = requests(victim, fuzzer)
    mutated = st.builds(
        mutate,
        well_formed,
        st.sampled_from(["action", *fields]),
        st.one_of(VALUES, st.sampled_from(["Subscribe", "subscribe ", "ACTIONS", "__init__"])),
        st.booleans(),
    )
    loose = st.fixed_dictionaries(
        {}, optional={"action": st.one_of(st.sampled_from(ACTIONS), TEXT, VALUES), **fields}
    )
    return st.one_of(*[well_formed] * 3, mutated, mutated, loose, VALUES)


def deep(depth: int, kind: str) -> str:
    if kind == "lists":
        return "[" * depth + "]" * depth
    if kind == "objects":
        return '{"a":' * depth + "1" + "}" * depth
    # A request whose job field is deeply nested: it parses, and is refused.
    return '{"action":"subscribe","job":' + "[" * depth + "]" * depth + "}"


def raw_texts(victim: Victim) -> st.SearchStrategy[str]:
    """Text frames that are not JSON, not objects, at the size limit or past it."""
    request = json.dumps({"action": "subscribe", "job": victim.ids[0]})
    return st.one_of(
        st.text(st.one_of(st.characters(), SURROGATES), max_size=200),
        st.sampled_from(
            [
                "",
                " ",
                "null",
                "[]",
                "1e400",
                "-0",
                '"subscribe"',
                '{"action": NaN}',
                '{"action": "subscribe", "job": Infinity}',
                '{"action": "watch_mine"',
                "{'action': 'watch_mine'}",
                '{"action": "watch_mine"}\x00',
                '\ufeff{"action": "watch_mine"}',
                '{"action": "subscribe", "action": "watch_mine"}',
                request[:-1],
                request + request,
            ]
        ),
        st.builds(deep, st.integers(1, 2000), st.sampled_from(["lists", "objects", "job"])),
        # At the limit (accepted: it is a frame to answer) and one byte past it.
        st.sampled_from([MAX_BYTES, MAX_BYTES + 1, 3 * MAX_BYTES]).map(padded),
        # Fewer characters than the limit, more bytes: the limit is in bytes.
        st.just(padded(MAX_BYTES + 2, "é")),
    )


def padded(size: int, pad: str = "x") -> str:
    """A watch_mine frame of ``size`` bytes in UTF-8."""
    empty = '{"action":"watch_mine","pad":""}'
    text = empty[:-2] + pad * ((size - len(empty)) // len(pad.encode())) + empty[-2:]
    assert len(text.encode()) == size
    return text


def messages(victim: Victim, fuzzer: Fuzzer) -> st.SearchStrategy[tuple[str, Any]]:
    """What the transport may carry: text (JSON or not) or binary frames."""
    encoded = st.builds(
        lambda frame, ascii_only: json.dumps(frame, ensure_ascii=ascii_only),
        frames(victim, fuzzer),
        st.booleans(),
    )
    return st.one_of(
        *[st.tuples(st.just("text"), encoded)] * 4,
        st.tuples(st.just("text"), raw_texts(victim)),
        st.tuples(st.just("bytes"), st.binary(max_size=64)),
    )


# -- talking to the socket -------------------------------------------------------------------


async def send_raw(ws, kind: str, payload: Any) -> None:
    # send_input, not send_to: empty frames are frames too.
    key = "text" if kind == "text" else "bytes"
    await ws.send_input({"type": "websocket.receive", key: payload})


async def answers_until_probe(ws, timeout: float = 5) -> list[tuple[str, dict[str, Any]]]:
    """Send a probe (subscribe to a fresh random id), return every frame before its answer."""
    probe = str(uuid.uuid4())
    await ws.send_json_to({"action": "subscribe", "job": probe})
    got = []
    async with asyncio.timeout(timeout):
        while True:
            text = await ws.receive_from(timeout)
            frame = json.loads(text)
            if frame.get("type") == "error" and frame.get("job") == probe:
                assert frame == {
                    "type": "error",
                    "code": "not_found",
                    "detail": "No such job",
                    "field": "job",
                    "job": probe,
                }
                return got
            got.append((text, frame))


def sent_job(kind: str, payload: Any) -> Any:
    """The ``job`` field of a frame as the server may echo it, or None."""
    if kind != "text" or len(payload.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None
    try:
        frame = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    job = frame.get("job") if isinstance(frame, dict) else None
    return job if isinstance(job, str) and len(job) <= 64 else None


def check_state(state: Any) -> str:
    assert isinstance(state, dict) and set(state) == STATE_KEYS, state
    assert state["status"] in STATUSES
    assert type(state["seq"]) is int and state["seq"] >= 1
    assert type(state["progress"]) is int and 0 <= state["progress"] <= 100
    uuid.UUID(state["id"])
    return state["id"]


def check_answer(text: str, frame: Any, echo: Any, ids: set[str]) -> None:
    """One server frame is of a documented kind; job ids it names go to ``ids``."""
    # Lone surrogates can only stand as escapes (test_answers_are_valid_utf8 pins that).
    text.encode("utf-8", "surrogatepass")
    assert isinstance(frame, dict), frame
    kind = frame.get("type")
    if kind == "job":
        assert set(frame) == {"type", "job"}, frame
        ids.add(check_state(frame["job"]))
    elif kind == "watching":
        assert set(frame) == {"type", "jobs"}, frame
        ids.update(check_state(state) for state in frame["jobs"])
    elif kind == "subscribed":
        assert set(frame) == {"type", "job", "seq"}, frame
        assert type(frame["seq"]) is int
        ids.add(str(uuid.UUID(frame["job"])))
    elif kind == "unsubscribed":
        assert set(frame) == {"type", "job"}, frame
        assert frame["job"] == str(uuid.UUID(frame["job"])), frame
    elif kind == "error":
        assert set(frame) <= {"type", "code", "detail", "field", "job"}, frame
        assert frame["code"] in CODES, frame
        assert isinstance(frame["detail"], str) and frame["detail"], frame
        assert isinstance(frame.get("field", ""), str), frame
        if "job" in frame:
            # It may echo the id the request named, and nothing else.
            assert frame["job"] == echo, (frame, echo)
    else:
        raise AssertionError(f"undocumented frame {frame!r}")


async def assert_owned_by(owner: str, ids: set[str]) -> None:
    found = {str(pk) async for pk in Job.objects.filter(pk__in=ids).values_list("pk", flat=True)}
    assert found == ids, f"states of jobs that do not exist: {ids - found}"
    foreign = [pk async for pk in Job.objects.filter(pk__in=ids).exclude(owner=owner).values("pk")]
    assert not foreign, f"states of someone else's jobs reached the socket: {foreign}"


def assert_hub_clean(hub) -> None:
    """Nobody watches anything: the sockets of the test are all closed."""
    assert hub._job_watchers == {}, hub._job_watchers
    assert hub._owner_watchers == {}, hub._owner_watchers
    assert hub._latest == {}, hub._latest


def liveprogress_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("liveprogress") and record.levelno >= logging.WARNING
    ]


# -- the socket --------------------------------------------------------------------------------


@hypothesis.settings(max_examples=60, **FUZZ)
@given(data=st.data())
async def test_every_frame_gets_documented_answers_and_touches_no_foreign_job(
    runtime, victim, fuzzer, caplog, data
):
    sent = data.draw(st.lists(messages(victim, fuzzer), min_size=1, max_size=8), label="frames")
    before = await victim.rows()
    caplog.clear()
    ids: set[str] = set()
    ws = await connect(fuzzer.key)
    try:
        for kind, payload in sent:
            await send_raw(ws, kind, payload)
            answers = await answers_until_probe(ws)
            assert answers, f"no answer to {kind} {payload!r:.300}"
            for text, frame in answers:
                check_answer(text, frame, sent_job(kind, payload), ids)
                hypothesis.event(f"answer {frame['type']} {frame.get('code', '')}".strip())
            assert not ws.future.done(), "the consumer died"

        # Still serving: watch_mine answers (after any live state of its own jobs).
        await ws.send_json_to({"action": "watch_mine"})
        async with asyncio.timeout(5):
            while (frame := await ws.receive_json_from(5))["type"] != "watching":
                check_answer(json.dumps(frame), frame, None, ids)
        check_answer(json.dumps(frame), frame, None, ids)
        assert fuzzer.mine in {state["id"] for state in frame["jobs"]}
        (outbox,) = runtime.hub._owner_watchers[fuzzer.owner]
        assert not outbox.closed, "the socket's outbox stopped sending"
    finally:
        await ws.disconnect()
    assert_hub_clean(runtime.hub)
    await assert_owned_by(fuzzer.owner, ids)
    assert await victim.rows() == before
    assert liveprogress_warnings(caplog) == []


@hypothesis.settings(max_examples=15, **FUZZ)
@given(data=st.data())
async def test_a_socket_without_a_session_gets_only_errors(runtime, victim, data):
    fuzzer = Fuzzer("", "", str(uuid.uuid4()))
    sent = data.draw(st.lists(messages(victim, fuzzer), min_size=1, max_size=5), label="frames")
    before = await victim.rows()
    ws = await connect(None)
    try:
        for kind, payload in sent:
            await send_raw(ws, kind, payload)
            frame = await ws.receive_json_from(3)
            assert frame["type"] == "error", frame
            assert frame["code"] in {"bad_request", "forbidden", "too_large"}, frame
        assert await ws.receive_nothing(0.05)
        await ws.send_json_to({"action": "watch_mine"})
        assert (await ws.receive_json_from(3))["code"] == "forbidden"
    finally:
        await ws.disconnect()
    assert_hub_clean(runtime.hub)
    assert await victim.rows() == before
    assert await Job.objects.exclude(owner=victim.owner).acount() == 0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(1000, 1000), (20, 60)],
    ids=["under-the-limit", "past-the-limit"],
)
async def test_a_flood_of_subscribes_is_answered_and_leaves_no_trace(
    runtime, victim, fuzzer, settings, rate, burst
):
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "MAX_FRAMES_PER_SECOND": rate,
        "FRAME_BURST": burst,
    }
    now = timezone.now()
    own = [
        str(job.id)
        for job in await Job.objects.abulk_create(
            Job(kind="demo.timer", owner=fuzzer.owner, status="succeeded", seq=3, finished_at=now)
            for _ in range(40)
        )
    ]
    before = await victim.rows()
    # (frame, the answer it gets when it is not rate limited)
    plan: list[tuple[dict[str, Any], Any]] = []
    for n in range(300):
        if n % 3 == 0:
            job_id = str(uuid.uuid4()) if n % 2 else victim.ids[n % len(victim.ids)]
            plan.append(({"action": "subscribe", "job": job_id}, ("not_found", job_id)))
        elif n % 3 == 1 and own:
            # Each own job once: a state per job per socket may be coalesced.
            job_id = own.pop()
            plan.append(({"action": "subscribe", "job": job_id}, ("job", job_id)))
        else:
            job_id = str(uuid.uuid4())
            plan.append(({"action": "unsubscribe", "job": job_id}, ("unsubscribed", job_id)))

    ws = await connect(fuzzer.key)
    try:
        began = time.monotonic()
        for frame, _ in plan:
            await ws.send_json_to(frame)
        answers = [await ws.receive_json_from(5) for _ in plan]
        elapsed = time.monotonic() - began
        assert await ws.receive_nothing(0.1), "more answers than frames"
        limited = 0
        for index, ((_, (expected, job_id)), answer) in enumerate(zip(plan, answers, strict=True)):
            if answer.get("code") == "limit":
                assert index >= burst, (index, answer)
                assert set(answer) == {"type", "code", "detail"}, answer
                limited += 1
            elif expected == "job":
                assert answer["type"] == "job" and answer["job"]["id"] == job_id, answer
            elif expected == "unsubscribed":
                assert answer == {"type": "unsubscribed", "job": job_id}
            else:
                assert answer["code"] == "not_found" and answer["job"] == job_id, answer
        allowed = burst + rate * elapsed + 1
        assert limited >= len(plan) - allowed, (limited, elapsed)
        if burst >= len(plan):
            assert limited == 0
        # It recovers once a token is back.
        await asyncio.sleep(1.5 / rate)
        await ws.send_json_to({"action": "watch_mine"})
        assert (await ws.receive_json_from(3))["type"] == "watching"
        assert not ws.future.done()
    finally:
        await ws.disconnect()
    assert_hub_clean(runtime.hub)
    assert await victim.rows() == before


# -- the JSON API --------------------------------------------------------------------------------

METHODS = st.sampled_from(
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
)
# Multipart bodies are left out: they fail before any JSON check (pinned below).
CONTENT_TYPES = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "application/json;charset=utf-16",
            "application/json; charset=nonsense",
            "APPLICATION/JSON",
            "text/json",
            "application/merge-patch+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)


def bodies(victim: Victim) -> st.SearchStrategy[bytes]:
    forged = st.dictionaries(
        st.sampled_from(FORGED), st.sampled_from([victim.owner, "user:1", 1]), max_size=2
    )
    starts = st.builds(
        lambda fields, extra: {**extra, **fields},
        st.fixed_dictionaries({"kind": st.just("demo.timer")}, optional={"params": params(victim)}),
        forged,
    )
    loose = st.fixed_dictionaries({}, optional={"kind": KINDS, "params": params(victim)})
    as_json = st.builds(
        lambda value, ascii_only, encoding: json.dumps(value, ensure_ascii=ascii_only).encode(
            encoding, "surrogatepass"
        ),
        st.one_of(starts, starts, loose, VALUES),
        st.booleans(),
        st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32"]),
    )
    return st.one_of(
        as_json,
        as_json,
        st.binary(max_size=200),
        st.sampled_from(
            [
                b"",
                b"{}",
                b"null",
                b"\xef\xbb\xbf{}",
                b'{"kind": "demo.timer", "params": {"steps": NaN}}',
                b'{"kind": "demo.timer", "params": {"steps": 1e400}}',
                b"[" * 3000 + b"]" * 3000,
                b'{"kind":"demo.timer","pad":"' + b"x" * MAX_BYTES + b'"}',
            ]
        ),
    )


def requests_to(victim: Victim, own: str) -> st.SearchStrategy[tuple[str, str]]:
    ids = st.one_of(
        st.uuids().map(str),
        st.sampled_from([s for job_id in victim.ids for s in spellings(job_id)]),
        st.sampled_from(spellings(own)),
        # Anything but a slash, percent-encoded as a browser would.
        st.text(st.one_of(st.characters(exclude_characters="/"), SURROGATES), min_size=1).map(
            lambda text: quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")
        ),
    )
    query = st.one_of(
        st.just(""),
        st.dictionaries(
            st.sampled_from(["limit", "status", "owner", "user", "x"]),
            st.one_of(st.integers(-5, 500).map(str), BIG_INTS.map(str), TEXT),
            max_size=3,
        ).map(
            lambda pairs: urlencode(
                {k: v.encode("utf-8", "surrogatepass") for k, v in pairs.items()}
            )
        ),
    )
    # Mostly the method each endpoint answers, then any.
    listing = query.map(lambda q: "/api/jobs/" + ("?" + q if q else ""))
    one = ids.map(lambda job_id: f"/api/jobs/{job_id}/")
    cancel = ids.map(lambda job_id: f"/api/jobs/{job_id}/cancel/")
    return st.one_of(
        st.tuples(st.sampled_from(["GET", "POST"]), listing),
        st.tuples(st.just("POST"), st.just("/api/jobs/")),
        st.tuples(st.just("GET"), one),
        st.tuples(st.just("POST"), cancel),
        st.tuples(METHODS, st.one_of(listing, one, cancel)),
    )


def check_api_answer(response, method: str, own_ids: set[str]) -> dict[str, Any] | None:
    status = response.status_code
    assert status < 500, (status, response.content[:300])
    assert response["Content-Type"] == "application/json", (status, response.content[:300])
    if method == "HEAD" and not response.content:
        return None
    body = json.loads(response.content)
    if status >= 400:
        assert set(body) <= {"type", "code", "detail", "field"}, body
        assert body["type"] == "error" and isinstance(body["detail"], str) and body["detail"]
        assert status in STATUS_OF_CODE[body["code"]], (status, body)
        if status == 405:
            assert response["Allow"]
        return body
    assert status in (200, 201, 202), status
    states = body["jobs"] if set(body) == {"jobs"} else [body]
    for state in states:
        assert check_state(state) in own_ids, state
    return body


@hypothesis.settings(max_examples=150, **FUZZ)
@given(data=st.data())
async def test_every_api_request_gets_json_and_creates_only_what_it_should(
    runtime, victim, client_and_token, data
):
    client, token, owner, own = client_and_token
    method, path = data.draw(requests_to(victim, own), label="method and path")
    body = data.draw(bodies(victim), label="body")
    content_type = data.draw(CONTENT_TYPES, label="content_type")
    csrf = data.draw(st.sampled_from(["token"] * 4 + ["none", "wrong"]), label="csrf")
    headers = {"token": {"X-CSRFToken": token}, "none": {}, "wrong": {"X-CSRFToken": "x" * 64}}
    before = await victim.rows()
    count = await Job.objects.acount()
    own_ids = {str(pk) async for pk in Job.objects.filter(owner=owner).values_list("pk", flat=True)}

    response = await client.generic(
        method, path, body, content_type=content_type, headers=headers[csrf]
    )

    created = None
    if response.status_code == 201:
        created = json.loads(response.content)
        own_ids.add(created["id"])
    answer = check_api_answer(response, method, own_ids)
    hypothesis.event(f"status {response.status_code} {(answer or {}).get('code', '')}".strip())
    if created is None:
        assert await Job.objects.acount() == count
    else:
        # Only a valid start creates a job, and it is the caller's.
        assert (method, path.partition("?")[0], csrf) == ("POST", "/api/jobs/", "token")
        sent = json.loads(body)
        # Fields besides kind and params (a forged owner) are ignored.
        assert isinstance(sent, dict) and sent["kind"] == "demo.timer"
        row = await Job.objects.aget(pk=created["id"])
        assert row.owner == owner
        assert row.params.items() >= (sent.get("params") or {}).items()
        assert await Job.objects.acount() == count + 1
    assert await victim.rows() == before


@pytest.fixture
async def client_and_token(runtime):
    client, token = await visit()
    owner = f"session:{client.cookies['sessionid'].value}"
    mine = await Job.objects.acreate(
        kind="demo.timer", owner=owner, status="cancelled", seq=4, finished_at=timezone.now()
    )
    return client, token, owner, str(mine.id)


# -- bugs found here, fixed: each stays as a regression test ---------------------------------------


async def test_answers_are_valid_utf8_whatever_the_job_field(runtime, fuzzer):
    ws = await connect(fuzzer.key)
    try:
        await ws.send_to(text_data='{"action": "subscribe", "job": "\\ud800"}')
        text = await ws.receive_from(3)
        assert json.loads(text)["code"] == "bad_request"
        text.encode("utf-8")
    finally:
        await ws.disconnect()


async def test_a_multipart_post_is_a_json_error(runtime, client_and_token):
    client, token, _, _ = client_and_token
    client.raise_request_exception = False  # see what a browser would
    response = await client.post(
        "/api/jobs/", {"kind": "demo.timer"}, headers={"X-CSRFToken": token}
    )  # the test client's default: multipart/form-data with a boundary
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert await Job.objects.acount() == 1  # the fixture's own, nothing new


async def test_a_body_past_djangos_upload_limit_is_too_large(runtime, client_and_token):
    from django.conf import settings

    client, token, _, _ = client_and_token
    body = b'{"kind":"demo.timer","pad":"' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    response = await client.generic(
        "POST", "/api/jobs/", body, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"&".join(b"a=%d" % n for n in range(1001)), "application/x-www-form-urlencoded"),
        (b"{}", "multipart/form-data"),
    ],
    ids=["too-many-fields", "multipart-without-boundary"],
)
async def test_bodies_django_refuses_still_get_json(runtime, client_and_token, body, content_type):
    client, token, _, _ = client_and_token
    response = await client.generic(
        "POST", "/api/jobs/", body, content_type=content_type, headers={"X-CSRFToken": token}
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
