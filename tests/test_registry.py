from __future__ import annotations

from typing import Annotated, Literal

import pytest
from django.core.exceptions import ImproperlyConfigured
from pydantic import Field

from liveprogress import job
from liveprogress.exceptions import BadRequest
from liveprogress.registry import get_kind, kinds


@job("tests.typed")
def typed(
    progress,
    count: Annotated[int, Field(ge=1, le=5)],
    ratio: float = 0.5,
    mode: Literal["fast", "slow"] = "fast",
    tags: list[str] | None = None,
):
    return count


def test_defaults_fill_missing_params():
    assert get_kind("tests.typed").validate({"count": 2}) == {
        "count": 2,
        "ratio": 0.5,
        "mode": "fast",
        "tags": None,
    }


def test_demo_timer_defaults_are_the_examples():
    assert get_kind("demo.timer").validate({}) == {"steps": 10, "interval": 1.0}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.count"),
        ({"count": 0}, "params.count"),
        ({"count": 6}, "params.count"),
        ({"count": "2"}, "params.count"),
        ({"count": 2.5}, "params.count"),
        ({"count": True}, "params.count"),
        ({"count": 2, "ratio": "x"}, "params.ratio"),
        ({"count": 2, "mode": "medium"}, "params.mode"),
        ({"count": 2, "tags": [1]}, "params.tags.0"),
        ({"count": 2, "extra": 1}, "params.extra"),
        ({"count": 10**40}, "params.count"),
    ],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(BadRequest) as caught:
        get_kind("tests.typed").validate(params)
    assert caught.value.field == field
    assert caught.value.detail.startswith(field.removeprefix("params.") + ":")


def test_unknown_parameter_is_called_so():
    with pytest.raises(BadRequest, match="extra: unknown parameter"):
        get_kind("tests.typed").validate({"count": 1, "extra": 1})


def test_params_must_be_an_object():
    with pytest.raises(BadRequest) as caught:
        get_kind("tests.typed").validate([1, 2])
    assert caught.value.field == "params"


def test_int_accepted_for_float():
    assert get_kind("tests.typed").validate({"count": 1, "ratio": 2})["ratio"] == 2.0


def test_strings_are_parsed_for_the_command_line():
    clean = get_kind("tests.typed").validate({"count": "3", "ratio": "0.25"}, from_strings=True)
    assert clean["count"] == 3
    assert clean["ratio"] == 0.25
    with pytest.raises(BadRequest, match="count"):
        get_kind("tests.typed").validate({"count": "many"}, from_strings=True)


def test_infinity_is_refused():
    with pytest.raises(BadRequest, match="interval"):
        get_kind("demo.timer").validate({"interval": float("inf")})


@pytest.mark.parametrize("name", ["nope", "", None, 3, "x" * 500])
def test_unknown_kind_lists_the_known_ones_to_the_site_s_code(name):
    with pytest.raises(BadRequest) as caught:
        get_kind(name)
    assert caught.value.field == "kind"
    if isinstance(name, str) and name:
        assert "demo.timer" in caught.value.detail
        assert len(caught.value.detail) < 400


@pytest.mark.parametrize("name", ["nope", "demo.csv_import"])
def test_unknown_kind_names_no_kind_to_a_client(name):
    with pytest.raises(BadRequest) as caught:
        get_kind(name, public_only=True)
    assert caught.value.detail == f"Unknown job kind {name!r}"
    assert caught.value.field == "kind"


def test_async_and_sync_kinds_are_told_apart():
    assert kinds()["demo.timer"].is_async
    assert not kinds()["tests.typed"].is_async


def test_registering_another_function_under_a_taken_name_fails():
    with pytest.raises(ImproperlyConfigured, match="registered twice"):
        job("tests.typed")(lambda progress: None)


def test_varargs_cannot_be_validated():
    with pytest.raises(ImproperlyConfigured, match=r"\*args"):
        job("tests.varargs")(lambda progress, *args: None)


def test_a_kind_needs_the_progress_parameter():
    with pytest.raises(ImproperlyConfigured, match="Progress"):
        job("tests.noargs")(lambda: None)
