"""liveprogress: long-running Django jobs whose progress people watch live.

The public API:

- :func:`job` registers a function as a job kind and returns its
  :class:`JobDefinition`, whose ``start``/``astart`` start a job and return its
  :class:`JobHandle`; the function gets a :class:`Progress`.
- :func:`get_job`, :func:`cancel_job` (and ``aget_job``, ``acancel_job``) find and
  cancel an owner's job; :func:`owner_of` / :func:`aowner_of` name the owner of a
  request or a user.
- :class:`JobCancelled` is what a cancelled job's progress calls raise;
  :class:`JobNotFound` what a job that is not the owner's answers; every error is
  a :class:`LiveProgressError`.

Tests run jobs to their end with :mod:`liveprogress.testing`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .exceptions import JobCancelled, JobNotFound, LiveProgressError
from .progress import Progress

if TYPE_CHECKING:
    from .definitions import JobDefinition, job
    from .handles import JobHandle, acancel_job, aget_job, cancel_job, get_job
    from .owner import aowner_of, owner_of

# Imported on first use, not with the package: Django imports this package while
# it loads the apps, before the models these modules need can be defined.
_LAZY = {
    "JobDefinition": "definitions",
    "job": "definitions",
    "JobHandle": "handles",
    "acancel_job": "handles",
    "aget_job": "handles",
    "cancel_job": "handles",
    "get_job": "handles",
    "aowner_of": "owner",
    "owner_of": "owner",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'liveprogress' has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "JobCancelled",
    "JobDefinition",
    "JobHandle",
    "JobNotFound",
    "LiveProgressError",
    "Progress",
    "acancel_job",
    "aget_job",
    "aowner_of",
    "cancel_job",
    "get_job",
    "job",
    "owner_of",
]
