"""``manage.py runjob KIND``: run a job here, its progress drawn live on the terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation

from ... import actions
from ...cli import TerminalBar, report
from ...exceptions import RequestError
from ...models import Job
from ...registry import kinds
from ...runtime import get_runtime, stop_runtime
from ...state import JobState, job_state


def valid_param(text: str) -> tuple[str, str]:
    """The argparse type of ``--param``: ``NAME=VALUE``, the value left as text."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def valid_params(text: str) -> dict[str, Any]:
    """The argparse type of ``--params``: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def valid_language(text: str) -> str:
    """The argparse type of ``--language``: one of ``settings.LANGUAGES`` (or a variant)."""
    try:
        return translation.get_supported_language_variant(text)
    except LookupError:
        known = ", ".join(code for code, _ in settings.LANGUAGES)
        raise argparse.ArgumentTypeError(
            f"unsupported language {text!r}, must be one of: {known}"
        ) from None


def command_params(
    pairs: list[tuple[str, str]], document: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """The params and whether they are strings to parse (``--param``) or typed JSON."""
    if pairs and document is not None:
        raise CommandError("Give the params with --param or with --params: use one")
    if document is not None:
        return document, False
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise CommandError(f"--param {name} is given twice")
        params[name] = value
    return params, True


def command_owner(username: str | None) -> str:
    """``user:<pk>`` for ``--user``, else ``cli:<the OS user's name>``."""
    if username is not None:
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user {username!r}")
        return f"user:{user.pk}"
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        raise CommandError("Can't tell your user name; give --user USERNAME") from None


async def run_job(
    kind: str,
    params: dict[str, Any],
    *,
    owner: str,
    language: str,
    from_strings: bool,
    bar: TerminalBar,
) -> JobState:
    """Start a job in this process and wait for its end, drawing each state on ``bar``.

    It runs through the server's own machinery (validation, caps, the in-process
    runner, publishing, heartbeats), so it is a job like any other: listed, and
    cancellable from the site meanwhile. Ctrl-C cancels it; a second Ctrl-C
    raises ``KeyboardInterrupt`` as usual. Returns the final state as stored.
    """
    loop = asyncio.get_running_loop()
    runtime = await get_runtime()
    try:
        job = await actions.start_job(
            owner, kind, params, language=language, from_strings=from_strings
        )
        job_id = str(job.id)
        bar.update(job_state(job))

        def draw(live: Job) -> None:
            # The final state is drawn once, as stored, by the caller's bar.close().
            if live.is_active:
                bar.update(job_state(live))

        execution = runtime.runner.executions[job_id]
        execution.on_publish = draw
        execution.on_log = bar.log
        cancels: list[asyncio.Task[Job]] = []

        def cancel() -> None:
            cancels.append(loop.create_task(actions.cancel_job(owner, job_id)))

        with _on_ctrl_c(loop, cancel):
            await runtime.runner.wait(job_id)
            await asyncio.gather(*cancels)
        # From the database: the truth, even if someone else ended the job.
        final = await Job.objects.aget(pk=job.pk)
    finally:
        await stop_runtime()
    return job_state(final)


@contextlib.contextmanager
def _on_ctrl_c(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on the first Ctrl-C; a second one raises KeyboardInterrupt as usual."""

    def first() -> None:
        loop.remove_signal_handler(signal.SIGINT)
        callback()

    try:
        loop.add_signal_handler(signal.SIGINT, first)
        handled = True
    except (NotImplementedError, RuntimeError):
        # Windows, or not the main thread: Ctrl-C interrupts the command, and the
        # runtime's stop then ends the job `interrupted`.
        handled = False
    try:
        yield
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


class Command(BaseCommand):
    help = (
        "Run a job in this process, its progress drawn on stderr and its result "
        "printed on stdout. Ctrl-C cancels it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", metavar="KIND", help="the job kind, e.g. demo.timer")
        parser.add_argument(
            "--param",
            type=valid_param,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="one parameter, its text parsed as the kind's type for it; repeat for more",
        )
        parser.add_argument(
            "--params",
            type=valid_params,
            metavar="JSON",
            help="every parameter as one JSON object, its values taken strictly as typed",
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="run it as this user, among their jobs (default: cli:<your OS user name>)",
        )
        parser.add_argument(
            "--language",
            type=valid_language,
            default=settings.LANGUAGE_CODE,
            help="the language of the job's messages (default: %(default)r)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the final state as JSON instead of the result",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        params, from_strings = command_params(options["param"], options["params"])
        owner = command_owner(options["user"])
        bar = TerminalBar(self.stderr)
        state: JobState | None = None
        try:
            state = asyncio.run(
                run_job(
                    options["kind"],
                    params,
                    owner=owner,
                    language=options["language"],
                    from_strings=from_strings,
                    bar=bar,
                )
            )
        except RequestError as exc:
            detail = exc.detail
            if exc.field == "kind":
                # Whoever runs manage.py may know the kinds (a web client is not told).
                public = sorted(name for name, kind in kinds().items() if kind.public)
                detail += f", must be one of: {', '.join(public) or 'none'}"
            raise CommandError(detail) from None
        except KeyboardInterrupt:
            raise CommandError("Interrupted", returncode=130) from None
        finally:
            bar.close(state)
        report(state, self.stdout, as_json=options["json"])
