"""When running states go out: at once while the event loop keeps up, in rounds
while it lags.

A process that is offered more frames than it can send (a thousand watchers of
jobs that report ten times a second) used to queue a wake-up per socket per
state; the loop's ready queue grew to thousands of callbacks an iteration, and
everything else waited behind them, final states included (BENCHMARKS.md,
"Where a final state's time goes"). The pacer measures the loop's lag with one
timer and, while the loop is late, holds running states back: each socket's
newest state per job waits (older ones are replaced, as for any slow reader)
until the next round, and rounds come further apart the later the loop runs.
Final states, answers and errors are never held: they go at once. While a
final state of this process's jobs is being written (``publish.ending``),
running states wait too, for at most HOLD_MAX_S: on a busy process they
would take the loop's turns and the sockets' buffers that the final state
needs next.

A round sends in slices (a few milliseconds, a hundred sockets), so a final
state, a page or a client's request never waits behind a whole round. Sockets
that take batches (docs/protocol.md) always get their running states in rounds,
one frame each.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .publish import endings_under_way

if TYPE_CHECKING:
    from .outbox import Outbox

#: How often the loop's lag is measured, while any socket is open.
PROBE_S = 0.1
#: Lag above which running states are held back, and below which they go at once again.
LAG_HIGH_S = 0.05
LAG_LOW_S = 0.02
#: The longest a running state is held while the loop lags.
MAX_INTERVAL_S = 2.0
#: The most one slice of a round runs, and the most sockets it sends to, before the
#: loop gets its turn. Both: the server writes what a slice handed it in the loop's
#: next turn (Daphne's Twisted: one callback per socket), so the turn after a slice
#: grows with its sockets, not with its own time.
SLICE_S = 0.005
SLICE_OUTBOXES = 100
#: The longest running states wait for final states being written, and how often
#: a waiting round looks again.
HOLD_MAX_S = 0.5
HOLD_CHECK_S = 0.01


class Pacer:
    """One process's rounds of running states (the hub holds it)."""

    def __init__(self, round_s: float) -> None:
        #: The time between rounds for sockets that take batches, and the shortest.
        self.round_s = round_s
        #: The time between rounds while the loop lags (0: it keeps up).
        self.interval = 0.0
        self._due: dict[Outbox, None] = {}
        self._round: asyncio.TimerHandle | asyncio.Handle | None = None
        self._probe: asyncio.TimerHandle | None = None
        self._probe_due = 0.0
        self._open = 0
        self._held_since: float | None = None

    @property
    def lagging(self) -> bool:
        return self.interval > 0

    @property
    def open_outboxes(self) -> int:
        """Sockets and streams open on this pacer."""
        return self._open

    def opened(self) -> None:
        """A socket or stream opened: the lag is measured while any is open."""
        self._open += 1
        if self._probe is None:
            self._schedule_probe(asyncio.get_running_loop())

    def closed(self, outbox: Outbox) -> None:
        """A socket or stream closed: nothing of it is due any more."""
        self._due.pop(outbox, None)
        self._open -= 1
        if self._open <= 0 and self._probe is not None:
            self._probe.cancel()
            self._probe = None
            self.interval = 0.0

    def defers(self, outbox: Outbox) -> bool:
        """Whether the outbox's running states wait for the next round."""
        return self.interval > 0 or outbox.batches or endings_under_way() > 0

    def defer(self, outbox: Outbox) -> None:
        self._due[outbox] = None
        if self._round is None:
            # Held only for final states being written: as soon as they are out.
            delay = self.round_s if self.interval or outbox.batches else HOLD_CHECK_S
            self._round = asyncio.get_running_loop().call_later(
                max(self.interval, delay), self._run_round
            )

    def _run_round(self) -> None:
        """Flush the outboxes due, a slice of them; the rest in the loop's next turn."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        if endings_under_way():
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < HOLD_MAX_S:
                self._round = loop.call_later(HOLD_CHECK_S, self._run_round)
                return
        self._held_since = None
        self._round = None
        deadline = now + SLICE_S
        for _ in range(SLICE_OUTBOXES):
            if not self._due:
                return
            outbox = next(iter(self._due))
            del self._due[outbox]
            outbox.flush()
            if time.perf_counter() > deadline:
                break
        if self._due:
            self._round = loop.call_soon(self._run_round)

    def _schedule_probe(self, loop: asyncio.AbstractEventLoop) -> None:
        self._probe_due = loop.time() + PROBE_S
        self._probe = loop.call_at(self._probe_due, self._measure)

    def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        lag = loop.time() - self._probe_due
        if lag > LAG_HIGH_S:
            # Later and later rounds until the loop keeps up: fewer, newer frames.
            self.interval = min(max(self.interval * 2, self.round_s), MAX_INTERVAL_S)
        elif lag < LAG_LOW_S and self.interval:
            self.interval *= 0.75
            if self.interval < self.round_s:
                self.interval = 0.0
        self._schedule_probe(loop)
