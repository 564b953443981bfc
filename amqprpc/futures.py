"""The one future settler: confirms, replies and deadlines all resolve futures through it."""

from __future__ import annotations

from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["settle"]


def settle(future: Future[Any], error: BaseException | None = None, result: Any = None) -> None:
    """Resolve ``future`` with ``error`` or ``result``; a no-op if it is already done
    (its owner cancelled it, or a deadline or stop resolved it first)."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
