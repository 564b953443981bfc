"""Waking a thread that sleeps in ``select()``: the I/O thread's self-pipe."""

from __future__ import annotations

import socket


class Wakeup:
    """A self-pipe that makes ``select()`` return when another thread has work for it."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False  # a byte is on its way: later wakes of the same round are free

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        # Callers queue their work before waking, and the I/O thread drains the outbox
        # after clear(), so skipping the send never strands queued work. Under load this
        # saves a syscall and a GIL hand-off per publish.
        if self._pending:
            return
        self._pending = True
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wake-up is pending already

    def clear(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        # After the bytes are gone: a wake() that saw True queued its work before, and the
        # caller drains the outbox after this; one that sees False from here on sends again.
        self._pending = False

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
