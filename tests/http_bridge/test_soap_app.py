"""The SOAP front end against create_app() with an in-memory RPC client: every fault it decides."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from amqprpc import RemoteError, RpcTimeout, UnknownService, rpc
from amqprpc.discovery import ServiceRegistry
from http_bridge.auth import hash_key
from http_bridge.idempotency import service_key
from http_bridge.routing import RouteTable
from http_bridge.soap.names import SOAP12_ENV, SOAP_ENV, WSDL, WSDL_SOAP, service_namespace, soap_action
from http_bridge.soap.safexml import Node, parse_xml

from .hostile_xml import BILLION_LAUGHS, xxe
from .support import FakeRpc, descriptor_of, make_app, run_app

ADMIN_KEY = "ak_soap-admin-key-for-tests"
READER_KEY = "ak_soap-reader-key-for-tests"
ADMIN = {"X-API-Key": ADMIN_KEY}
READER = {"X-API-Key": READER_KEY}
NS = service_namespace("shop")


class OutOfStock(Exception):
    pass


class Shop:
    name = "shop"
    http_errors = {OutOfStock: 409}

    @rpc(http="POST /shop/quote")
    def quote(self, sku: str, qty: int, gift: bool = False, tags: list[str] | None = None) -> dict[str, Any]:
        """Price a basket line."""
        return {}

    @rpc(http="GET /shop/stock/{sku}", public=True)
    def stock(self, sku: str) -> int:
        return 0

    @rpc(http=True, roles=["admin"])
    def restock(self, sku: str, qty: int) -> int:
        return 0

    @rpc(http=True)
    def count(self) -> int:
        return 0

    @rpc
    def internal(self) -> None:
        """Not routed over HTTP, so not a SOAP operation either."""


@pytest.fixture
def setup(fed_registry: ServiceRegistry, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(ADMIN_KEY)}"\nprincipal = "alice"\nroles = ["admin"]\n'
                    f'[[keys]]\nsha256 = "{hash_key(READER_KEY)}"\nprincipal = "bob"\nroles = []\n')
    fed_registry.ingest(descriptor_of(Shop))

    def build(rpc: FakeRpc | None = None, **settings: Any):
        rpc = rpc or FakeRpc()
        return make_app(fed_registry, rpc, api_keys_file=str(keys), **settings), rpc

    return build


def envelope(operation: str, arguments: str = "", *, header: str = "", namespace: str = SOAP_ENV) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><e:Envelope xmlns:e="{namespace}" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:s="{NS}">{header}'
            f"<e:Body><s:{operation}>{arguments}</s:{operation}></e:Body></e:Envelope>")


async def post(client, body: str | bytes, headers: dict[str, str] | None = None,
               content_type: str = "text/xml; charset=utf-8") -> tuple[int, Any, Any]:
    """(status, parsed reply or fault, response)."""
    data = body.encode() if isinstance(body, str) else body
    response = await client.post("/soap/shop", data=data, headers={"Content-Type": content_type,
                                                                   **(headers or {})})
    raw = await response.read()
    if not response.content_type.endswith("xml"):
        return response.status, raw.decode(), response
    root = parse_xml(raw)
    content = root.children[0].children[0]
    if content.local == "Fault":
        return response.status, fault_of(content), response
    return response.status, content, response


def fault_of(fault: Node) -> dict[str, Any]:
    parts = {child.local: child for child in fault.children}
    found: dict[str, Any] = {"faultcode": parts["faultcode"].text, "faultstring": parts["faultstring"].text}
    if "detail" in parts:
        for child in parts["detail"].children[0].children:
            value = [c.text for c in child.children] if child.children else child.text
            found.setdefault(child.local, value)
    return found


def test_wsdl_describes_the_http_methods_only(setup):
    app, _ = setup()

    async def scenario(client):
        response = await client.get("/soap/shop?wsdl")
        assert response.status == 200 and response.content_type == "text/xml"
        wsdl = parse_xml(await response.read())
        port_type = next(c for c in wsdl.children if c.tag == f"{{{WSDL}}}portType")
        assert {op.attrib["name"] for op in port_type.children} == {"quote", "stock", "restock", "count"}
        binding = next(c for c in wsdl.children if c.tag == f"{{{WSDL}}}binding")
        actions = {op.attrib["name"]: op.children[0].attrib["soapAction"] for op in binding.children[1:]}
        assert actions["quote"] == soap_action("shop", "quote")
        address = next(c for c in wsdl.children if c.tag == f"{{{WSDL}}}service").children[0].children[0]
        assert address.tag == f"{{{WSDL_SOAP}}}address"
        assert address.attrib["location"] == f"http://{client.host}:{client.port}/soap/shop"

        assert (await client.get("/soap/nothing?wsdl")).status == 404
        response = await client.get("/soap/shop")
        assert response.status == 405 and "POST" in response.headers["Allow"]

    run_app(app, scenario)


def test_an_envelope_becomes_a_typed_call_and_the_reply_an_envelope(setup):
    async def answer(service, method, kwargs, context):
        if method == "stock":
            return 5
        return {"sku": kwargs["sku"], "total": 7.5, "lines": [1, 2]}

    app, fake = setup(FakeRpc(answer), deadlines={"shop.quote": 2.5})

    async def scenario(client):
        body = envelope("quote", "<s:qty> 3 </s:qty><s:sku>A-1</s:sku><s:gift>true</s:gift>"
                                 "<s:tags><s:item>x</s:item><s:item> y </s:item></s:tags>")
        action = {"SOAPAction": f'"{soap_action("shop", "quote")}"'}
        status, reply, response = await post(client, body, {**READER, **action})
        assert status == 200, reply
        assert response.headers["X-Request-Id"]
        call = fake.calls[-1]
        assert (call["service"], call["method"]) == ("shop", "quote")
        assert call["kwargs"] == {"sku": "A-1", "qty": 3, "gift": True, "tags": ["x", " y "]}
        assert call["context"]["user_id"] == "bob" and call["timeout"] == 2.5
        assert call["context"]["call_id_stack"] == [f"http_bridge.request.{response.headers['X-Request-Id']}"]
        assert reply.tag == f"{{{NS}}}quoteResponse"
        result = reply.children[0]
        entries = {e.children[0].text: e.children[1] for e in result.children}
        assert entries["sku"].text == "A-1" and entries["total"].text == "7.5"
        assert [item.text for item in entries["lines"].children] == ["1", "2"]

        status, _, _ = await post(client, envelope("stock", "<s:sku>A-1</s:sku>"))  # public: no key
        assert status == 200 and fake.calls[-1]["context"].get("user_id") is None
        nil_tags = envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty><s:tags xsi:nil='1'/>")
        status, _, _ = await post(client, nil_tags, {**READER, "SOAPAction": '""'})
        assert status == 200 and fake.calls[-1]["kwargs"]["tags"] is None

    run_app(app, scenario)


def test_every_refusal_is_a_500_fault_naming_the_problem(setup):
    app, fake = setup()

    async def scenario(client):
        async def fault(body: str, headers: dict[str, str] | None = None, code: str = "", **expected: Any):
            status, found, response = await post(client, body, headers)
            assert status == 500, found
            assert found["faultcode"] == code, found
            for key, value in expected.items():
                assert found[key] == value, found
            return found, response

        quote = envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty>")
        found, response = await fault(quote, None, "soapenv:Client.Unauthorized", status="401")
        assert "Bearer" in response.headers["WWW-Authenticate"]
        assert found["id"] == response.headers["X-Request-Id"]
        await fault(quote, {"X-API-Key": "ak_wrong"}, "soapenv:Client.Unauthorized")
        await fault(envelope("restock", "<s:sku>A</s:sku><s:qty>1</s:qty>"), READER,
                    "soapenv:Client.Forbidden", status="403")
        await fault(envelope("quote", "<s:sku>A</s:sku><s:qty>three</s:qty>"), READER,
                    "soapenv:Client.ValidationError", details=["qty", "expected an integer, got 'three'"])
        await fault(envelope("quote", "<s:qty>1</s:qty>"), READER, "soapenv:Client.ValidationError",
                    details=["sku", "required parameter is missing"])
        await fault(envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty><s:qty>2</s:qty>"), READER,
                    "soapenv:Client.ValidationError")
        await fault(envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty><s:extra/>"), READER,
                    "soapenv:Client.ValidationError", details=["extra", "unknown parameter"])
        await fault(envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty><s:tags><s:x/></s:tags>"), READER,
                    "soapenv:Client.ValidationError")
        await fault(envelope("internal"), READER, "soapenv:Client.OperationNotFound")
        await fault(envelope("nothing"), READER, "soapenv:Client.OperationNotFound")
        await fault(quote.replace(NS, "urn:elsewhere"), READER, "soapenv:Client.OperationNotFound")
        await fault(quote, {**READER, "SOAPAction": soap_action("shop", "restock")},
                    "soapenv:Client.SoapActionMismatch")
        await fault(envelope("quote", namespace=SOAP12_ENV), READER, "soapenv:VersionMismatch")
        must = '<e:Header><sec xmlns="urn:sec" e:mustUnderstand="1"/></e:Header>'
        found, _ = await fault(envelope("quote", "<s:sku>A</s:sku><s:qty>1</s:qty>", header=must), READER,
                               "soapenv:MustUnderstand")
        assert "code" not in found  # SOAP 1.1 §4.4: no detail for header faults
        await fault("not xml at all", READER, "soapenv:Client.XmlMalformed")
        await fault("<just-xml/>", READER, "soapenv:Client.NotAnEnvelope")
        response = await client.post("/soap/nowhere", data=quote,
                                     headers={**READER, "Content-Type": "text/xml"})
        assert response.status == 500 and b"Client.NotFound" in await response.read()
        assert fake.calls == []  # nothing above reached a service

        status, text, _ = await post(client, quote, READER, content_type="application/soap+xml")
        assert status == 415 and "text/xml" in text

    run_app(app, scenario)


def test_remote_errors_become_faults_and_undeclared_ones_say_nothing(setup):
    async def answer(service, method, kwargs, context):
        sku = kwargs.get("sku")
        if sku == "gone":
            raise RemoteError("OutOfStock", "no A left", "shop.OutOfStock")
        if sku == "crash":
            raise RemoteError("RuntimeError", "password is hunter2")
        if sku == "slow":
            raise RpcTimeout("late")
        if sku == "down":
            raise UnknownService("shop")
        return "many"  # count() promises an int

    app, _ = setup(FakeRpc(answer))

    async def scenario(client):
        def call(sku: str) -> str:
            return envelope("quote", f"<s:sku>{sku}</s:sku><s:qty>1</s:qty>")

        status, found, _ = await post(client, call("gone"), READER)
        assert (status, found["faultcode"]) == (500, "soapenv:Client.OutOfStock")
        assert found["faultstring"] == "no A left"
        assert (found["type"], found["code"], found["status"]) == ("OutOfStock", "out_of_stock", "409")
        status, found, _response = await post(client, call("crash"), READER)
        assert found["faultcode"] == "soapenv:Server.InternalError" and found["id"]
        raw = str(found)
        assert "hunter2" not in raw and "RuntimeError" not in raw
        status, found, _ = await post(client, call("slow"), READER)
        assert found["faultcode"] == "soapenv:Server.DeadlineExceeded" and found["status"] == "504"
        status, found, _ = await post(client, call("down"), READER)
        assert found["faultcode"] == "soapenv:Server.ServiceUnavailable"
        status, found, _ = await post(client, envelope("count"), READER)
        assert found["faultcode"] == "soapenv:Server.InvalidResult"
        assert "expected an integer" in found["message"]

    run_app(app, scenario)


class Vault:
    name = "vault"

    @rpc(http=True)
    def open(self) -> None: ...


def test_hostile_xml_gets_a_fault_and_reaches_no_service(setup, tmp_path, fed_registry):
    fed_registry.ingest(descriptor_of(Vault))
    app, fake = setup(max_body_size=64 * 1024, soap_max_depth=32, soap_max_elements=1000)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")

    async def scenario(client):
        cases = [
            (BILLION_LAUGHS, "soapenv:Client.XmlDtd"),
            (xxe(secret.as_uri()), "soapenv:Client.XmlDtd"),
            (envelope("quote", "<s:sku>" + "<a>" * 1000 + "</a>" * 1000 + "</s:sku>").encode(),
             "soapenv:Client.XmlTooDeep"),
            (envelope("quote", "<s:tags>" + "<s:item>x</s:item>" * 2000 + "</s:tags>").encode(),
             "soapenv:Client.XmlTooManyElements"),
            (envelope("quote", "<s:sku>" + "A" * 70_000 + "</s:sku>").encode(),
             "soapenv:Client.PayloadTooLarge"),
            (envelope("quote", "<?php x?>").encode(), "soapenv:Client.XmlProcessingInstruction"),
        ]
        for body, code in cases:
            # Without credentials too: shop has a public operation, so the body must be read.
            for headers in (READER, {}):
                status, found, response = await post(client, body, headers)
                assert (status, found["faultcode"]) == (500, code), found
                assert "TOP-SECRET" not in str(found) and "lollol" not in str(found)
            # A service with no public operation answers 401 before it reads a body at all.
            response = await client.post("/soap/vault", data=body, headers={"Content-Type": "text/xml"})
            assert response.status == 500 and b"Client.Unauthorized" in await response.read()
        assert fake.calls == []

    run_app(app, scenario)


def test_limits_rate_inflight_and_liveness_are_the_gateways(setup, fed_registry):
    entered, release = asyncio.Event(), asyncio.Event()

    async def answer(service, method, kwargs, context):
        if kwargs.get("sku") == "hold":
            entered.set()
            await release.wait()
        return 1

    app, _ = setup(FakeRpc(answer), rate_limit=1.0, rate_burst=4, max_inflight=1)

    async def scenario(client):
        stock = envelope("stock", "<s:sku>hold</s:sku>")
        held = asyncio.ensure_future(post(client, stock, ADMIN))
        await asyncio.wait_for(entered.wait(), 5)  # the one call allowed in flight is in flight
        _, found, response = await post(client, envelope("stock", "<s:sku>B</s:sku>"), ADMIN)
        assert found["faultcode"] == "soapenv:Server.Overloaded" and response.headers["Retry-After"] == "1"
        release.set()
        assert (await held)[0] == 200
        seen = [(await post(client, envelope("stock", "<s:sku>B</s:sku>"), ADMIN))[1] for _ in range(4)]
        limited = [found for found in seen if isinstance(found, dict)]
        assert limited and limited[0]["faultcode"] == "soapenv:Client.RateLimited"

        fed_registry.ingest({**descriptor_of(Shop), "event": "down", "instance": only_instance(fed_registry)})
        _status, found, response = await post(client, envelope("stock", "<s:sku>B</s:sku>"), READER)
        assert found["faultcode"] == "soapenv:Server.ServiceUnavailable" and response.headers["Retry-After"]

        metrics = await (await client.get("/metrics")).text()
        assert 'route="SOAP shop.stock",status="200"' in metrics
        assert 'route="SOAP shop.stock",status="500"' in metrics

    run_app(app, scenario)


def only_instance(registry: ServiceRegistry) -> str:
    view = registry.service("shop")
    assert view is not None and len(view.instances) == 1
    return view.instances[0].instance


def test_jwt_bearer_tokens_work_as_for_rest(setup):
    secret = "s" * 40

    async def answer(service, method, kwargs, context):
        return 1

    app, fake = setup(FakeRpc(answer), jwt_hs256_secret=secret)

    def bearer(roles: list[str], key: str = secret) -> dict[str, str]:
        claims = {"sub": "carol", "roles": roles, "exp": int(time.time()) + 60}
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="HS256")}

    async def scenario(client):
        restock = envelope("restock", "<s:sku>A</s:sku><s:qty>2</s:qty>")
        status, _, _ = await post(client, restock, bearer(["admin"]))
        assert status == 200 and fake.calls[-1]["context"]["user_id"] == "carol"
        _, found, _ = await post(client, restock, bearer([]))
        assert found["faultcode"] == "soapenv:Client.Forbidden"
        _, found, _ = await post(client, restock, bearer(["admin"], key="t" * 40))
        assert found["faultcode"] == "soapenv:Client.Unauthorized"
        assert len(fake.calls) == 1

    run_app(app, scenario)


def test_idempotency_key_replays_the_reply(setup):
    async def answer(service, method, kwargs, context):
        return 3

    app, fake = setup(FakeRpc(answer))

    async def scenario(client):
        body = envelope("stock", "<s:sku>A</s:sku>")
        first = await post(client, body, {**READER, "Idempotency-Key": "k-1"})
        again = await post(client, body, {**READER, "Idempotency-Key": "k-1"})
        assert first[0] == again[0] == 200
        assert again[2].headers["Idempotent-Replayed"] == "true"
        assert len(fake.calls) == 1
        assert fake.calls[0]["context"]["idempotency_key"] == service_key("principal:bob", "k-1")
        _status, found, _ = await post(client, envelope("stock", "<s:sku>B</s:sku>"),
                                      {**READER, "Idempotency-Key": "k-1"})
        assert found["faultcode"] == "soapenv:Client.IdempotencyKeyReused"

    run_app(app, scenario)


def test_soap_can_be_turned_off_and_rest_cannot_claim_its_paths(setup):
    app, _ = setup(soap=False)

    async def scenario(client):
        response = await client.get("/soap/shop?wsdl")
        assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"

    run_app(app, scenario)

    class Squatter:
        name = "squatter"

        @rpc(http="POST /soap/shop")
        def grab(self) -> None: ...

    registry = ServiceRegistry()
    registry.ingest(descriptor_of(Squatter))
    assert RouteTable.build(registry.services(), generation=1).routes == []
