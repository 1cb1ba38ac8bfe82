"""Job kinds: plain functions registered by name (``@liveprogress.job``).

A kind's parameters are read from its signature once, at registration, into a
pydantic model; every start validates against it before a job exists.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise

from .exceptions import BadRequest

JobFunction = Callable[..., Any]


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
) -> JobKind:
    """Register ``function`` as the job kind ``name`` (see :func:`liveprogress.job`)."""
    existing = _registry.get(name)
    if existing is not None and existing.function is not function:
        raise ImproperlyConfigured(f"Job kind {name!r} is registered twice")
    kind = JobKind(
        name=name,
        function=function,
        title=title or name,
        is_async=inspect.iscoroutinefunction(function),
        params_model=_params_model(name, function),
        retryable=retryable,
        public=public,
    )
    _registry[name] = kind
    return kind


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
