"""What pydantic validation costs a typed @rpc call on the worker, per call.

``python -m benchmarks.validation_cost [--rounds 8] [--calls 20000]``

The worker's own steps for one request, with and without a contract (docs/contracts.md):
binding the arguments to the signature (what every call pays, ``Rpc.check_signature``),
then for the typed method validating them (``MethodContract.validate``) and dumping the
result by the return hint (``MethodContract.dump``). Both methods take the same small
order (three scalars and a list of two items) as plain JSON-decoded data; the plain one
is declared ``dict`` and returns what it got, the typed one a pydantic model with a UUID,
a datetime and a Decimal inside. The two run interleaved, round by round, which goes
first alternating, and the figure is the median over rounds of (typed - plain) µs/call.
The broker is left out: its cost is the same for both and only adds noise.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import inspect
import statistics
import time
import uuid
from typing import Any

from pydantic import BaseModel

from amqprpc.contracts.validation import method_contract


class Line(BaseModel):
    sku: str
    qty: int
    price: decimal.Decimal


class SmallOrder(BaseModel):
    id: uuid.UUID
    customer: str
    placed_at: datetime.datetime
    lines: list[Line]


class Service:
    def plain(self, order: dict[str, Any]) -> dict[str, Any]:
        return order

    def typed(self, order: SmallOrder) -> SmallOrder:
        return order


PAYLOAD = {"id": str(uuid.uuid4()), "customer": "c-42", "placed_at": "2026-12-03T15:04:05.123456+00:00",
           "lines": [{"sku": "a-1", "qty": 2, "price": "19.99"}, {"sku": "b-2", "qty": 1, "price": "0.10"}]}


def per_call_us(method: Any, contract: Any, calls: int) -> float:
    signature = inspect.signature(method)
    started = time.perf_counter()
    for _ in range(calls):
        bound = signature.bind(None, order=PAYLOAD)
        if contract is None:
            result = method(None, *bound.args[1:], **bound.kwargs)
        else:
            args, kwargs = contract.validate(bound)
            result = contract.dump(method(None, *args, **kwargs))
    assert result
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    contract = method_contract(Service.typed, "bench.typed")
    assert contract is not None and method_contract(Service.plain, "bench.plain") is None
    plain, typed = [], []
    for index in range(args.rounds):
        runs = [(plain, Service.plain, None), (typed, Service.typed, contract)]
        for bucket, method, which in runs if index % 2 == 0 else reversed(runs):
            bucket.append(per_call_us(method, which, args.calls))
        print(f"round {index + 1}: plain {plain[-1]:.2f} µs/call, typed {typed[-1]:.2f} µs/call")
    extra = statistics.median(t - p for t, p in zip(typed, plain, strict=True))
    print(f"validation + dump of a small model: +{extra:.2f} µs per call (median of {args.rounds} rounds; "
          f"plain bind {statistics.median(plain):.2f} µs, typed {statistics.median(typed):.2f} µs)")


if __name__ == "__main__":
    main()
