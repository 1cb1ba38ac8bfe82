"""Shared fixtures: fast publishing intervals and a clean runtime per async test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from channels.layers import get_channel_layer

from liveprogress.runtime import stop_runtime

FAST = {
    "PUBLISH_INTERVAL": 0.02,
    "PERSIST_INTERVAL": 0.2,
    "HEARTBEAT_INTERVAL": 0.2,
    "STALE_AFTER": 1.0,
    "RECONCILE_INTERVAL": 0.2,
    "DISPATCH_INTERVAL": 0.1,
}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite's test database in a file, as a site runs it (WAL, writers wait for the
    lock): Django's default in-memory one shares one cache between connections, where
    a job's thread writing its own rows while the runtime writes the job's state fails
    at once with "database table is locked" instead of waiting its turn."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(
            tmp_path_factory.mktemp("database") / "test.sqlite3"
        )


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


#: The browser tests drive Debian's chromium (never a downloaded one).
CHROMIUM = os.environ.get("LIVEPROGRESS_CHROMIUM", "/usr/bin/chromium")
#: What this machine's closed network needs (no background calls to Google's hosts).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Headless chromium through Playwright, one per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# Registers the test-only job kinds.
from tests import jobs as _test_jobs  # noqa: E402, F401
