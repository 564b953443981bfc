"""A ``trusted_identity`` worker on the real broker: raw messages with forged, replayed or no
signature are refused; the same call through the bridge (which signs) runs as its caller."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import amqp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import CallContext, Config, rpc
from amqprpc.identity import IDENTITY_HEADER, IdentityKeys, IdentitySigner
from amqprpc.messages import build_request
from amqprpc.serialization import codec_named
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "identity-key-of-the-trusted-identity-tests"
API_KEY = "ak_trusted-identity-ann"


def trusted_service(name: str) -> type:
    class Vault:
        trusted_identity = True
        ctx = CallContext()
        runs: list[Any] = []
        lock = threading.Lock()

        @rpc(http=f"GET /{name}/whoami", roles=["clerk"])
        def whoami(self) -> dict[str, Any]:
            with self.lock:
                self.runs.append(self.ctx.data.get("user_id"))
            return {"user_id": self.ctx.data.get("user_id"), "roles": self.ctx.data.get("roles")}

    Vault.name = name
    return Vault


@pytest.fixture
def channel(amqp_uri: str) -> Iterator[amqp.Channel]:
    connection = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        yield connection.channel()
    finally:
        connection.close()


def publish(channel: amqp.Channel, service: str, replies: str, headers: dict[str, Any],
            correlation_id: str) -> dict[str, Any]:
    channel.basic_publish(
        amqp.Message(json.dumps({"args": [], "kwargs": {}}), content_type="application/json",
                     correlation_id=correlation_id, reply_to=replies, application_headers=headers),
        exchange="nameko-rpc", routing_key=f"{service}.whoami", mandatory=True)
    reply = wait_until(lambda: channel.basic_get(replies, no_ack=True), "the reply", timeout=10)
    return json.loads(reply.body)  # type: ignore[no-any-return]


def signed_headers(service: str, correlation_id: str, context: dict[str, Any]) -> dict[str, Any]:
    message = build_request(service, "whoami", [], {}, codec=codec_named("json"), exchange="nameko-rpc",
                            reply_to="-", correlation_id=correlation_id, timeout=30, context=context)
    IdentitySigner(IdentityKeys([KEY])).sign(message, context)
    return dict(message.properties["application_headers"])


def test_forged_replayed_and_unsigned_identities_are_refused_the_bridge_is_not(
        container_factory: Any, unique_name: Any, channel: amqp.Channel, amqp_uri: str,
        tmp_path: Any) -> None:
    name = unique_name("vault")
    cls = trusted_service(name)
    container_factory(cls, identity_key=KEY, discovery_interval=0.2)
    replies = unique_name("replies")
    channel.queue_declare(replies, exclusive=True, auto_delete=True)
    channel.queue_bind(replies, "nameko-rpc", replies)

    # unsigned: identity headers anyone with broker credentials can write
    error = publish(channel, name, replies, {"nameko.user_id": "admin", "nameko.roles": ["admin"]},
                    uuid.uuid4().hex)["error"]
    assert error["exc_type"] == "IdentityRefused" and "unsigned" in error["value"]
    # forged: a signature made with another key, and a valid one whose headers were changed
    cid = uuid.uuid4().hex
    headers = signed_headers(name, cid, {"user_id": "ann", "roles": ["clerk"]})
    other = IdentityKeys(["another-key-another-key-another-key"]).signing_kid
    forged = {**headers, IDENTITY_HEADER: headers[IDENTITY_HEADER].replace(
        IdentityKeys([KEY]).signing_kid, other)}
    assert "unknown key" in publish(channel, name, replies, forged, cid)["error"]["value"]
    altered = {**headers, "nameko.user_id": "admin"}
    assert "forged" in publish(channel, name, replies, altered, cid)["error"]["value"]
    # a valid signed call runs once; the very same message again is a replay
    assert publish(channel, name, replies, headers, cid)["result"] == {"user_id": "ann", "roles": ["clerk"]}
    error = publish(channel, name, replies, headers, cid)["error"]
    assert error["exc_type"] == "IdentityRefused" and "replayed" in error["value"]
    assert cls.runs == ["ann"]

    # through the bridge: it signs the identity it authenticated
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(f'[[keys]]\nsha256 = "{hash_key(API_KEY)}"\nprincipal = "ann"\nroles = ["clerk"]\n')
    config = Config(broker_url=amqp_uri, discovery_interval=0.2, rpc_timeout=10, identity_key=KEY)

    async def main() -> None:
        app = create_app(config, settings=BridgeSettings(api_keys_file=str(keys_file)))
        async with TestClient(TestServer(app)) as client:
            deadline = time.monotonic() + 20
            while True:
                response = await client.get(f"/{name}/whoami", headers={"X-API-Key": API_KEY})
                if response.status != 404 and response.status != 503:
                    break
                assert time.monotonic() < deadline, "the route never appeared"
                await asyncio.sleep(0.05)
            assert response.status == 200, await response.text()
            assert await response.json() == {"user_id": "ann", "roles": ["clerk"]}

    asyncio.run(main())
    assert cls.runs == ["ann", "ann"]
