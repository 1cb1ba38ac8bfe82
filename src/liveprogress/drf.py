"""Django REST framework serializers and views of jobs, for sites built on DRF.

Needs the ``drf`` extra (``pip install "django-liveprogress[drf]"``); nothing else
in liveprogress imports this module. :class:`JobViewSet` answers with the states
and the ownership rules of the JSON API and the socket, through the site's own
REST framework settings (authentication, permissions, throttles, pagination):

    router.register("jobs", JobViewSet, basename="job")
"""

from __future__ import annotations

import types
import typing
from typing import Any

from django.db.models import QuerySet
from django.urls import NoReverseMatch

from . import actions, bridge, conf
from .api import refuse_large_body
from .definitions import astart_kind
from .exceptions import BadRequest, RequestError
from .handles import JobHandle, cancel_job, get_job
from .models import Job
from .owner import existing_owner_of, user_owner
from .queueing import client_start_time
from .registry import get_kind
from .state import JobState, job_state

try:
    from rest_framework import serializers, status, viewsets
    from rest_framework.authentication import SessionAuthentication
    from rest_framework.decorators import action
    from rest_framework.exceptions import APIException, ValidationError
    from rest_framework.filters import BaseFilterBackend
    from rest_framework.permissions import SAFE_METHODS
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView
except ImportError as missing:  # pragma: no cover (tested in a fresh interpreter)
    raise ImportError(
        'liveprogress.drf needs Django REST framework: pip install "django-liveprogress[drf]"'
    ) from missing


def _state(instance: Job | JobHandle) -> JobState:
    return instance.state if isinstance(instance, JobHandle) else job_state(instance)


#: The REST framework field of each type a wire state's value has.
_FIELDS: dict[Any, type[serializers.Field[Any, Any, Any, Any]]] = {
    str: serializers.CharField,
    int: serializers.IntegerField,
    float: serializers.FloatField,
    bool: serializers.BooleanField,
}


def _state_field(hint: Any) -> serializers.Field[Any, Any, Any, Any]:
    """The read-only field of a value typed ``hint`` (``int | None``,
    ``list[dict[str, Any]]``, ``Any``...)."""
    union = typing.get_origin(hint) in (types.UnionType, typing.Union)
    kinds = typing.get_args(hint) if union else (hint,)
    nullable = type(None) in kinds
    (kind,) = [each for each in kinds if each is not type(None)]
    if typing.get_origin(kind) is list:
        return serializers.ListField(child=_state_field(typing.get_args(kind)[0]), read_only=True)
    if typing.get_origin(kind) is dict:
        return serializers.DictField(read_only=True)
    return _FIELDS.get(kind, serializers.JSONField)(read_only=True, allow_null=nullable)


class JobStateSerializer(serializers.Serializer[Job | JobHandle]):
    """A job's state (of a ``Job`` or a ``JobHandle``), read-only: the wire state
    the socket, the event streams and the JSON API send, field for field."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # Read from JobState itself, so a field added to the wire is added here.
        hints = typing.get_type_hints(JobState)
        return {name: _state_field(hint) for name, hint in hints.items()}

    def to_representation(self, instance: Job | JobHandle) -> dict[str, Any]:
        # The state as state.job_state makes it, not re-rendered field by field:
        # DRF clients and the socket get the same values.
        return dict(_state(instance))


def _nested(field: str, detail: str) -> dict[str, Any]:
    """``params.steps`` -> ``{"params": {"steps": [detail]}}``: how REST framework
    nests a field's errors."""
    head, _, rest = field.partition(".")
    return {head: _nested(rest, detail) if rest else [detail]}


def api_exception(refusal: RequestError) -> APIException:
    """A refusal of liveprogress as REST framework's exception: a bad value is a
    ``ValidationError`` under its field; anything else keeps its status and code
    (403, 404, 413, 429...) in REST framework's body, ``{"detail": ...}``."""
    if isinstance(refusal, BadRequest) and refusal.field is not None:
        return ValidationError(_nested(refusal.field, refusal.detail), code=refusal.code)
    exception = APIException(refusal.detail, refusal.code)
    exception.status_code = refusal.http_status
    return exception


