"""Shared fixtures: fast publishing intervals and a clean runtime per async test."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer

from liveprogress.runtime import stop_runtime

FAST = {
    "PUBLISH_INTERVAL": 0.02,
    "PERSIST_INTERVAL": 0.2,
    "HEARTBEAT_INTERVAL": 0.2,
    "STALE_AFTER": 1.0,
    "RECONCILE_INTERVAL": 0.2,
}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory):
    """Jobs' files go to a temporary folder, never into the checkout."""
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("media"))
    return settings.MEDIA_ROOT


@pytest.fixture
def fast(settings):
    """liveprogress with short intervals, so tests wait for events, not seconds."""
    settings.LIVEPROGRESS = dict(FAST)
    return settings.LIVEPROGRESS


@pytest.fixture
async def runtime(fast, transactional_db):
    """A fresh per-process runtime on this test's loop, stopped afterwards."""
    from liveprogress.runtime import get_runtime

    layer = get_channel_layer()
    await layer.flush()
    started = await get_runtime()
    yield started
    await stop_runtime()
    await layer.flush()


# Registers the test-only job kinds.
from tests import jobs as _test_jobs  # noqa: E402, F401
