"""Progress: what a job's code calls to report how far it is.

Calls only change memory under a lock and wake the publisher; they never touch
the database or the channel layer, so a job may call ``advance()`` a million
times. They are safe from any thread. Once a cancel is requested every call
raises :class:`JobCancelled`, which is how sync code stops cooperatively.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import JobCancelled


@dataclass(frozen=True)
class ProgressSnapshot:
    current: int
    total: int | None
    message: str


class Progress:
    """Handed to every job function as its first argument."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._on_change = on_change
        self._current = 0
        self._total: int | None = None
        self._message = ""
        self._cancel = threading.Event()

    def start(self, total: int | None = None, message: str | None = None) -> None:
        """Begin counting from zero towards ``total`` (None: unknown, an indeterminate bar)."""
        self._update(current=0, total=_count(total, "total"), message=message, set_total=True)

    def advance(self, n: int = 1, message: str | None = None) -> None:
        """Count ``n`` more units done, and set the message with them if given (one
        change: no watcher sees the count without its message)."""
        n = _whole(n, "n")
        with self._lock:
            self._check_cancelled()
            self._current += n
            if message is not None:
                self._message = str(message)
        self._on_change()

    def set(self, current: int, total: int | None = None, message: str | None = None) -> None:
        """Set the units done, the total and the message, those given, as one change."""
        self._update(
            current=_whole(current, "current"),
            total=_count(total, "total"),
            message=None if message is None else str(message),
            set_total=total is not None,
        )

    def message(self, text: str) -> None:
        """Set the line shown beside the bar."""
        self._update(current=None, total=None, message=str(text), set_total=False)

    @property
    def cancelled(self) -> bool:
        """True once a cancel has been requested: sync code should stop soon."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a cancel has been requested."""
        with self._lock:
            self._check_cancelled()

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return ProgressSnapshot(self._current, self._total, self._message)

    def request_cancel(self) -> None:
        self._cancel.set()

    def _check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled")

    def _update(
        self, *, current: int | None, total: int | None, message: str | None, set_total: bool
    ) -> None:
        with self._lock:
            self._check_cancelled()
            if current is not None:
                self._current = current
            if set_total:
                self._total = total
            if message is not None:
                self._message = message
        self._on_change()


def _whole(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Progress {name} must be a whole number >= 0, not {value!r}")
    return value


def _count(value: int | None, name: str) -> int | None:
    """A total: a whole number, or None for unknown."""
    return None if value is None else _whole(value, name)
