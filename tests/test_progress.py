from __future__ import annotations

import threading

import pytest

from liveprogress.exceptions import JobCancelled
from liveprogress.progress import Progress


def test_start_advance_set_message():
    changes = []
    progress = Progress(lambda: changes.append(1))
    progress.start(total=10, message="go")
    progress.advance()
    progress.advance(3)
    assert (progress.snapshot().current, progress.snapshot().message) == (4, "go")
    progress.set(7)
    assert (progress.snapshot().current, progress.snapshot().total) == (7, 10)
    progress.set(2, total=4)
    progress.message("half")
    snap = progress.snapshot()
    assert (snap.current, snap.total, snap.message) == (2, 4, "half")
    assert len(changes) == 6


def test_count_and_message_change_together():
    progress = Progress()
    progress.start(total=4)
    progress.advance(message="one")
    progress.set(3, message="three")
    snapshot = progress.snapshot()
    assert (snapshot.current, snapshot.message) == (3, "three")
    progress.advance(1, "four")
    assert (progress.snapshot().current, progress.snapshot().message) == (4, "four")


def test_unknown_total():
    progress = Progress()
    progress.start()
    progress.advance(5)
    assert progress.snapshot().total is None
    assert progress.snapshot().current == 5


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_advance_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="whole number"):
        Progress().advance(bad)


def test_every_call_raises_once_cancelled():
    progress = Progress()
    progress.start(total=3)
    assert not progress.cancelled
    progress.request_cancel()
    assert progress.cancelled
    for call in (
        progress.advance,
        lambda: progress.set(1),
        lambda: progress.message("x"),
        progress.raise_if_cancelled,
        lambda: progress.start(5),
    ):
        with pytest.raises(JobCancelled):
            call()


def test_advance_is_safe_from_many_threads():
    progress = Progress()
    progress.start(total=40_000)

    def work():
        for _ in range(10_000):
            progress.advance()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert progress.snapshot().current == 40_000


@pytest.mark.parametrize(
    "say",
    [
        lambda progress, text: progress.start(total=2, message=text),
        lambda progress, text: progress.advance(message=text),
        lambda progress, text: progress.set(1, message=text),
        lambda progress, text: progress.message(text),
    ],
    ids=["start", "advance", "set", "message"],
)
def test_every_way_of_setting_the_message_keeps_it_within_its_bound(say):
    from liveprogress.progress import MESSAGE_MAX

    progress = Progress()
    progress.start(total=2)
    say(progress, "m" * 50_000)
    message = progress.snapshot().message
    assert len(message) == MESSAGE_MAX and message.endswith("…")
