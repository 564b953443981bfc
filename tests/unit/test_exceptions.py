"""Errors cross the wire as data, and only allow-listed classes come back to life."""

import sys
import types

import pytest

from amqprpc.exceptions import (
    AmqpRpcError,
    IncorrectSignature,
    MethodNotFound,
    RemoteError,
    RpcTimeout,
    deserialize_error,
    remote_error,
    serialize_error,
)


def test_serialize_matches_nameko_format():
    data = serialize_error(ValueError("bad", 3))
    assert data == {"exc_type": "ValueError", "exc_path": "builtins.ValueError",
                    "exc_args": ["bad", 3], "value": "('bad', 3)"}


def test_unknown_types_become_remote_error():
    error = deserialize_error({"exc_type": "KeyError", "exc_path": "builtins.KeyError",
                               "exc_args": ["k"], "value": "'k'"})
    assert isinstance(error, RemoteError) and not isinstance(error, KeyError)
    assert (error.exc_type, error.value) == ("KeyError", "'k'")


def test_request_errors_map_by_name_from_nameko():
    error = deserialize_error({"exc_type": "MethodNotFound", "exc_path": "nameko.exceptions.MethodNotFound",
                               "exc_args": ["nope"], "value": "nope"})
    assert isinstance(error, MethodNotFound)


def test_marked_classes_are_rebuilt_only_when_already_imported():
    module = types.ModuleType("shop_errors")

    @remote_error
    class OutOfStock(Exception):
        pass

    OutOfStock.__module__ = "shop_errors"
    OutOfStock.__qualname__ = "OutOfStock"
    module.OutOfStock = OutOfStock
    data = serialize_error(OutOfStock("widget"))
    assert isinstance(deserialize_error(data), RemoteError)  # module not imported: no import happens
    sys.modules["shop_errors"] = module
    try:
        assert isinstance(deserialize_error(data), OutOfStock)
    finally:
        del sys.modules["shop_errors"]


def test_unmarked_classes_are_never_rebuilt():
    data = serialize_error(OSError("disk"))
    assert isinstance(deserialize_error(data), RemoteError)


def test_subclass_of_marked_class_is_not_marked():
    @remote_error
    class Base(Exception):
        pass

    class Child(Base):
        pass

    sys.modules[__name__].Child = Child  # type: ignore[attr-defined]
    Child.__qualname__ = "Child"
    try:
        assert isinstance(deserialize_error(serialize_error(Child("x"))), RemoteError)
    finally:
        del sys.modules[__name__].Child  # type: ignore[attr-defined]


@pytest.mark.parametrize("garbage", [None, "text", 5, ["list"]])
def test_garbage_error_payloads_become_remote_error(garbage):
    assert isinstance(deserialize_error(garbage), RemoteError)


def test_tree():
    assert issubclass(RpcTimeout, TimeoutError) and issubclass(RpcTimeout, AmqpRpcError)
    assert issubclass(IncorrectSignature, AmqpRpcError)
