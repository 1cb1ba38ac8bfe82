"""The demo site's own settings: what it must never do, whoever runs it."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from proyecto.settings import secret_key

#: What the demo used before: a key anyone could read in the source.
PUBLIC_KEY = "django-insecure-liveprogress-demo-key-change-me-in-production"


def test_without_a_configured_key_the_demo_makes_its_own_and_keeps_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    kept = tmp_path / ".secret_key"
    # Several processes starting at once agree on one key.
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: secret_key(kept), range(16)))
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) >= 50 and key != PUBLIC_KEY
    assert kept.read_text() == key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # The next start reads the same key: sessions survive a restart.
    assert secret_key(kept) == key
    # Another checkout gets another key.
    assert secret_key(tmp_path / "other") != key


def test_a_configured_key_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "k" * 60)
    assert secret_key(tmp_path / ".secret_key") == "k" * 60
    assert not (tmp_path / ".secret_key").exists()


def test_the_running_demo_does_not_use_the_old_public_key():
    assert settings.SECRET_KEY != PUBLIC_KEY
