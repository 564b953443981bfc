"""A real SOAP client (zeep) against the bridge, real workers and the real broker.

zeep reads the WSDL the running bridge generates from the live descriptors, builds its
calls from it, and gets typed results, remote errors as Faults and auth failures as
Faults: what an ERP system generating a client from the WSDL would see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
import requests
import zeep
import zeep.exceptions
from aiohttp.test_utils import TestServer

from amqprpc import CallContext, Config, remote_error, rpc
from http_bridge import BridgeSettings, create_app
from http_bridge.app import GATEWAY
from http_bridge.auth import hash_key

from .hostile_xml import BILLION_LAUGHS

pytestmark = pytest.mark.integration

ADMIN_KEY = "ak_soap-zeep-admin"
READER_KEY = "ak_soap-zeep-reader"
INTERVAL = 0.2


@remote_error
class OutOfStock(Exception):
    pass


class Quote(TypedDict):
    sku: str
    qty: int
    total: float
    gift: bool
    tags: list[str]
    note: str | None
    buyer: str | None


def make_service(name: str) -> type:
    class Shop:
        http_errors = {OutOfStock: 409}
        call = CallContext()

        @rpc(http=f"POST /{name}/quote")
        def quote(self, sku: str, qty: int, unit_price: float, gift: bool = False,
                  tags: list[str] | None = None, note: str | None = None) -> Quote:
            """Price one basket line."""
            return {"sku": sku, "qty": qty, "total": qty * unit_price, "gift": gift, "tags": tags or [],
                    "note": note, "buyer": self.call.data.get("user_id")}

        @rpc(http=f"POST /{name}/reserve")
        def reserve(self, sku: str, qty: int) -> int:
            raise OutOfStock(f"only 2 of {sku} left, {qty} asked")

        @rpc(http=f"GET /{name}/stock/{{sku}}", public=True)
        async def stock(self, sku: str) -> dict[str, int]:
            return {sku: 7, "total": 9}

        @rpc(http=True, roles=["admin"])
        def restock(self, skus: list[str], per_item: int = 1) -> list[int]:
            return [per_item] * len(skus)

        @rpc(http=True)
        def crash(self) -> None:
            raise RuntimeError("database password is hunter2")

        @rpc
        def internal(self) -> None:
            """Not routed over HTTP: no SOAP operation either."""

    Shop.name = name
    Shop.__name__ = "Shop"
    return Shop


@pytest.fixture
def keys_file(tmp_path) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nsha256 = "{hash_key(ADMIN_KEY)}"\nprincipal = "alice"\nroles = ["admin"]\n'
                    f'[[keys]]\nsha256 = "{hash_key(READER_KEY)}"\nprincipal = "bob"\nroles = []\n')
    return str(path)


def soap_client(url: str, headers: dict[str, str]) -> zeep.Client:
    """What a SOAP consumer does: fetch the WSDL, generate the calls (blocking, like zeep)."""
    session = requests.Session()
    session.trust_env = False  # loopback only, whatever proxy the environment names
    session.headers.update(headers)
    transport = zeep.Transport(session=session, timeout=10, operation_timeout=10)
    return zeep.Client(f"{url}?wsdl", transport=transport)


def test_zeep_calls_real_workers_through_the_bridge(container_factory, unique_name, amqp_uri, keys_file):
    name = unique_name("shop")
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5)
    settings = BridgeSettings(api_keys_file=keys_file)

    async def main() -> None:
        app = create_app(config, settings=settings)  # owns its RPC client and registry
        async with TestServer(app, host="127.0.0.1") as server:
            loop = asyncio.get_running_loop()

            def blocking(fn: Callable[[], Any]) -> Any:
                return loop.run_in_executor(None, fn)

            await blocking(lambda: container_factory(make_service(name), discovery_interval=INTERVAL))
            registry = app[GATEWAY].registry
            assert registry is not None
            assert await blocking(lambda: registry.wait_for(lambda r: r.is_live(name), timeout=5))
            url = str(server.make_url(f"/soap/{name}"))
            await asyncio.wait_for(blocking(lambda: scenario(url)), timeout=40)

    asyncio.run(main())


def scenario(url: str) -> None:
    admin = soap_client(url, {"X-API-Key": ADMIN_KEY})
    (service,) = admin.wsdl.services.values()
    (port,) = service.ports.values()
    assert set(port.binding.all()) == {"quote", "reserve", "stock", "restock", "crash"}  # not `internal`

    # Typed parameters both ways: int, float, bool, str, list, optional (absent and nil).
    quote = admin.service.quote(sku="A-1", qty=3, unit_price=2.5, gift=True, tags={"item": ["red", "xl"]})
    assert (quote.sku, quote.qty, quote.total, quote.gift) == ("A-1", 3, 7.5, True)
    assert list(quote.tags.item) == ["red", "xl"]
    assert quote.note is None and quote.buyer == "alice"  # the identity reached the service
    quote = admin.service.quote(sku="B", qty=1, unit_price=0.1, note="ünïcode <&>")
    assert (quote.total, quote.gift, quote.note) == (0.1, False, "ünïcode <&>")
    assert admin.service.restock(skus={"item": ["a", "b", "c"]}, per_item=4) == [4, 4, 4]

    # A public operation needs no credentials; a dict of ints comes back as key/value entries.
    anonymous = soap_client(url, {})
    stock = anonymous.service.stock(sku="A-1")
    assert {entry.key: entry.value for entry in stock} == {"A-1": 7, "total": 9}

    # A declared remote error is a Fault with its type; an undeclared one says nothing.
    with pytest.raises(zeep.exceptions.Fault) as fault:
        admin.service.reserve(sku="A-1", qty=5)
    assert fault.value.code == "soapenv:Client.OutOfStock"
    assert fault.value.message == "only 2 of A-1 left, 5 asked"
    assert fault.value.detail.findtext("{urn:amqprpc:soap}error/{urn:amqprpc:soap}type") == "OutOfStock"
    with pytest.raises(zeep.exceptions.Fault) as fault:
        admin.service.crash()
    assert fault.value.code == "soapenv:Server.InternalError" and "hunter2" not in fault.value.message

    # Auth: no credentials, a wrong key, a missing role: Faults, and nothing runs.
    for client, code in ((anonymous, "Client.Unauthorized"),
                         (soap_client(url, {"X-API-Key": "ak_wrong"}), "Client.Unauthorized"),
                         (soap_client(url, {"X-API-Key": READER_KEY}), "Client.Forbidden")):
        with pytest.raises(zeep.exceptions.Fault) as fault:
            client.service.restock(skus={"item": ["a"]})
        assert fault.value.code == f"soapenv:{code}"

    # Hostile XML at the live endpoint: a Fault, never expanded.
    response = requests.post(url, data=BILLION_LAUGHS, headers={"Content-Type": "text/xml",
                                                                "X-API-Key": ADMIN_KEY}, timeout=10)
    assert response.status_code == 500 and b"Client.XmlDtd" in response.content
    assert b"lollol" not in response.content
