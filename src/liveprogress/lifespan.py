"""ASGI lifespan support: start the runtime with the server, stop it with the server.

Servers that speak the lifespan protocol (Uvicorn, Hypercorn) get start-up
recovery before the first request and a clean stop, in which running jobs end
`interrupted` instead of being left for the next start. Daphne does not speak
it; there the runtime starts with the first request or socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .runtime import get_runtime, stop_runtime

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def lifespan(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI app for the ``lifespan`` scope: ``ProtocolTypeRouter({"lifespan": lifespan})``."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await get_runtime()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop_runtime()
            await send({"type": "lifespan.shutdown.complete"})
            return
