"""What a job run by this process may do beyond its progress: files and children.

The runtime hands each job's execution one (see ``progress.JobContext``), so the
execution needs no runtime of its own: ``liveprogress.testing`` hands it another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import files
from .launch import Launcher, launch, new_job
from .models import Job
from .registry import get_kind
from .runners import InProcessRunner
from .state import job_state


class RuntimeContext:
    """A job's context in a runtime: files through the storage, children started
    through the runtime's caps and dispatcher, their states live where they run here."""

    def __init__(self, job: Job, runtime: Launcher, runner: InProcessRunner) -> None:
        self.job = job
        self.runtime = runtime
        self.runner = runner

    def store_file(self, name: str, content: bytes, content_type: str) -> dict[str, Any]:
        return files.store(self.job, name, content, content_type)

    async def spawn(self, kind: str, params: Mapping[str, Any] | None) -> str:
        job = self.job
        # A parent may start kinds that are not public: it is the site's own code.
        child = new_job(job.owner, get_kind(kind), params, language=job.language, parent=job)
        await launch(self.runtime, child)
        return str(child.id)

    async def children_states(self) -> list[dict[str, Any]]:
        return [dict(job_state(child)) for child in await self.runner.children(self.job)]
