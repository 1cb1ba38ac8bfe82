"""The terminal side of the ``runjob`` and ``watchjob`` commands.

Both draw a job's wire state (:func:`~liveprogress.state.job_state`) on the
command's stderr, so stdout carries only the outcome: as a tqdm bar when tqdm is
installed (the ``cli`` extra), else as plain lines. Both end the same way: the
outcome on stdout, and a ``CommandError`` (exit status 1) unless the job
succeeded.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from django.core.management.base import CommandError, OutputWrapper

from .models import Status
from .state import JobState

# tqdm's layout with the job's own times in it (elapsed since it started and the
# ETA its publisher computed), not tqdm's guesses from how often it is redrawn.
_KNOWN_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [TIMES{postfix}]"
_UNKNOWN_TOTAL = "{desc}: {n_fmt} [TIMES{postfix}]"


class TerminalBar:
    """A progress bar that draws the states it is given, one redraw each."""

    def __init__(self, out: OutputWrapper) -> None:
        self._file = _Verbatim(out)
        # tqdm, or PlainLines: the same attributes and methods (the ones used here).
        self._drawer = _drawer()
        self._bar: Any = None

    def update(self, state: JobState) -> None:
        """Draw ``state``; the first one also names the job on a line above the bar."""
        self._set(state).refresh()

    def log(self, lines: list[dict[str, Any]]) -> None:
        """Print log lines above the bar (``[warning] text``), the bar redrawn below."""
        for line in lines:
            self._drawer.write(f"[{line['level']}] {line['text']}", file=self._file)

    def close(self, state: JobState | None = None) -> None:
        """Draw ``state`` (the job's last) if given, and leave the bar on its own line."""
        try:
            bar = self._set(state) if state is not None else self._bar
        finally:
            # Closed whatever happens: a bar left open shifts every later one.
            bar, self._bar = self._bar, None
            if bar is not None:
                bar.close()

    def _set(self, state: JobState) -> Any:
        bar = self._bar
        if bar is None:
            self._file.write(f"{state['kind']} {state['id']}\n")
            # Not drawn on creation (delay) but by the caller, once, like every state.
            bar = self._bar = self._drawer(file=self._file, delay=math.inf)
            bar.delay = 0
        total, percent = state["total"], state["percent"]
        counted = str(state["current"]) if total is None else f"{state['current']}/{total}"
        stage = next((s["name"] for s in state["stages"] if s["status"] == "running"), None)
        if state["stages"] or (percent is not None and total and percent != _share(state)):
            # Stages or nested loops: the bar is the job's weighted percent, the
            # counter the current stage's.
            bar.n, bar.total = percent or 0, 100
            layout = _KNOWN_TOTAL.replace("{n_fmt}/{total_fmt}", counted)
        else:
            bar.n, bar.total = state["current"], total
            layout = _KNOWN_TOTAL if total else _UNKNOWN_TOTAL
        bar.desc = state["status"] if stage is None else f"{state['status']} [{stage}]"
        bar.bar_format = layout.replace("TIMES", _times(state))
        # Drawn after the times, as ", <message>".
        bar.postfix = state["message"] or None
        return bar


def report(state: JobState, out: OutputWrapper, *, as_json: bool = False) -> None:
    """Print how the job ended on ``out``; raise ``CommandError`` unless it succeeded.

    The outcome is the result (``succeeded: {...}``), or with ``as_json`` the
    whole final state, printed whatever the status.
    """
    succeeded = state["status"] == Status.SUCCEEDED
    if as_json:
        out.write(json.dumps(state, ensure_ascii=False))
    elif succeeded:
        out.write(f"succeeded: {json.dumps(state['result'], ensure_ascii=False)}")
    if not succeeded:
        error = f": {state['error']}" if state["error"] else ""
        raise CommandError(f"Job {state['id']} {state['status']}{error}")


def _times(state: JobState) -> str:
    started = state["started_at"]
    end = state["finished_at"] or state["updated_at"]
    elapsed = _interval(max(end - started, 0) if started is not None else 0)
    if state["finished_at"] is not None:
        return elapsed
    eta, rate = state["eta_s"], state["rate"]
    times = f"{elapsed}<{'?' if eta is None else _interval(eta)}"
    return times if rate is None else f"{times}, {rate:.3g}/s"


def _interval(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on (tqdm's format)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _share(state: JobState) -> float:
    total = state["total"] or 0
    return round(min(state["current"] / total, 1.0) * 100, 2) if total else 100.0


def _drawer() -> Any:
    """tqdm's bar class when tqdm is installed, else :class:`PlainLines`.

    Imported here, not with the module: tqdm is optional (the ``cli`` extra).
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainLines
    return tqdm


class PlainLines:
    """The bar without tqdm: one line per change, at most one a second.

    It has the few tqdm attributes and methods :class:`TerminalBar` uses, and
    draws the same layout without the bar itself: ``running: 40% 4/10 [00:02<00:03]``.
    A change of status or stage prints at once; so does the last state (``close``).
    """

    #: Seconds between two lines of the same status and stage.
    interval = 1.0

    def __init__(self, file: Any, delay: float = 0) -> None:
        self.file = file
        self.delay = delay
        self.n: float = 0
        self.total: float | None = None
        self.desc = ""
        self.bar_format = ""
        self.postfix: str | None = None
        self._printed = ("", "")
        self._printed_at = -math.inf
        self._pending = False

    @staticmethod
    def write(text: str, file: Any) -> None:
        file.write(text + "\n")

    def refresh(self) -> None:
        line = self._line()
        if line == self._printed[1]:
            return
        if self.desc != self._printed[0] or time.monotonic() - self._printed_at >= self.interval:
            self._print(line)
        else:
            self._pending = True

    def close(self) -> None:
        line = self._line()
        if self._pending or line != self._printed[1]:
            self._print(line)

    def _print(self, line: str) -> None:
        self.file.write(line + "\n")
        self._printed, self._printed_at, self._pending = (self.desc, line), time.monotonic(), False

    def _line(self) -> str:
        percentage = 100 * self.n / self.total if self.total else 0.0
        return self.bar_format.replace("|{bar}| ", " ").format(
            desc=self.desc,
            percentage=percentage,
            n_fmt=self.n,
            total_fmt=self.total,
            postfix=f", {self.postfix}" if self.postfix else "",
        )


class _Verbatim:
    """A command's output as tqdm needs it: written as is, no newline or colour added."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text, style_func=str, ending="")

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name: str) -> Any:
        # fileno, isatty and encoding: tqdm sizes the bar and picks its characters by them.
        return getattr(self._out, name)
