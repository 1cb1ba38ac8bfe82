"""Runners decide where a job's execution happens.

``inprocess`` (the embedded default) runs it inside the ASGI server process.
"""

from __future__ import annotations

from .inprocess import InProcessRunner

__all__ = ["InProcessRunner"]