class StartJobSerializer(serializers.Serializer[JobHandle]):
    """A client's start: a public ``kind`` and its ``params``, checked by the kind's
    own validation. ``save()`` starts the job for the context's request (its user,
    else its session, made now if need be) and returns its handle; the
    serializer's data is then the new job's state."""

    kind = serializers.CharField(help_text="A job kind that clients may start.")
    params = serializers.JSONField(
        default=dict, help_text="The kind's parameters, as a JSON object."
    )
    run_after = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="A scheduled start: epoch seconds, or ISO 8601 with its UTC offset.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Checked here so that is_valid() refuses before a session or a job is
        # made; the start checks them again, as every start does.
        try:
            get_kind(attrs["kind"], public_only=True).validate(attrs["params"])
            attrs["run_after"] = client_start_time(attrs.get("run_after"))
        except BadRequest as refusal:
            raise api_exception(refusal) from None
        return attrs

    def create(self, validated_data: dict[str, Any]) -> JobHandle:
        request = self.context["request"]
        kind, params = validated_data["kind"], validated_data["params"]
        run_after = validated_data.get("run_after")
        return bridge.call(
            lambda: astart_kind(request, kind, params, public_only=True, run_after=run_after)
        )

    def to_representation(self, instance: JobHandle) -> dict[str, Any]:
        return dict(_state(instance))


class JobAPIView(APIView):
    """A REST framework view that starts or acts on jobs, held to liveprogress's
    rules: its refusals (a bad param, a cap, a job that is not the caller's)
    answer as REST framework errors, through the site's ``EXCEPTION_HANDLER``,
    and a visitor acting through their session cookie needs the CSRF token. The
    base of a site's own view that calls ``mykind.start(request, ...)``."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method not in SAFE_METHODS and user_owner(request.user) is None:
            # A visitor no authentication vouched for acts through their session
            # cookie, which another site's page can send as well: their writes need
            # the CSRF token, as SessionAuthentication asks of a signed-in user.
            SessionAuthentication().enforce_csrf(request)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            exc = api_exception(exc)
        return super().handle_exception(exc)


class JobViewSet(JobAPIView, viewsets.GenericViewSet[Job]):
    """The caller's jobs: list (``?status=active`` for the unfinished; paginated as
    the site's settings say, else the newest ``RECENT_JOBS``), retrieve, create
    (``{"kind", "params"}``: 201 and the state) and ``cancel`` (POST).

    The owner is the user REST framework's authentication found (a client with a
    token or a password owns its jobs by its user), else the visitor's session:
    looking never makes one, starting does. A job that is not the caller's answers
    404, exactly as one that does not exist.
    """

    # The site's default filters are for its own models; a subclass may add some.
    filter_backends: list[type[BaseFilterBackend]] = []

    def get_serializer_class(self) -> type[serializers.BaseSerializer[Any]]:
        # REST framework's metadata (OPTIONS) asks for a POST's serializer by the
        # method alone, not the action.
        method = getattr(self.request, "method", None)
        if self.action == "create" or (method == "POST" and not self.detail):
            return StartJobSerializer
        return JobStateSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication: checking a session's CSRF token parses the body,
        # and REST framework's parsers read all of it, however long.
        refuse_large_body(request._request)
        super().initial(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Job]:
        """The caller's jobs, newest first, as stored."""
        wanted = self.request.query_params.get("status", "")
        if wanted not in ("", "active"):
            raise ValidationError({"status": ["status must be 'active' or left out"]})
        owner = existing_owner_of(self.request)
        if owner is None:
            return Job.objects.none()
        return actions.owner_jobs(owner, active_only=bool(wanted))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        jobs = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(jobs)
        stored = page if page is not None else list(jobs[: conf.get("RECENT_JOBS")])
        live = bridge.call(lambda: actions.live_jobs(stored))
        states = self.get_serializer(live, many=True).data
        return self.get_paginated_response(states) if page is not None else Response(states)

    def retrieve(self, request: Request, pk: str, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(get_job(request, pk)).data)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        start = self.get_serializer(data=request.data)
        start.is_valid(raise_exception=True)
        handle = start.save()
        try:
            headers = {"Location": self.reverse_action("detail", args=[handle.id])}
        except NoReverseMatch:  # routed by hand, without a router's names
            headers = {}
        # 200: a unique kind's active job, returned instead of a new one.
        code = status.HTTP_200_OK if handle.existing else status.HTTP_201_CREATED
        return Response(start.data, status=code, headers=headers)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str, *args: Any, **kwargs: Any) -> Response:
        """Cancel the caller's job: 202 while it is still stopping, 200 once ended."""
        handle = cancel_job(request, pk)
        code = status.HTTP_202_ACCEPTED if handle.is_active else status.HTTP_200_OK
        return Response(self.get_serializer(handle).data, status=code)


__all__ = [
    "JobAPIView",
    "JobStateSerializer",
    "JobViewSet",
    "StartJobSerializer",
    "api_exception",
]
