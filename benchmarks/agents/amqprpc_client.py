"""amqprpc load client: ``ClusterRpcClient`` with a FIFO window of ``call_async`` futures.

Modes: ``window`` (sequential when the window is 1) and ``inflight`` (waves of N calls all
issued before any reply is taken, for at least ``min_seconds`` and at most ``max_waves``:
the client's memory must stay bounded).
"""

from __future__ import annotations

import gc

import _common

from amqprpc import ClusterRpcClient


def main() -> None:
    p = _common.params()
    payload = "x" * p["payload"]
    with ClusterRpcClient(p["url"], timeout=p.get("timeout")) as client:  # None: the default
        method = getattr(client, p["service"]).echo
        if p["mode"] == "inflight":
            inflight(client, method, payload, p)
            return
        _common.fifo_window(lambda: method.call_async(payload), lambda f: f.result(), payload,
                            p["window"], p["warmup"], p["duration"])


def inflight(client: ClusterRpcClient, method: object, payload: str, p: dict) -> None:
    import time

    call_async = method.call_async  # type: ignore[attr-defined]
    for _ in range(p["warmup"]):
        call_async(payload).result()
    gc.collect()
    baseline = _common.rss_kib()
    _common.emit("ready", warmup_errors=0)
    _common.wait_go()
    waves = []
    started = time.perf_counter()
    while len(waves) < p["max_waves"] and (len(waves) < 2 or
                                             time.perf_counter() - started < p["min_seconds"]):
        t0 = time.perf_counter()
        futures = [call_async(payload) for _ in range(p["calls"])]
        issued_rss = _common.rss_kib()
        errors = sum(f.result() != payload for f in futures)
        del futures
        gc.collect()
        waves.append({"issued_rss_mib": issued_rss / 1024, "after_rss_mib": _common.rss_kib() / 1024,
                      "seconds": time.perf_counter() - t0, "errors": errors,
                      "pending_after": client._caller.pending_count(),
                      # diagnostics: deadline timers still queued in the I/O thread
                      "timers_after": len(getattr(client._connection, "_timers", ()))})
    elapsed = time.perf_counter() - started
    _common.emit("done")
    _common.emit("result", calls=len(waves) * p["calls"], seconds=elapsed,
                 errors=sum(w["errors"] for w in waves), baseline_rss_mib=baseline / 1024,
                 hwm_mib=_common.rss_kib("VmHWM") / 1024, waves=waves)


if __name__ == "__main__":
    main()
