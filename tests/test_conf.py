from __future__ import annotations

import typing

import pytest
from django.core.exceptions import ImproperlyConfigured

from liveprogress import conf


def test_defaults(settings):
    settings.LIVEPROGRESS = {}
    assert conf.get("RUNNER") == "inprocess"
    assert conf.get("PUBLISH_INTERVAL") == 0.1
    assert conf.get("PERSIST_INTERVAL") == 1.0
    assert conf.get("MAX_FRAME_BYTES") == 65536


def test_overrides_are_seen_at_once(settings):
    settings.LIVEPROGRESS = {"MAX_ACTIVE_PER_OWNER": 3}
    assert conf.get("MAX_ACTIVE_PER_OWNER") == 3
    settings.LIVEPROGRESS = {"MAX_ACTIVE_PER_OWNER": 4}
    assert conf.get("MAX_ACTIVE_PER_OWNER") == 4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"PUBLISH_INTERVALL": 1},
            "Unknown LIVEPROGRESS setting.*'PUBLISH_INTERVALL'.*PUBLISH_INTERVAL",
        ),
        ({"SYNC_WORKERS": "4"}, "wrong type"),
        ({"SYNC_WORKERS": True}, "wrong type"),
        ({"SYNC_WORKERS": 0}, "must be positive"),
        ({"RUNNER": "celery"}, "Unsupported.*'celery', must be one of: inprocess"),
        ({"SITE_URL": "example.com"}, "'example.com' must start with https://"),
    ],
)
def test_bad_settings_say_what_is_wrong(settings, value, message):
    settings.LIVEPROGRESS = value
    with pytest.raises(ImproperlyConfigured, match=message):
        conf.get("RUNNER")


def test_job_modules_are_imported_at_start_up(settings):
    import sys

    from django.apps import apps

    from liveprogress.registry import kinds

    settings.LIVEPROGRESS = {"JOB_MODULES": ["tests.extra_jobs"]}
    sys.modules.pop("tests.extra_jobs", None)
    apps.get_app_config("liveprogress").ready()
    assert "tests.extra" in kinds()


def test_typed_names_follow_the_defaults():
    """conf.get's overloads (for mypy) name every setting once, with its value's type."""
    typed = {
        conf.StrSetting: (str,),
        conf.IntSetting: (int,),
        conf.FloatSetting: (int, float),
        conf.BoolSetting: (bool,),
        conf.ListSetting: (list,),
        conf.BoolSetting: (bool,),
        conf.DictSetting: (dict,),
    }
    names = [name for alias in typed for name in typing.get_args(alias)]
    assert sorted(names) == sorted(conf.DEFAULTS)
    for alias, types in typed.items():
        for name in typing.get_args(alias):
            expected = conf.DEFAULTS[name][1]
            assert (expected if isinstance(expected, tuple) else (expected,)) == types, name
