"""What a job run by this process may do beyond its progress: files and children.

The runtime hands each job's execution one (see ``progress.JobContext``), so the
execution needs no runtime of its own: ``liveprogress.testing`` hands it another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async

from . import files
from .launch import Launcher, launch, new_job
from .models import Job
from .registry import get_kind
from .runners import InProcessRunner
from .state import job_state

#: Seconds a sync job's attach waits for the owner's files to be read.
OWNER_BYTES_TIMEOUT = 60.0


def _settle(done: concurrent.futures.Future[int], ran: asyncio.Task[int]) -> None:
    if ran.cancelled():
        done.cancel()
    elif (error := ran.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(ran.result())


class RuntimeContext:
    """A job's context in a runtime: files through the storage, children started
    through the runtime's caps and dispatcher, their states live where they run here."""

    def __init__(
        self,
        job: Job,
        runtime: Launcher,
        runner: InProcessRunner,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.job = job
        self.runtime = runtime
        self.runner = runner
        self.loop = loop

    def store_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Store a file within the owner's quota (called from the job's thread)."""
        kept = self._owner_bytes()
        return files.store(
            self.job, name, content, content_type, owner_kept=kept, attached=attached
        )

    async def astore_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Store a file within the owner's quota (called from an async job)."""
        kept = await sync_to_async(files.owner_bytes)(self.job.owner, besides=self.job.pk)
        storing = sync_to_async(files.store, thread_sensitive=False)
        return await storing(
            self.job, name, content, content_type, owner_kept=kept, attached=attached
        )

    def _owner_bytes(self) -> int:
        """The owner's other files, read where the runtime's other queries run (the
        loop's thread-sensitive executor), not in the job's thread: one connection
        at a time. The coroutine is made on the loop (a loop that has stopped
        raises at once), and the wait is bounded (a loop stopping meanwhile would
        otherwise hold the job's thread, and the process's exit, for ever)."""
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        owner, job_id = self.job.owner, self.job.pk

        def begin() -> None:
            reading = sync_to_async(files.owner_bytes)(owner, besides=job_id)
            task = self.loop.create_task(reading, context=contextvars.Context())
            task.add_done_callback(lambda ran: _settle(done, ran))

        self.loop.call_soon_threadsafe(begin)
        return done.result(timeout=OWNER_BYTES_TIMEOUT)

    async def spawn(self, kind: str, params: Mapping[str, Any] | None) -> str:
        job = self.job
        # A parent may start kinds that are not public: it is the site's own code.
        child = new_job(
            job.owner,
            get_kind(kind),
            params,
            language=job.language,
            parent=job,
            address=job.address,
        )
        await launch(self.runtime, child)
        return str(child.id)

    async def children_states(self) -> list[dict[str, Any]]:
        return [dict(job_state(child)) for child in await self.runner.children(self.job)]
