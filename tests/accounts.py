"""Users of a test server's database, and signing in and out as a browser does.

Users are made and changed by ``manage.py shell`` on the server's own database
(the test process's database is another one); signing in and out goes through
Django's own views (tests/staff_settings.py), as a form post with the CSRF token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

from tests.servers import MIGRATE_TIMEOUT, REPO_ROOT, DaphneServer, Visitor

PASSWORD = "correct horse battery staple"  # noqa: S105 (a test password)

_SCRIPT = """
import json, os
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
request = json.loads(os.environ["ACCOUNTS_REQUEST"])
User = get_user_model()
answer = {}
for name, spec in request.get("users", {}).items():
    user, _ = User.objects.get_or_create(username=name)
    if "password" in spec:
        user.set_password(spec["password"])
    user.is_active = spec.get("active", True)
    user.save()
    wanted = [p.split(".")[1] for p in spec.get("permissions", [])]
    user.user_permissions.set(Permission.objects.filter(codename__in=wanted))
    answer[name] = user.pk
for key in request.get("delete_sessions", []):
    Session.objects.filter(session_key=key).delete()
print(json.dumps(answer))
"""


def manage(server: DaphneServer, request: dict[str, Any]) -> dict[str, int]:
    """Apply ``request`` ({"users": {name: {password?, active?, permissions?}},
    "delete_sessions": [key...]}) to the server's database; users' pks by name."""
    done = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "manage.py", "shell", "-c", _SCRIPT],
        cwd=REPO_ROOT,
        env={**server.env, "ACCOUNTS_REQUEST": json.dumps(request)},
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def form_post(visitor: Visitor, path: str, fields: dict[str, str]) -> int:
    """POST a form with the CSRF token, as a browser does; the status (redirects
    followed)."""
    if visitor.cookie("csrftoken") is None:
        visitor.get("/accounts/login/")
    body = urlencode({**fields, "csrfmiddlewaretoken": visitor.cookie("csrftoken") or ""})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Referer": visitor.server.url(path),
        "Accept": "text/html",
    }
    status, _ = visitor.request("POST", path, body.encode(), headers)
    return status


def sign_in(visitor: Visitor, username: str) -> None:
    """Sign ``visitor`` in as ``username`` (password PASSWORD) through the login page."""
    before = visitor.cookie("sessionid")
    status = form_post(visitor, "/accounts/login/", {"username": username, "password": PASSWORD})
    assert status == 200, visitor.last_text[:500]
    assert visitor.cookie("sessionid") not in (None, before), "the login did not take"


def sign_out(visitor: Visitor) -> None:
    """Sign ``visitor`` out through the logout view (a POST, as Django wants)."""
    assert form_post(visitor, "/accounts/logout/", {}) == 200, visitor.last_text[:500]
