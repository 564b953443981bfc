"""AMQP frames in and out of the socket, fewer syscalls than py-amqp makes on its own.

``Cork`` batches the frames written in one go into one ``sendall``; ``read_frames`` reads
what the socket holds with one ``recv`` and dispatches every complete frame. They work on
py-amqp's connection and transport objects, handed in by :mod:`.pyamqp` (which alone
imports ``amqp``); the private attributes they use are checked against the pinned py-amqp
by ``tests/unit/transport/test_pyamqp_patches.py``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

RECV_SIZE = 256 * 1024  # per read_frames call; callers keep one buffer of this size per connection
_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_OVERHEAD = 8  # 7 header bytes + the frame-end octet
_FRAME_END = 0xCE


class BadFrame(ConnectionError):
    """A frame that does not end where its header says: the stream is corrupt; reconnect."""


class Cork:
    """Collect the frames written during one batch and send them with one ``sendall``.

    py-amqp writes each publish and ack with its own syscall; batching a wake-up's worth
    roughly halves the I/O thread's CPU per message. Frames arrive as views of py-amqp's
    shared buffer, so each is copied.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._real_write: Callable[[Any], None] = transport._write

    def _collect(self, data: Any) -> None:
        self._chunks.append(bytes(data))

    def flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._real_write(data)

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._transport._write = self._real_write
        try:
            yield
        finally:
            self._transport._write = self._collect

    def __enter__(self) -> Cork:
        self._transport._write = self._collect
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._transport._write = self._real_write
        if exc_info[0] is None:
            self.flush()


def read_frames(conn: Any, into: memoryview) -> None:
    """Read what the socket holds in one ``recv`` and dispatch every complete frame.

    py-amqp's own reader makes three ``recv`` calls and two ``settimeout`` calls per
    frame (nine syscalls and more per delivery); this makes one per wake-up. The
    unparsed tail stays in py-amqp's ``_read_buffer``, where its own reads (the
    synchronous waits of declares and cancels, made outside this method) find it.
    Frame callbacks never wait for the broker, so they never read the socket
    themselves while frames are held here. It reads into a buffer kept for the
    connection: ``recv(256 KiB)`` would allocate (mmap) and free 256 KiB per wake-up,
    ~10 µs each.
    """
    transport = conn.transport
    try:
        sock = transport.sock  # gevent's socket would wait despite MSG_DONTWAIT: use the OS one
        size = getattr(sock, "_sock", sock).recv_into(into, len(into), socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return
    if not size:
        raise ConnectionResetError("the broker closed the connection")
    data = into[:size].tobytes()
    held = transport._read_buffer
    buffer = held + data if held else data
    on_frame = conn.on_inbound_frame
    offset, end = 0, len(buffer)
    try:
        while end - offset >= _FRAME_OVERHEAD:
            frame_type, channel, size = _FRAME_HEADER.unpack_from(buffer, offset)
            frame_end = offset + 7 + size
            if frame_end >= end:
                break
            if buffer[frame_end] != _FRAME_END:
                raise BadFrame(
                    f"frame end {buffer[frame_end]:#04x} where 0xce was expected")
            payload = buffer[offset + 7:frame_end]
            offset = frame_end + 1
            on_frame((frame_type, channel, payload))
    finally:
        transport._read_buffer = buffer[offset:]
