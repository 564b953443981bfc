"""Argument binding: every invalid field is reported at once, each named by where it came from."""

from __future__ import annotations

from typing import Any

import pytest

from amqprpc import rpc
from amqprpc.discovery import parse_descriptor
from http_bridge.errors import ApiError, error_body
from http_bridge.params import bind_arguments, problems, validate

from .support import descriptor_of


class Shop:
    name = "shop"

    @rpc(http="PUT /orders/{order_id}")
    def update(self, order_id: int, label: str, count: int, tags: list[str] | None = None) -> None:
        """Change an order."""

    @rpc(http="GET /orders")
    def search(self, limit: int, sort: str = "id", ids: list[int] | None = None) -> None:
        """Find orders."""


def method(name: str):
    descriptor = parse_descriptor(descriptor_of(Shop))
    return next(m for m in descriptor.methods if m.name == name)


def errors_of(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(ApiError) as caught:
        call()
    error = caught.value
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details is not None
    return [(detail["field"], detail["problem"]) for detail in error.details]


def test_every_invalid_field_is_listed_with_its_source():
    found = errors_of(lambda: bind_arguments(
        method("update"), {"order_id": "x"}, [("dry", "1")],
        {"label": 5, "tags": ["a", 2, 3], "colour": "red"}))
    assert [field for field, _ in found] == [
        "path.order_id", "query.dry", "body.label", "body.tags[1]", "body.tags[2]", "body.colour",
        "body.count"]
    assert dict(found)["body.count"] == "required parameter is missing"
    assert dict(found)["path.order_id"] == "expected an integer, got 'x'"


def test_query_names_and_missing_query_parameters():
    found = errors_of(lambda: bind_arguments(method("search"), {}, [("ids", "1"), ("ids", "two"),
                                                                    ("sort", "a"), ("sort", "b")], None))
    assert [field for field, _ in found] == ["query.ids[1]", "query.sort", "query.limit"]


def test_a_name_given_twice_is_named_where_it_was_given_again():
    found = errors_of(lambda: bind_arguments(method("update"), {"order_id": "1"}, [],
                                             {"order_id": 1, "label": "x", "count": 1}))
    assert found == [("body.order_id", "also given in the path")]


def test_valid_arguments_bind():
    kwargs = bind_arguments(method("search"), {}, [("limit", "5"), ("ids", "1"), ("ids", "2")], None)
    assert kwargs == {"limit": 5, "ids": [1, 2]}


def test_the_error_keeps_its_shape_and_says_how_many():
    with pytest.raises(ApiError) as caught:
        bind_arguments(method("update"), {"order_id": "1"}, [], {"label": 1})
    body = error_body(caught.value, "req-1")["error"]
    assert set(body) == {"status", "code", "message", "id", "details"}
    assert body["message"] == ("2 invalid fields: body.label: expected string, got integer; "
                               "body.count: required parameter is missing")


def test_problems_lists_all_and_validate_raises_the_first():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
              "required": ["c"]}
    assert [p.where for p in problems({"a": "x", "b": 1}, schema, "v")] == ["v.c", "v.a", "v.b"]
    with pytest.raises(Exception, match=r"v\.c: required field is missing"):
        validate({"a": "x", "b": 1}, schema, "v")


def test_a_hostile_body_gets_a_bounded_list():
    found = errors_of(lambda: bind_arguments(method("update"), {"order_id": "1"}, [],
                                             {"label": "x", "count": 1, "tags": list(range(10_000))}))
    assert len(found) == 50
