"""Arguments validated by pydantic on the worker, once, before the handler runs.

Only methods whose hints name a *contract type* are validated: a pydantic model, a
``TypedDict``, a dataclass, ``Literal``, an ``Enum``, ``datetime``/``date``/``time``,
``UUID`` or ``Decimal``, alone or inside lists, dicts, tuples and unions. Such a method gets
a ``MethodContract`` at setup: one ``TypeAdapter`` per annotated parameter and one for the
return value. Methods with plain hints (``int``, ``dict``, ``list[str]``) and every method
when pydantic is not installed get ``None`` and run exactly as before, at the same cost.

Values arrive as JSON does (a datetime as an ISO string, a Decimal as a string), so the
adapters validate in pydantic's lax mode and the handler sees real ``datetime``, ``Decimal``
and model instances. The result is dumped by the return adapter in JSON mode, the same for
JSON and msgpack replies, so a model becomes the object its schema describes.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import logging
import types
import typing
import uuid
from typing import Any

from ..exceptions import ValidationError

_log = logging.getLogger(__name__)
_SCALARS = (datetime.datetime, datetime.date, datetime.time, uuid.UUID, decimal.Decimal)
_MAX_ERRORS = 50  # listed in one reply; a hostile request cannot make it huge


class MethodContract:
    """The adapters of one method: ``validate`` its bound arguments, ``dump`` its result."""

    def __init__(self, name: str, adapters: dict[str, Any], returns: Any | None) -> None:
        import pydantic

        self._name = name
        self._adapters = adapters
        self._returns = returns
        self._error_type = pydantic.ValidationError

    def validate(self, bound: inspect.BoundArguments) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as the handler should see them, or ValidationError naming each field."""
        arguments = bound.arguments
        errors: list[dict[str, Any]] = []
        for name, adapter in self._adapters.items():
            if name not in arguments:
                continue
            try:
                arguments[name] = adapter.validate_python(arguments[name])
            except self._error_type as exc:
                errors.extend({"loc": [name, *exc_item["loc"]], "msg": exc_item["msg"],
                               "type": exc_item["type"]}
                              for exc_item in exc.errors(include_url=False, include_input=False))
        if errors:
            raise ValidationError(_message(self._name, errors), errors[:_MAX_ERRORS])
        return list(bound.args[1:]), dict(bound.kwargs)

    def dump(self, result: Any) -> Any:
        """The result as JSON-ready data by the return hint (unchanged without one)."""
        if self._returns is None:
            return result
        return self._returns.dump_python(result, mode="json", warnings=False)


def method_contract(fn: Any, name: str) -> MethodContract | None:
    """The contract of a method, or None: pydantic missing, or no hint needs it."""
    hints = _hints(fn)
    if not any(needs_contract(hint) for hint in hints.values()):
        return None
    try:
        import pydantic
    except ImportError:
        return None
    signature = inspect.signature(fn)
    adapters: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.name in hints and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            adapter = _adapter(pydantic, hints[param.name], f"{name}({param.name})")
            if adapter is not None:
                adapters[param.name] = adapter
    returns = hints.get("return")
    return_adapter = _adapter(pydantic, returns, f"{name} -> return") \
        if returns is not None and needs_contract(returns) else None
    if not adapters and return_adapter is None:
        return None
    return MethodContract(name, adapters, return_adapter)


def _adapter(pydantic: Any, hint: Any, where: str) -> Any | None:
    """A TypeAdapter, or None (with a warning) for a hint pydantic refuses: the service
    still starts and that value passes unchecked, as it did before pydantic was installed."""
    try:
        return pydantic.TypeAdapter(hint)
    except Exception as exc:
        _log.warning("%s: not validated, pydantic cannot use the hint %r: %s", where, hint,
                     str(exc).splitlines()[0])
        return None


def needs_contract(hint: Any, _depth: int = 0) -> bool:
    """Whether a hint names a type only a validator turns JSON into (see the module doc)."""
    if _depth > 8 or hint is None:
        return False
    if isinstance(hint, type):
        return (issubclass(hint, _SCALARS) or issubclass(hint, enum.Enum) or _is_typeddict(hint)
                or dataclasses.is_dataclass(hint) or hasattr(hint, "model_validate"))
    origin = typing.get_origin(hint)
    if origin is typing.Literal or origin is typing.Annotated:
        return True  # Annotated: constraints such as pydantic's Field(gt=0)
    if origin is None and not isinstance(hint, types.UnionType):
        return False
    return any(needs_contract(arg, _depth + 1) for arg in typing.get_args(hint)
               if arg is not Ellipsis and not isinstance(arg, str | int | float | bool))


def _is_typeddict(hint: type) -> bool:
    """``typing`` and ``typing_extensions`` TypedDicts alike (pydantic needs the latter on 3.11)."""
    return typing.is_typeddict(hint) or (issubclass(hint, dict) and hasattr(hint, "__required_keys__"))


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an unresolvable forward reference: validate nothing, as before
        return {}


def _message(method: str, errors: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"{field_path(error['loc'])}: {error['msg']}" for error in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"{method}: {len(errors)} invalid argument value(s): {shown}{more}"


def field_path(loc: list[Any] | tuple[Any, ...]) -> str:
    """``["order", "items", 0, "qty"]`` -> ``order.items[0].qty``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
