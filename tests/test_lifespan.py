from __future__ import annotations

import asyncio

import pytest

from liveprogress import runtime as runtime_module
from liveprogress.lifespan import lifespan

pytestmark = pytest.mark.asyncio


async def test_startup_starts_the_runtime_and_shutdown_stops_it(fast, transactional_db):
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    app = asyncio.create_task(lifespan({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    async with asyncio.timeout(5):
        while not sent:
            await asyncio.sleep(0.01)
    assert sent == [{"type": "lifespan.startup.complete"}]
    started = runtime_module.current_runtime()
    assert started is not None
    assert started.ready.done()
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(app, 5)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert runtime_module.current_runtime() is None
