"""Generated client stubs: mypy passes a right call and fails a wrong one (run for real)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from click.testing import CliRunner

from amqprpc.cli import main

RIGHT = """
    import asyncio
    from typing import Any

    from stubs import typed, typed_async
    from stubs.orders import Orders

    def sync_caller(client: Any) -> None:
        rpc = typed(client)
        order = rpc.orders.create(order={"id": "0b4c...", "placed_at": "2026-12-03T15:04:05Z",
                                         "items": [{"sku": "a", "qty": 2, "price": "19.99"}]},
                                  channel="shop")
        total: str = rpc.orders.receipt(order)["total"]
        assert rpc.orders.add(1, b=2) + 1 and total
        rpc.shipping.track(order_id="0b4c...")

    async def async_caller(client: Any) -> int:
        return await typed_async(client).orders.add(1, 2)

    class Relay:  # in a service: the RpcProxy typed by the stub's Protocol
        orders: Orders

        def forward(self) -> int:
            return self.orders.add(a=1, b=2)
"""

WRONG = """
    from typing import Any

    from stubs import typed

    def caller(client: Any) -> None:
        rpc = typed(client)
        rpc.orders.add(1, "two")                                  # line 8: wrong type
        rpc.orders.create(ordr={})                                # line 9: wrong name
        rpc.orders.create(order={"id": "x"}, channel="fax")       # line 10: missing keys, not a channel
        rpc.orders.cancel(1)                                      # line 11: no such method
        rpc.billing.charge(1)                                     # line 12: no such service
"""


def test_mypy_checks_calls_through_generated_stubs(tmp_path):
    result = CliRunner().invoke(main, ["stubs", "--module", "tests.contract_services:Orders",
                                       "--module", "tests.contract_services:Shipping",
                                       "-o", str(tmp_path / "stubs")])
    assert result.exit_code == 0, result.output
    (tmp_path / "right.py").write_text(textwrap.dedent(RIGHT))
    (tmp_path / "wrong.py").write_text(textwrap.dedent(WRONG))
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
         "--config-file", "/dev/null", "stubs", "right.py", "wrong.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if not line.startswith("wrong.py")], run.stdout
    lines = {int(line.split(":")[1]) for line in errors}
    assert lines == {8, 9, 10, 11, 12}, run.stdout
