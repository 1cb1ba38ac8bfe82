"""liveprogress: long-running Django jobs whose progress people watch live.

Public API: :func:`job` registers a job kind; its function gets a
:class:`Progress`; :class:`JobCancelled` is what a cancelled job's progress
calls raise.
"""

from __future__ import annotations

from .exceptions import JobCancelled, LiveProgressError
from .progress import Progress
from .registry import job

__all__ = ["JobCancelled", "LiveProgressError", "Progress", "job"]
