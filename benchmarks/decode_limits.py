"""What the decode limits cost, and what they save: one run, limits on and off interleaved.

``python -m benchmarks.decode_limits [--rounds 7] [--seconds 0.5]``

*Cost*: microseconds per decode of ordinary bodies (a small request, 100, 4,000 and 9,000
records) in JSON and msgpack, through ``serialization.decode`` with the default
``DecodeLimits`` ("on") and through the decoder as it was before them ("off": the size
check, then ``json.loads`` / ``msgpack.unpackb``), alternating round by round; the best
round of each is reported (other load on the machine only ever adds time).

*Saving*: the peak of traced Python allocations (``tracemalloc``) while a hostile 1 MiB
body is decoded: the decoder before (it builds every object) against now (refused).
No broker is involved.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack

from amqprpc import MalformedRequest
from amqprpc.serialization import JSON, MSGPACK, DecodeLimits, decode

MiB = 1024 * 1024
LIMITS = DecodeLimits()


def records(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"user {i}", "email": f"u{i}@example.com", "score": i * 1.5,
             "tags": ["a", "b"], "active": i % 2 == 0} for i in range(count)]


def ordinary_bodies() -> dict[str, bytes]:
    small = {"args": [42], "kwargs": {"user_id": 7, "amount": 12.5, "note": "déjà vu"}}
    bodies: dict[str, bytes] = {}
    for name, value in (("small request", small), ("100 records", {"args": [records(100)], "kwargs": {}}),
                        ("4,000 records", {"args": [records(4000)], "kwargs": {}}),
                        ("9,000 records (99k items)", {"args": [records(9000)], "kwargs": {}})):
        bodies[f"JSON {name}"] = json.dumps(value, separators=(",", ":")).encode()
        bodies[f"msgpack {name}"] = msgpack.packb(value, use_bin_type=True)
    # The echo benchmark's 64 KiB payload: one long string, so the scans are all there is.
    echo = {"args": ["x" * 65536], "kwargs": {}}
    bodies["JSON 64 KiB string"] = json.dumps(echo, separators=(",", ":")).encode()
    bodies["msgpack 64 KiB string"] = msgpack.packb(echo, use_bin_type=True)
    return bodies


def hostile_bodies() -> dict[str, bytes]:
    return {
        "JSON [{},{},...]": b"[" + b"{}," * (MiB // 3 - 1) + b"{}]",
        "JSON [[[...]]] 500k deep": b"[" * (MiB // 2) + b"]" * (MiB // 2),
        "msgpack array of empty maps": b"\xdd" + (MiB - 5).to_bytes(4, "big") + b"\x80" * (MiB - 5),
        "msgpack nested empty arrays": msgpack.packb([[[]] * 15] * (MiB // 17)),
    }


def unlimited(body: bytes, content_type: str) -> Any:
    """The decoder before the limits: a size check, then the plain library call."""
    if len(body) > LIMITS.max_size:
        raise MalformedRequest("too large")
    if content_type == JSON:
        return json.loads(body)
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def limited(body: bytes, content_type: str) -> Any:
    return decode(body, content_type, LIMITS)


def per_call_us(decoder: Callable[[bytes, str], Any], body: bytes, content_type: str,
                seconds: float) -> float:
    calls = 0
    started = time.perf_counter()
    until = started + seconds
    while time.perf_counter() < until:
        decoder(body, content_type)
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6


def peak_bytes(decoder: Callable[[bytes, str], Any], body: bytes, content_type: str) -> int:
    tracemalloc.start()
    try:
        try:
            decoder(body, content_type)
        except (MalformedRequest, RecursionError, ValueError):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_limits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="per cell and round")
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"msgpack {msgpack.version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n| body | size | limits off µs | limits on µs | on / off |\n|---|---|---|---|---|")
    for name, body in ordinary_bodies().items():
        content_type = JSON if name.startswith("JSON") else MSGPACK
        assert limited(body, content_type) == unlimited(body, content_type)
        off: list[float] = []
        on: list[float] = []
        for _ in range(args.rounds):
            off.append(per_call_us(unlimited, body, content_type, args.seconds))
            on.append(per_call_us(limited, body, content_type, args.seconds))
        # Best of the rounds (as timeit advises): the machine's other load only adds time.
        print(f"| {name} | {len(body):,} B | {min(off):,.1f} | {min(on):,.1f} | {min(on) / min(off):.2f}x |")
    print("\n| hostile 1 MiB body | before: peak MB | now: peak MB | now answers |\n|---|---|---|---|")
    for name, body in hostile_bodies().items():
        content_type = JSON if name.startswith("JSON") else MSGPACK
        body = body[:MiB]
        try:
            limited(body, content_type)
            answer = "decoded"
        except MalformedRequest as exc:
            answer = str(exc)[:70]
        print(f"| {name} | {peak_bytes(unlimited, body, content_type) / 1e6:.1f} | "
              f"{peak_bytes(limited, body, content_type) / 1e6:.1f} | {answer} |")


if __name__ == "__main__":
    main()
