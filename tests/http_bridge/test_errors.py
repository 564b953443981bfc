"""The error table is complete: every error a call can raise has a deliberate status."""

from __future__ import annotations

import inspect

import amqprpc.exceptions as exceptions
from amqprpc import RemoteError
from http_bridge.errors import ERROR_TABLE, ErrorContext, map_error


def test_every_call_error_has_a_status():
    mapped = {exc_type for exc_type, *_ in ERROR_TABLE}
    call_errors = {
        cls for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.AmqpRpcError)
        and cls not in (exceptions.AmqpRpcError, exceptions.ConfigError, exceptions.RemoteError,
                        exceptions.RequestError)
    }
    unmapped = {cls for cls in call_errors if not any(issubclass(cls, m) for m in mapped)}
    assert not unmapped, f"no HTTP status for {unmapped}"
    for cls in call_errors:
        error = map_error(cls("users") if cls is exceptions.UnknownService else cls("x"))
        assert error.status != 500, cls


def test_remote_error_lookup_order():
    context = ErrorContext(service_errors={"NotFound": 404}, bridge_errors={"NotFound": 410, "Gone": 410},
                           expected=("Invalid",), expected_status=422)
    assert map_error(RemoteError("NotFound", "no"), context).status == 404  # the service's table first
    assert map_error(RemoteError("Gone", "old"), context).status == 410
    invalid = map_error(RemoteError("Invalid", "bad input"), context)
    assert (invalid.status, invalid.code, invalid.message) == (422, "invalid", "bad input")
    internal = map_error(RemoteError("KeyError", "'secret'"), context)
    assert internal.status == 500 and "secret" not in internal.message
    assert map_error(ZeroDivisionError("x")).status == 500
