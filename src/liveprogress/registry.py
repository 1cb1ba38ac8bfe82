"""Job kinds: plain functions registered by name (``@liveprogress.job``).

A kind's parameters are read from its signature once, at registration, into a
pydantic model; every start validates against it before a job exists.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise

from .exceptions import BadRequest

JobFunction = Callable[..., Any]

#: Seconds to wait before an attempt, given the number of the attempt that failed
#: (1 for the first).
Backoff = Callable[[int], float]

#: Who a unique kind's key is unique among: each owner's jobs, or the whole site's.
UniqueScope = Literal["owner", "site"]


@dataclass(frozen=True)
class Operations:
    """How a kind's jobs are run beyond their function: retries, time limit,
    concurrency, uniqueness. The defaults change nothing: one attempt, no limit."""

    #: Attempts in all (1: never retried). A failed attempt is retried when its error
    #: is one of ``retry_on``; an attempt whose process died, always (the job must be
    #: safe to run again).
    max_attempts: int = 1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    #: Seconds before attempt n+1: ``backoff * 2 ** (n - 1)``, at most ``backoff_max``,
    #: or a function of n.
    backoff: float | Backoff = 2.0
    backoff_max: float = 300.0
    #: Seconds an attempt may run (from its start, not its wait in line); None: no limit.
    timeout: float | None = None
    #: Jobs of the kind that may run at once, across every process (None: no limit).
    concurrency: int | None = None
    #: The params whose values make a job unique (one active job per key); None: not
    #: unique. Empty: every param.
    unique: tuple[str, ...] | None = None
    unique_scope: UniqueScope = "owner"

    def retry_delay(self, failed_attempt: int) -> float:
        """Seconds to wait before the attempt after ``failed_attempt``."""
        if callable(self.backoff):
            return max(float(self.backoff(failed_attempt)), 0.0)
        return float(min(self.backoff * 2 ** max(failed_attempt - 1, 0), self.backoff_max))


NO_OPERATIONS = Operations()


@dataclass(frozen=True)
class JobKind:
    """A registered kind of job."""

    name: str
    function: JobFunction
    title: str | Promise
    is_async: bool
    params_model: type[pydantic.BaseModel]
    #: Re-queued (up to MAX_ATTEMPTS starts) when the process running it dies.
    retryable: bool = False
    #: Retries, time limit, concurrency and uniqueness.
    operations: Operations = field(default=NO_OPERATIONS)
    #: Clients may start it (the API, the socket, the CLI); a kind that is not
    #: public is started only by the site's own code (a view, a parent job).
    public: bool = True
    #: The task queue that runs it when it is another engine's task ("celery",
    #: "rq", "dramatiq", "tasks"); empty for a kind of liveprogress's own.
    engine: str = ""
    #: Takes a queued job of it off its engine's queue (by job id), where the engine
    #: can; a cancelled job is never run in any case (its worker's claim fails).
    revoke: Callable[[str], None] | None = None

    def validate(self, params: Any, *, from_strings: bool = False) -> dict[str, Any]:
        """Checked params with defaults filled in, as JSON-ready values.

        JSON input is validated strictly (``"5"`` is not an int); command-line
        input, all strings, is parsed (``from_strings=True``).
        """
        if not isinstance(params, Mapping):
            raise BadRequest("params must be a JSON object", field="params")
        try:
            if from_strings:
                model = self.params_model.model_validate_strings(dict(params))
            else:
                model = self.params_model.model_validate(dict(params), strict=True)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or "params"
            message = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"]
            raise BadRequest(f"{field}: {message}", field=f"params.{field}") from None
        return model.model_dump(mode="json")

    def attempts_allowed(self, most_by_setting: int) -> int:
        """Attempts a job of this kind may have in all: its ``max_attempts``, or for a
        kind that is only ``retryable`` (after its process died), the setting's."""
        if self.operations.max_attempts > 1:
            return self.operations.max_attempts
        return most_by_setting if self.retryable else 1

    def restarts_after_crash(self) -> bool:
        """Whether a job of it whose process died may start again (it is declared
        safe to run twice)."""
        return self.retryable or self.operations.max_attempts > 1

    def unique_key(self, owner: str, params: Mapping[str, Any]) -> str:
        """The key that makes a job of this kind unique among the active ones (a
        digest: it fits the column whatever the params), or "" if it is not unique."""
        unique = self.operations.unique
        if unique is None:
            return ""
        values = {name: params.get(name) for name in (unique or sorted(params))}
        scope = owner if self.operations.unique_scope == "owner" else ""
        text = json.dumps([scope, values], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


_registry: dict[str, JobKind] = {}


def _params_model(name: str, function: JobFunction) -> type[pydantic.BaseModel]:
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        raise ImproperlyConfigured(f"Job {name!r}: its first parameter must take the Progress")
    hints = typing.get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for parameter in parameters[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ImproperlyConfigured(
                f"Job {name!r}: *args and **kwargs can't be validated; name each parameter"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints.get(parameter.name, Any), default)
    return pydantic.create_model(
        f"Params_{name.replace('.', '_')}",
        __config__=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False),
        **fields,
    )


def register(
    name: str,
    function: JobFunction,
    *,
    title: str | Promise | None = None,
    retryable: bool = False,
    public: bool = True,
    operations: Operations = NO_OPERATIONS,
) -> JobKind:
    """Register ``function`` as the job kind ``name`` (see :func:`liveprogress.job`)."""
    existing = _registry.get(name)
    if existing is not None and existing.function is not function:
        raise ImproperlyConfigured(f"Job kind {name!r} is registered twice")
    params_model = _params_model(name, function)
    _check_operations(name, operations, set(params_model.model_fields))
    kind = JobKind(
        name=name,
        function=function,
        title=title or name,
        is_async=inspect.iscoroutinefunction(function),
        params_model=params_model,
        retryable=retryable,
        public=public,
        operations=operations,
    )
    _registry[name] = kind
    return kind


#: The most jobs of one kind that may run at once (slots are numbered in a small int).
CONCURRENCY_MAX = 10_000


def _check_operations(name: str, operations: Operations, params: set[str]) -> None:
    """Refuse, naming the fix, what would fail later (at a start, or never say so)."""

    def whole(value: Any, what: str, least: int, most: int | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ImproperlyConfigured(f"Job {name!r}: {what} must be a whole number >= {least}")
        if most is not None and value > most:
            raise ImproperlyConfigured(f"Job {name!r}: {what} must be at most {most}")

    whole(operations.max_attempts, "max_attempts", 1)
    if operations.concurrency is not None:
        whole(operations.concurrency, "concurrency", 1, CONCURRENCY_MAX)
    if operations.timeout is not None and not (
        isinstance(operations.timeout, int | float) and operations.timeout > 0
    ):
        raise ImproperlyConfigured(f"Job {name!r}: timeout must be a positive number of seconds")
    if not callable(operations.backoff) and not (
        isinstance(operations.backoff, int | float) and operations.backoff >= 0
    ):
        raise ImproperlyConfigured(
            f"Job {name!r}: backoff must be seconds (>= 0) or a function of the attempt"
        )
    if not all(
        isinstance(error, type) and issubclass(error, BaseException)
        for error in operations.retry_on
    ):
        raise ImproperlyConfigured(f"Job {name!r}: retry_on must be exception classes")
    unknown = sorted(set(operations.unique or ()) - params)
    if unknown:
        raise ImproperlyConfigured(
            f"Job {name!r}: unique names {', '.join(map(repr, unknown))}, not among its "
            f"parameters ({', '.join(sorted(params)) or 'none'})"
        )
    if operations.unique_scope not in ("owner", "site"):
        raise ImproperlyConfigured(f"Job {name!r}: unique_scope must be 'owner' or 'site'")


def operations_of(
    *,
    max_attempts: int = 1,
    retry_on: type[BaseException] | Sequence[type[BaseException]] = (Exception,),
    backoff: float | Backoff = 2.0,
    backoff_max: float = 300.0,
    timeout: float | None = None,
    concurrency: int | None = None,
    unique: bool | str | Sequence[str] = False,
    unique_scope: UniqueScope = "owner",
) -> Operations:
    """:class:`Operations` from ``@job``'s arguments, in their friendlier forms (one
    exception or several; ``unique=True`` for every param, or one param's name)."""
    if isinstance(unique, str):
        unique_params: tuple[str, ...] | None = (unique,)
    elif unique is True:
        unique_params = ()
    elif unique is False or unique is None:
        unique_params = None
    else:
        unique_params = tuple(unique)
    return Operations(
        max_attempts=max_attempts,
        retry_on=(retry_on,) if isinstance(retry_on, type) else tuple(retry_on),
        backoff=backoff,
        backoff_max=backoff_max,
        timeout=timeout,
        concurrency=concurrency,
        unique=unique_params,
        unique_scope=unique_scope,
    )


#: Another engine's task: its arguments are the engine's to check and carry.
_EngineParams = pydantic.create_model("EngineParams", __config__=pydantic.ConfigDict(extra="allow"))

#: The longest kind name (the job's ``kind`` column).
KIND_NAME_MAX = 100


def register_task(
    engine: str,
    name: str,
    function: JobFunction,
    *,
    title: str | Promise | None = None,
    revoke: Callable[[str], None] | None = None,
) -> JobKind:
    """Register another engine's task as the kind ``engine:name``: jobs of it are
    made when the task is enqueued and run by that engine's workers, never started
    by clients (it is not public)."""
    kind_name = f"{engine}:{name}"
    if len(kind_name) > KIND_NAME_MAX:
        raise ImproperlyConfigured(
            f"Task {name!r}: its kind name {kind_name!r} is longer than {KIND_NAME_MAX} "
            "characters; give the task a shorter name"
        )
    existing = _registry.get(kind_name)
    if existing is not None and _where(existing.function) != _where(function):
        raise ImproperlyConfigured(f"Task {kind_name!r} is registered twice")
    kind = JobKind(
        name=kind_name,
        function=function,
        # Untitled, the kind's name says which engine runs it.
        title=title or kind_name,
        is_async=False,
        params_model=_EngineParams,
        public=False,
        engine=engine,
        revoke=revoke,
    )
    _registry[kind_name] = kind
    return kind


def _where(function: JobFunction) -> tuple[str, str]:
    # An engine may build a task twice from one function (Celery does, for each app
    # it is bound to): the same function is the same task.
    return (getattr(function, "__module__", ""), getattr(function, "__qualname__", ""))


#: The most kind names an "unknown kind" error lists (it stays short).
_LISTED_KINDS = 10


def get_kind(name: Any, *, public_only: bool = False) -> JobKind:
    """The registered kind called ``name``, or a ``BadRequest``.

    With ``public_only`` (a client asks), kinds clients may not start are unknown,
    and the error names none: a site's kinds are not a stranger's to list. The
    site's own code is told which kinds there are.
    """
    if not isinstance(name, str) or not name:
        raise BadRequest("kind must be a non-empty string", field="kind")
    found = _registry.get(name)
    if found is not None and (found.public or not public_only):
        return found
    if public_only:
        raise BadRequest(f"Unknown job kind {name[:100]!r}", field="kind")
    listed = sorted(_registry)
    known = ", ".join(listed[:_LISTED_KINDS]) or "none"
    if len(listed) > _LISTED_KINDS:
        known += f" and {len(listed) - _LISTED_KINDS} more"
    raise BadRequest(f"Unknown job kind {name[:100]!r}, must be one of: {known}", field="kind")


def kinds() -> dict[str, JobKind]:
    """Every registered kind by name."""
    return dict(_registry)
