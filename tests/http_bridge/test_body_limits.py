"""Bridge bodies (M6 at the edge): parsed only once admitted, within the decode limits, finite."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from amqprpc import Config, rpc
from http_bridge import BridgeSettings, create_app

from .support import FakeRpc, descriptor_of, run_app

JSON_TYPE = {"Content-Type": "application/json"}


class Orders:
    name = "orders"

    @rpc(http="POST /orders", public=True)
    def create(self, amount: float, lines: list[Any] | None = None) -> dict[str, Any]:
        return {}


@pytest.fixture
def setup(fed_registry):
    fed_registry.ingest(descriptor_of(Orders))

    def build(rpc: FakeRpc | None = None, config: Config | None = None, **settings: Any):
        rpc = rpc or FakeRpc()
        app = create_app(config or Config(), rpc_client=rpc, registry=fed_registry,  # type: ignore[arg-type]
                         settings=BridgeSettings(allow_anonymous=True, **settings))
        return app, rpc

    return build


async def refusal(client, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/orders", data=body, headers=JSON_TYPE)
    return response.status, (await response.json())["error"]


@pytest.mark.parametrize("body", [b'{"amount": 1e999}', b'{"amount": -1e400}', b'{"amount": NaN}',
                                  b'{"amount": Infinity}', b'{"amount": 1, "lines": [1e309]}'])
def test_m6_non_finite_numbers_are_400_and_never_sent(setup, body):
    app, fake = setup()

    async def scenario(client):
        status, error = await refusal(client, body)
        assert status == 400 and error["code"] == "invalid_json", error
        assert "NaN and Infinity" in error["message"]
        assert fake.calls == []

    run_app(app, scenario)


@pytest.mark.parametrize("body", ['{"amount": 1}'.encode("utf-16"), '{"amount": 1}'.encode("utf-32-le"),
                                  b'{"amount": 1, "x": "\xed\xa0\x80"}',
                                  b'{"amount": 1, "lines": ["\\ud800"]}'])
def test_m2_bodies_must_be_strict_utf8(setup, body):
    app, fake = setup()

    async def scenario(client):
        status, error = await refusal(client, body)
        assert status == 400 and error["code"] == "invalid_json", error
        assert fake.calls == []

    run_app(app, scenario)


def test_m6_bodies_past_the_decode_limits_name_the_limit(setup):
    config = Config(decode_max_items=100, decode_max_depth=8, decode_max_string=50, decode_max_digits=10)
    app, fake = setup(config=config)

    async def scenario(client):
        cases = [
            (json.dumps({"amount": 1, "lines": [{}] * 60}), 413, "decode_max_items"),
            (json.dumps({"amount": 1, "lines": ["x" * 51]}), 413, "decode_max_string"),
            ('{"amount": 1, "lines": ' + "[" * 9 + "]" * 9 + "}", 400, "decode_max_depth"),
            ('{"amount": 12345678901}', 400, "decode_max_digits"),
        ]
        for body, status, limit in cases:
            got, error = await refusal(client, body.encode())
            assert (got, error["details"][0]["limit"]) == (status, limit), error
            assert limit in error["message"]
        ok = await client.post("/orders", json={"amount": 2.5, "lines": [[1, 2]] * 10})
        assert ok.status == 200
        assert [call["kwargs"] for call in fake.calls] == [{"amount": 2.5, "lines": [[1, 2]] * 10}]

    run_app(app, scenario)


def test_m6_a_body_is_parsed_only_after_the_inflight_cap_admits_it(setup, monkeypatch):
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(service, method, kwargs, context):
        entered.set()
        await release.wait()
        return {}

    app, _ = setup(FakeRpc(hold), max_inflight=1)
    parsed: list[bytes] = []
    import http_bridge.gateway as gateway_module
    real_parse = gateway_module.parse_json_body

    def counting_parse(data, limits):
        parsed.append(data)
        return real_parse(data, limits)

    monkeypatch.setattr(gateway_module, "parse_json_body", counting_parse)

    async def scenario(client):
        held = asyncio.ensure_future(client.post("/orders", json={"amount": 1}))
        await asyncio.wait_for(entered.wait(), 5)
        status, error = await refusal(client, b'{"amount": 2, "lines": [' + b"0," * 1000 + b"0]}")
        assert (status, error["code"]) == (503, "overloaded")
        assert len(parsed) == 1  # the held call's body only: the refused one was never parsed
        release.set()
        assert (await held).status == 200

    run_app(app, scenario)


def test_m6_a_soap_envelope_is_parsed_only_after_the_inflight_cap_admits_it(setup, monkeypatch):
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(service, method, kwargs, context):
        entered.set()
        await release.wait()
        return {}

    app, _ = setup(FakeRpc(hold), max_inflight=1)
    import http_bridge.soap.endpoint as endpoint_module
    parsed: list[bytes] = []
    real_parse = endpoint_module._parse

    async def counting_parse(body, max_depth, max_elements):
        parsed.append(body)
        return await real_parse(body, max_depth, max_elements)

    monkeypatch.setattr(endpoint_module, "_parse", counting_parse)

    async def scenario(client):
        held = asyncio.ensure_future(client.post("/orders", json={"amount": 1}))
        await asyncio.wait_for(entered.wait(), 5)
        response = await client.post("/soap/orders", data=b"<not-even-xml",
                                     headers={"Content-Type": "text/xml"})
        text = await response.text()
        assert response.status == 500 and "Overloaded" in text, text
        assert parsed == []
        release.set()
        assert (await held).status == 200

    run_app(app, scenario)
