"""The bridge in front of a pydantic-typed service on real workers: field errors are a 422
naming each field where the client put it; the OpenAPI spec carries the models' schemas."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
from aiohttp.test_utils import TestClient

from amqprpc import rpc
from http_bridge import BridgeSettings
from tests.contract_services import Order, sample_order

from .test_end_to_end import INTERVAL, poll, serve_bridge

pytestmark = pytest.mark.integration
ASYNCAPI = jsonschema.Draft7Validator(json.loads(
    (Path(__file__).parents[1] / "data" / "asyncapi-3.0.0.schema.json").read_text()))


def typed_service(name: str) -> type:
    class TypedOrders:
        @rpc(http=f"POST /{name}/orders", public=True)
        def create(self, order: Order, channel: Literal["web", "shop"] = "web") -> Order:
            return order

        @rpc(http=f"GET /{name}/orders/{{order_id}}", public=True)
        def get(self, order_id: int, colour: Literal["red", "blue"] = "red") -> dict[str, object]:
            return {"id": order_id, "colour": colour}

    TypedOrders.name = name
    return TypedOrders


def test_field_errors_are_422_with_paths(container_factory, unique_name, amqp_uri):
    name = unique_name("typed")
    order = sample_order()
    plain = order.model_dump(mode="json")

    async def scenario(client: TestClient) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: container_factory(typed_service(name), discovery_interval=INTERVAL))
        await poll(client, f"/{name}/orders/1", 200, 5)

        response = await client.post(f"/{name}/orders", json={"order": plain})
        assert response.status == 200
        assert Order.model_validate(await response.json()) == order

        # qty > 0 is a constraint only the service's pydantic model knows: the worker finds it.
        bad = {**plain, "items": [{**plain["items"][0], "qty": 0}, plain["items"][1]]}
        response = await client.post(f"/{name}/orders", json={"order": bad, "channel": "web"})
        error = (await response.json())["error"]
        assert response.status == 422 and error["code"] == "validation_error", error
        assert error["details"] == [{"field": "body.order.items[0].qty",
                                     "problem": "Input should be greater than 0"}]

        # A wrong type the announced schema shows: the bridge refuses it itself, in the same shape.
        response = await client.post(f"/{name}/orders", json={"order": {**plain, "items": "none"},
                                                              "channel": "fax"})
        error = (await response.json())["error"]
        assert response.status == 422, error
        assert {d["field"] for d in error["details"]} == {"body.order.items", "body.channel"}

        response = await client.get(f"/{name}/orders/7?colour=green")
        assert response.status == 422
        assert (await response.json())["error"]["details"][0]["field"] == "query.colour"

        spec = await (await client.get("/openapi.json")).json()
        create = spec["paths"][f"/{name}/orders"]["post"]
        body = create["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["order"]["properties"]["items"]["items"]["properties"]["qty"] == {
            "exclusiveMinimum": 0, "title": "Qty", "type": "integer"}
        assert create["responses"]["200"]["content"]["application/json"]["schema"]["title"] == "Order"
        assert "validation_error" in create["responses"]["422"]["x-amqprpc-codes"]

        document = await (await client.get("/asyncapi.json")).json()
        assert ASYNCAPI.is_valid(document)
        assert document["operations"][f"{name}.create"]["reply"]["address"]["location"] == \
            "$message.header#/reply_to"

    serve_bridge(amqp_uri, BridgeSettings(), scenario)
