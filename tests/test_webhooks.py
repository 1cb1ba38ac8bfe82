"""Webhooks' settings, signatures and checks; and the words no kind's parameter may take."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from liveprogress import checks, job
from liveprogress.webhooks import configured, signature, verify, webhooks_for

SECRET = "whsec-test"  # noqa: S105 (a test's)
BODY = b'{"event":"job.finished"}'


def test_a_signature_verifies_and_nothing_else_does():
    now = int(time.time())
    header = signature(SECRET, now, BODY)
    assert header.startswith(f"t={now},v1=")
    assert verify(SECRET, header, BODY)
    assert not verify("another-secret", header, BODY)
    assert not verify(SECRET, header, BODY + b" ")
    assert not verify(SECRET, header.replace(f"t={now}", f"t={now + 1}"), BODY)
    assert not verify(SECRET, "", BODY)
    assert not verify(SECRET, "t=abc,v1=00", BODY)


def test_an_old_signature_is_a_replay():
    old = int(time.time()) - 301
    assert not verify(SECRET, signature(SECRET, old, BODY), BODY)
    assert verify(SECRET, signature(SECRET, old, BODY), BODY, tolerance=600)


def test_webhooks_of_a_kind_then_of_every_kind_each_url_once(settings):
    settings.LIVEPROGRESS = {
        "WEBHOOKS": {
            "demo.timer": [
                {"url": "https://a.test/", "secret": "a"},
                {"url": "https://b.test/", "secret": "b", "events": ["started"]},
            ],
            "*": [
                {"url": "https://a.test/", "secret": "other"},
                {"url": "https://c.test/", "secret": "c"},
            ],
        }
    }
    finished = webhooks_for("demo.timer", "finished")
    assert [(hook.url, hook.secret) for hook in finished] == [
        ("https://a.test/", "a"),
        ("https://c.test/", "c"),
    ]
    assert [hook.url for hook in webhooks_for("demo.timer", "started")] == ["https://b.test/"]
    assert [hook.url for hook in webhooks_for("demo.batch", "finished")] == [
        "https://a.test/",
        "https://c.test/",
    ]


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        ({"demo.timer": {"url": "https://a.test/"}}, "must be a list"),
        (
            {"demo.timer": [{"url": "ftp://a.test/", "secret": "s"}]},
            "'ftp://a.test/' must be an https://",
        ),
        ({"demo.timer": [{"url": "https://a.test/"}]}, r"\['secret'\] is missing"),
        ({"demo.timer": [{"url": "https://a.test/", "secret": ""}]}, r"\['secret'\] is missing"),
        (
            {"demo.timer": [{"url": "https://a.test/", "secret": "s", "events": ["ended"]}]},
            "must list some of: started, retried, finished",
        ),
        (
            {"demo.timer": [{"url": "https://a.test/", "secret": "s", "retries": 3}]},
            "unknown key.*'retries'",
        ),
        (
            {"demo.timer": [{"url": "https://a.test/" + "x" * 500, "secret": "s"}]},
            "longer than 500",
        ),
    ],
)
def test_a_wrong_entry_is_named(settings, webhooks, message):
    settings.LIVEPROGRESS = {"WEBHOOKS": webhooks}
    with pytest.raises(ImproperlyConfigured, match=message):
        configured()


def ids(messages):
    return [message.id for message in messages]


def test_checks_name_wrong_webhooks_unknown_kinds_and_a_missing_site_url(settings):
    settings.LIVEPROGRESS = {"WEBHOOKS": {"demo.timer": [{"url": "https://a.test/"}]}}
    [error] = checks.check_notices()
    assert error.id == "liveprogress.E020"
    assert "['secret'] is missing" in error.msg
    settings.LIVEPROGRESS = {
        "WEBHOOKS": {
            "reports.nope": [{"url": "https://a.test/", "secret": "s"}],
            "*": [{"url": "https://b.test/", "secret": "s"}],
            "demo.timer": [],
        }
    }
    [unknown] = checks.check_notices()
    assert unknown.id == "liveprogress.W021"
    assert "'reports.nope'" in unknown.msg
    assert "demo.timer" not in unknown.msg
    settings.LIVEPROGRESS = {"EMAIL_NOTICES": True}
    assert ids(checks.check_notices()) == ["liveprogress.W022"]
    settings.LIVEPROGRESS = {"EMAIL_NOTICES": True, "SITE_URL": "https://example.test"}
    assert checks.check_notices() == []


def test_no_kind_may_take_notify_as_a_parameter():
    def takes_notify(progress, notify: bool = False):
        return notify

    with pytest.raises(ImproperlyConfigured, match="may not be called 'notify'"):
        job("tests.takes_notify")(takes_notify)


def test_backoff_doubles_up_to_its_cap_then_gives_up(settings):
    from liveprogress.notices import BACKOFF_MAX, backoff

    settings.LIVEPROGRESS = {"NOTICE_BACKOFF": 30, "NOTICE_ATTEMPTS": 12}
    assert [backoff(tries) for tries in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(11) == BACKOFF_MAX
    assert backoff(12) is None
