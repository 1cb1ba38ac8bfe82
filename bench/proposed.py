"""A prototype of the change BENCHMARKS.md proposes, for measuring it; not the package.

    python -m bench --asgi-app bench.proposed:application --tag proposed ...

The demo site's application, with one change patched in at import: when the
channel layer is the in-memory one (process-local: this process's hub is its
only subscriber), a job's state goes straight to the hub instead of through two
``group_send`` calls and a ``receive``, each of which scans every group of the
layer (``InMemoryChannelLayer._clean_expired``): O(jobs) per state, so O(jobs²)
per second. Other layers (Redis) are untouched.
"""

from __future__ import annotations

from typing import Any

# The demo site first: it sets Django up, which the app's modules need.
from proyecto.asgi import application

# isort: split
from channels.layers import InMemoryChannelLayer, get_channel_layer

from liveprogress import actions, execution, publish, recovery, runtime

_through_layer = publish.publish


async def publish_direct(job: Any) -> None:
    """Hand the state to this process's hub when the layer is process-local."""
    local = runtime._runtime
    if isinstance(get_channel_layer(), InMemoryChannelLayer) and local is not None:
        local.hub.deliver_job(job)
        return
    await _through_layer(job)


for module in (publish, execution, actions, recovery):
    module.publish = publish_direct

__all__ = ["application"]
