"""Writing the final states of jobs that end together in one transaction.

Each execution writes its job's final state before publishing it, through the
database thread (the one that runs Django's thread-sensitive calls), one call
each. When many jobs end at once, their calls queue there one behind another;
the first to run writes every ending queued by then in one transaction (one
commit instead of one each), and the others find theirs written and return at
once. No call waits for others to arrive: a job that ends alone is written as it
always was, and one that ends in a crowd starts no later than its place in the
queue.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from asgiref.sync import sync_to_async

from .models import Job


class FinalWrites:
    """The final writes of one process's jobs, gathered while they wait for the
    database thread."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._tokens = itertools.count()
        # Endings waiting to be written, and what became of those written, by token.
        self._pending: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._outcomes: dict[int, bool | Exception] = {}
        self._writing: set[int] = set()

    async def end(self, job_id: Any, values: dict[str, Any]) -> bool:
        """Write a job's final state while it is active (``Job.objects.end``); False
        if it ended elsewhere. Raises what the write raised, if it failed."""
        token = next(self._tokens)
        with self._lock:
            self._pending[token] = (job_id, values)
        try:
            return await sync_to_async(self._write, thread_sensitive=True)(token)
        finally:
            # A caller cancelled before its write ran leaves nothing behind.
            with self._lock:
                self._pending.pop(token, None)
                self._outcomes.pop(token, None)

    def _write(self, token: int) -> bool:
        """In the database thread: ``token``'s outcome, writing every pending ending
        with it unless an earlier call already wrote it."""
        with self._lock:
            # Being written by a call in another thread (one under async_to_sync):
            # its outcome comes once that one commits.
            self._lock.wait_for(lambda: token not in self._writing)
            if token in self._outcomes:
                return _outcome(self._outcomes.pop(token))
            if token not in self._pending:
                return False  # its caller was cancelled and left
            batch, self._pending = self._pending, {}
            self._writing |= batch.keys()
        outcomes: dict[int, bool | Exception]
        try:
            took = Job.objects.end(batch.values())
            outcomes = {each: job_id in took for each, (job_id, _) in batch.items()}
        except Exception as exc:
            # Every ending in the batch failed with it: each caller retries its own.
            outcomes = dict.fromkeys(batch, exc)
        with self._lock:
            self._writing -= batch.keys()
            self._outcomes.update(outcomes)
            self._lock.notify_all()
            return _outcome(self._outcomes.pop(token))


def _outcome(outcome: bool | Exception) -> bool:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
