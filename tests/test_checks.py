"""`manage.py check` names each setting that breaks live progress, and nothing else.

Each check fires with its id on a bad configuration and is silent on the demo
site's own (the test settings), so a check that breaks either way fails here.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone

from liveprogress import checks
from liveprogress import runtime as runtime_module
from liveprogress.models import Job
from liveprogress.registry import kinds

REDIS_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
    }
}


class ResultStorage(FileSystemStorage):
    pass


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def run_check(*args: str) -> str:
    """``manage.py check --tag liveprogress``'s output (``args`` instead of the tag
    if given); SystemCheckError if an error was found."""
    out = StringIO()
    call_command("check", *(args or ("--tag", checks.TAG)), stdout=out, stderr=out)
    return out.getvalue()


def test_the_demo_site_passes_every_check(db):
    # Every check of the site, Django's too (its model checks ask the database).
    assert "no issues" in run_check("--database", "default")
    for check in checks.CHECKS:
        assert check() == [], check.__name__


def test_the_checks_are_registered_under_their_tag(settings):
    assert "no issues" in run_check()
    settings.MEDIA_ROOT = ""
    with pytest.raises(SystemCheckError, match=r"liveprogress\.E005"):
        run_check()


def test_deploy_checks_do_not_crash(db):
    # Django's own deploy warnings (HSTS, secure cookies...) fire on the demo site.
    assert "liveprogress." not in run_check("--deploy", "--database", "default")


# -- E008: invalid settings ----------------------------------------------------------------


def test_e008_invalid_settings_are_an_error_not_a_crash(settings):
    settings.LIVEPROGRESS = {"RUNNER": "celery"}
    [error] = checks.check_settings()
    assert error.id == "liveprogress.E008"
    assert "'celery', must be one of: inprocess, tasks" in error.msg
    assert error.hint
    # The other checks leave it to E008 rather than raise.
    for check in checks.CHECKS:
        check()
    with pytest.raises(SystemCheckError, match=r"liveprogress\.E008.*celery"):
        run_check()


def test_e008_silent_on_valid_settings(settings):
    settings.LIVEPROGRESS = {"RUNNER": "tasks", "SYNC_WORKERS": 2}
    assert checks.check_settings() == []


# -- E001, E002: the channel layer ---------------------------------------------------------


@pytest.mark.parametrize("layers", [None, {}, {"other": REDIS_LAYERS["default"]}])
def test_e001_no_default_channel_layer(settings, layers):
    if layers is None:
        del settings.CHANNEL_LAYERS
    else:
        settings.CHANNEL_LAYERS = layers
    [error] = checks.check_channel_layer()
    assert error.id == "liveprogress.E001"
    assert "channels_redis" in error.hint and "InMemoryChannelLayer" in error.hint
    with pytest.raises(SystemCheckError, match=r"liveprogress\.E001"):
        run_check()


def test_e002_tasks_runner_with_the_in_memory_layer(settings):
    settings.LIVEPROGRESS = {"RUNNER": "tasks"}
    [error] = checks.check_channel_layer()
    assert error.id == "liveprogress.E002"
    assert "RECONCILE_INTERVAL" in error.msg
    assert "channels_redis.core.RedisChannelLayer" in error.hint


def test_e002_silent_with_redis_or_the_inprocess_runner(settings):
    settings.LIVEPROGRESS = {"RUNNER": "tasks"}
    settings.CHANNEL_LAYERS = REDIS_LAYERS
    assert checks.check_channel_layer() == []
    settings.LIVEPROGRESS = {"RUNNER": "inprocess"}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert checks.check_channel_layer() == []


# -- W009: another engine's workers, with the in-memory layer -------------------------------


def test_w009_an_engine_s_workers_with_the_in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if not any(kind.engine for kind in kinds().values()):
        assert checks.check_engines_layer() == []  # no engine here: nothing to say
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/1"
    [warning] = checks.check_engines_layer()
    assert warning.id == "liveprogress.W009"
    assert "Celery" in warning.msg and "RECONCILE_INTERVAL" in warning.msg
    assert "channels_redis.core.RedisChannelLayer" in warning.hint
    settings.CHANNEL_LAYERS = REDIS_LAYERS
    assert checks.check_engines_layer() == []


# -- W003, W004: ASGI ------------------------------------------------------------------------


def test_w003_no_asgi_application(settings):
    del settings.ASGI_APPLICATION
    [warning] = checks.check_asgi()
    assert warning.id == "liveprogress.W003"
    assert "'daphne'" in warning.hint and "django.contrib.staticfiles" in warning.hint
    assert "liveprogress.W003" in run_check()


@pytest.mark.parametrize("max_age", [60, None])
def test_w004_persistent_connections_under_asgi(settings, monkeypatch, max_age):
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", max_age)
    [warning] = checks.check_asgi()
    assert warning.id == "liveprogress.W004"
    assert f"DATABASES['default']['CONN_MAX_AGE'] = {max_age!r}" in warning.msg
    assert "CONN_MAX_AGE = 0" in warning.hint


def test_w004_silent_without_persistent_connections_or_without_asgi(settings, monkeypatch):
    monkeypatch.delitem(settings.DATABASES["default"], "CONN_MAX_AGE")
    assert checks.check_asgi() == []  # Django's default: 0
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    del settings.ASGI_APPLICATION
    assert ids(checks.check_asgi()) == ["liveprogress.W003"]


# -- E005, E006: the result storage ----------------------------------------------------------


def test_e005_file_system_storage_without_a_location(settings):
    settings.MEDIA_ROOT = ""
    [error] = checks.check_result_storage()
    assert error.id == "liveprogress.E005"
    assert "working directory" in error.msg
    assert "MEDIA_ROOT" in error.hint


def test_e005_subclasses_count_and_an_empty_location_too(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "results": {"BACKEND": "tests.test_checks.ResultStorage", "OPTIONS": {"location": ""}},
    }
    settings.LIVEPROGRESS = {"RESULT_STORAGE": "results"}
    assert ids(checks.check_result_storage()) == ["liveprogress.E005"]


def test_e005_silent_with_a_location(settings, tmp_path):
    assert checks.check_result_storage() == []  # MEDIA_ROOT is set
    settings.MEDIA_ROOT = ""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    assert checks.check_result_storage() == []
    # Not on disk: no location to need.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    assert checks.check_result_storage() == []


def test_e006_result_storage_names_no_storage(settings):
    settings.LIVEPROGRESS = {"RESULT_STORAGE": "results"}
    [error] = checks.check_result_storage()
    assert error.id == "liveprogress.E006"
    assert "'results'" in error.msg and "default" in error.msg
    settings.STORAGES = {
        **settings.STORAGES,
        "results": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    assert checks.check_result_storage() == []


# -- W007: the socket route ------------------------------------------------------------------


@pytest.mark.parametrize("application", ["liveprogress", "by_hand", "nested"])
def test_w007_silent_when_the_socket_is_routed(settings, application):
    settings.ASGI_APPLICATION = f"tests.asgi_apps.{application}"
    assert checks.check_socket_route() == []


@pytest.mark.parametrize(
    ("application", "says"),
    [
        ("plain", "is not a channels ProtocolTypeRouter"),
        ("http_only", "has no 'websocket' application"),
        ("other_sockets", "routes no WebSocket at ws/progress/"),
        ("other_consumer", "routes ws/progress/ to tests.asgi_apps.ChatConsumer"),
        ("missing", "could not be imported"),
    ],
)
def test_w007_no_socket_route(settings, application, says):
    settings.ASGI_APPLICATION = f"tests.asgi_apps.{application}"
    [warning] = checks.check_socket_route()
    assert warning.id == "liveprogress.W007"
    assert says in warning.msg
    assert "liveprogress.asgi.get_asgi_application()" in warning.hint
    assert "liveprogress.W007" in run_check()


def test_w007_left_to_w003_without_asgi(settings):
    del settings.ASGI_APPLICATION
    assert checks.check_socket_route() == []


# -- At run time: other processes run jobs, but the layer is in-memory -------------------------


@pytest.fixture
def not_warned(monkeypatch, settings, runtime):
    monkeypatch.setattr(runtime_module, "_warned_other_process", False)
    # Fresh rows stay fresh while the test looks at them.
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "STALE_AFTER": 60.0}


async def running_in(worker: str, heartbeat_age: float = 0.0) -> Job:
    return await Job.objects.acreate(
        kind="demo.timer",
        owner="session:x",
        status="running",
        worker=worker,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
    )


def layer_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "liveprogress.runtime"
        and "channel layer is in-memory" in record.getMessage()
    ]


async def test_a_job_in_another_process_warns_once(runtime, not_warned, caplog):
    await running_in("elsewhere.example:4242:beef")
    with caplog.at_level(logging.WARNING, logger="liveprogress.runtime"):
        await runtime._heartbeat()
        await runtime._heartbeat()
    [message] = layer_warnings(caplog)
    assert "another process (pid 4242)" in message
    assert "configure channels_redis" in message


async def test_no_warning_for_this_process_stale_ones_or_a_shared_layer(
    runtime, not_warned, caplog, monkeypatch
):
    await running_in(f"{socket.gethostname()}:{os.getpid()}:other")
    await running_in("elsewhere.example:4242:beef", heartbeat_age=120)
    with caplog.at_level(logging.WARNING, logger="liveprogress.runtime"):
        await runtime_module.warn_if_layer_misses_other_processes()
        assert layer_warnings(caplog) == []
        await running_in("elsewhere.example:4343:beef")
        monkeypatch.setattr(runtime_module, "in_process", lambda layer: False)
        await runtime_module.warn_if_layer_misses_other_processes()
    assert layer_warnings(caplog) == []
