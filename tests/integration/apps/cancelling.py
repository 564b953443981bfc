"""Services for the cancellation tests (tests/integration/test_cancellation.py).

Names come from ``CANCEL_PREFIX`` (``<prefix>_a`` → ``<prefix>_b`` → ``<prefix>_c``), and
each worker appends what it saw to ``CANCEL_LOG``, one line per fact, with its own clock:
``ran <key> <unix time>`` when a handler starts, ``observed <key>@<hop> <unix time>`` when
it sees its call cancelled (a hop of A → B → C: when it stops, cancelled or its own
nested call ended at the shared deadline).
"""

import asyncio
import os
import time

from amqprpc import CallContext, RpcProxy, rpc

PREFIX = os.environ.get("CANCEL_PREFIX", "cancel")
LOG = os.environ.get("CANCEL_LOG", os.devnull)


def note(*words: object) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, words)) + f" {time.time():.6f}\n").encode())
    finally:
        os.close(fd)


class C:
    name = f"{PREFIX}_c"
    ctx = CallContext()

    @rpc(http=True, public=True)
    def record(self, key: str) -> None:
        note("ran", key)

    @rpc(http=True, public=True)
    def busy(self, key: str, seconds: float) -> str:
        """A thread handler that checks ``ctx.cancelled`` every 2 ms."""
        note("ran", key)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.ctx.cancelled:
                note("observed", f"{key}@c")
                self.ctx.raise_if_cancelled()
            time.sleep(0.002)
        return "done"

    @rpc(http=True, public=True)
    async def busy_async(self, key: str, seconds: float) -> str:
        note("ran", key)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            note("observed", f"{key}@c")
            raise
        return "done"


class B:
    name = f"{PREFIX}_b"
    c = RpcProxy(f"{PREFIX}_c")

    @rpc
    def chain(self, key: str, seconds: float) -> str:
        try:
            return self.c.busy(key, seconds)
        except BaseException:  # cancelled, or its own nested call ended at the same deadline
            note("observed", f"{key}@b")
            raise

    @rpc
    async def chain_async(self, key: str, seconds: float) -> str:
        try:
            return await self.c.busy_async(key, seconds)
        except BaseException:
            note("observed", f"{key}@b")
            raise


class A:
    name = f"{PREFIX}_a"
    b = RpcProxy(f"{PREFIX}_b")

    @rpc
    def chain(self, key: str, seconds: float) -> str:
        try:
            return self.b.chain(key, seconds)
        except BaseException:  # cancelled, or its own nested call ended at the same deadline
            note("observed", f"{key}@a")
            raise

    @rpc
    async def chain_async(self, key: str, seconds: float) -> str:
        try:
            return await self.b.chain_async(key, seconds)
        except BaseException:
            note("observed", f"{key}@a")
            raise
