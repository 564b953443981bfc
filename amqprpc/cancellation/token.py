"""One call's cancellation: a flag that turns true once, and what runs when it does.

A worker's ``CancelToken`` is cancelled by the I/O thread (a cancel message arrived) while
the handler runs on a pool thread or the container's loop, so it holds no lock: the flag is
set before the callbacks are copied, and whoever adds a callback or watches a future checks
the flag after adding it, so each callback runs (at least once; cancelling is idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["CancelToken", "run_cancellable"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
_PRUNE_AT = 32  # watched futures kept before the finished ones are dropped


class CancelToken:
    """Cancelled once; then every callback runs and every watched future is cancelled."""

    __slots__ = ("_callbacks", "_futures", "cancelled", "cancelled_at", "reason")

    def __init__(self) -> None:
        self.cancelled = False
        self.reason = ""
        self.cancelled_at: float | None = None  # unix time of the cancel, as this process saw it
        # Made on first use: most calls are never cancelled and make no nested call.
        self._callbacks: list[Callable[[], None]] | None = None
        self._futures: list[Future[Any]] | None = None

    def cancel(self, reason: str = "cancelled") -> bool:
        """Flip the flag (once) and run the callbacks; False if it was already cancelled."""
        if self.cancelled:
            return False
        self.reason = reason
        self.cancelled_at = time.time()
        self.cancelled = True
        for future in list(self._futures or ()):
            future.cancel()
        for callback in list(self._callbacks or ()):
            _run(callback)
        return True

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on cancel (at once if already cancelled)."""
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)
        if self.cancelled:
            _run(callback)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        try:
            if self._callbacks is not None:
                self._callbacks.remove(callback)
        except ValueError:
            pass

    def watch(self, future: Future[Any]) -> None:
        """Cancel ``future`` (a nested call) with this token; finished ones are forgotten."""
        futures = self._futures
        if futures is None:
            futures = self._futures = []
        elif len(futures) >= _PRUNE_AT:
            futures[:] = [f for f in futures if not f.done()]
        futures.append(future)
        if self.cancelled:
            future.cancel()


async def run_cancellable(token: CancelToken, fn: Callable[..., Awaitable[T]], *args: Any,
                          **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)``; a cancel of ``token`` cancels it at its next await.

    Only the handler is cancelled, never the hooks around it: once it has returned, a late
    cancel does nothing. The task's cancel request is taken back afterwards (``uncancel``),
    so ``asyncio.timeout`` in a later hook still works.
    """
    import asyncio  # here, not at the top: a worker with no async handler never loads it

    if token.cancelled:
        raise asyncio.CancelledError(f"cancelled before it started ({token.reason})")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    state = {"active": True, "requested": False}

    def cancel_task() -> None:  # on the loop
        if state["active"] and not task.done():
            state["requested"] = True
            task.cancel(f"its caller gave up ({token.reason})")

    def on_cancel() -> None:  # any thread
        loop.call_soon_threadsafe(cancel_task)

    token.add_callback(on_cancel)
    try:
        return await fn(*args, **kwargs)
    finally:
        state["active"] = False
        token.remove_callback(on_cancel)
        if state["requested"] and task.cancelling():
            task.uncancel()


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        _log.exception("a cancel callback failed")
