"""Wire details that Nameko 2.x callers depend on (proved live in tests/compat/)."""

import pytest

from amqprpc.exceptions import (
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    deserialize_error,
    serialize_error,
)


@pytest.mark.parametrize("cls", [MethodNotFound, IncorrectSignature, MalformedRequest])
def test_request_errors_carry_nameko_paths(cls):
    """Nameko rebuilds its request errors only by exact exc_path (its registry)."""
    data = serialize_error(cls("svc.nope: no such @rpc method"))
    assert data == {"exc_type": cls.__name__, "exc_path": f"nameko.exceptions.{cls.__name__}",
                    "exc_args": ["svc.nope: no such @rpc method"],
                    "value": "svc.nope: no such @rpc method"}
    assert type(deserialize_error(data)) is cls  # and amqprpc callers still rebuild them


def test_subclasses_keep_their_own_path():
    class Custom(MethodNotFound):
        pass

    path = serialize_error(Custom("x"))["exc_path"]
    assert path == f"{__name__}.test_subclasses_keep_their_own_path.<locals>.Custom"
