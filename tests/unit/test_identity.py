"""Signed identity (amqprpc.identity): what signs, what verifies, what a trusted service refuses."""

from __future__ import annotations

import time
from typing import Any

import pytest

from amqprpc import CallContext, ClusterRpcClient, Config, ConfigError, IdentityRefused, RpcProxy, rpc
from amqprpc.identity import (
    IDENTITY_HEADER,
    IdentityKeys,
    IdentitySigner,
    IdentityVerifier,
    SeenCalls,
    verifier_for,
)
from amqprpc.messages import build_request
from amqprpc.runner import ServiceRunner
from amqprpc.serialization import codec_named

KEY = "k" * 40
OTHER_KEY = "o" * 40


def _request(context: dict[str, Any], *, cid: str = "cid-1", timeout: float = 10.0,
             key: str = KEY) -> dict[str, Any]:
    message = build_request("svc", "m", [], {}, codec=codec_named("json"), exchange="x", reply_to="r",
                            correlation_id=cid, timeout=timeout, context=context)
    IdentitySigner(IdentityKeys([key])).sign(message, context)
    headers: dict[str, Any] = message.properties["application_headers"]
    return headers


def _verifier(**options: Any) -> IdentityVerifier:
    return IdentityVerifier(IdentityKeys([KEY]), **options)


def test_a_signed_identity_verifies_and_names_the_principal() -> None:
    headers = _request({"nameko.user_id": "x", "user_id": "ann", "roles": ["b", "a"]})
    identity = _verifier().verify(headers, correlation_id="cid-1", routing_key="svc.m")
    assert (identity.principal, identity.roles) == ("ann", ("a", "b"))
    context = _verifier().context({"user_id": "eve", "roles": ["admin"], "x": 1}, identity)
    assert context == {"user_id": "ann", "roles": ["a", "b"], "x": 1}


@pytest.mark.parametrize(("change", "reason"), [
    (lambda h: h.pop(IDENTITY_HEADER), "unsigned"),
    (lambda h: h.update({"nameko.user_id": "admin"}), "forged"),
    (lambda h: h.update({"nameko.roles": ["admin"]}), "forged"),
    (lambda h: h.update({IDENTITY_HEADER: h[IDENTITY_HEADER][:-3] + "AAA"}), "bad identity signature"),
    (lambda h: h.update({IDENTITY_HEADER: "v1.x.y"}), "is not v1"),
    (lambda h: h.update({IDENTITY_HEADER: 42}), "must be a string"),
])
def test_unsigned_forged_or_altered_identities_are_refused(change: Any, reason: str) -> None:
    headers = _request({"user_id": "ann", "roles": ["a"]})
    change(headers)
    with pytest.raises(IdentityRefused, match=reason):
        _verifier().verify(headers, correlation_id="cid-1", routing_key="svc.m")


def test_another_key_another_call_or_method_is_refused() -> None:
    with pytest.raises(IdentityRefused, match="unknown key"):
        _verifier().verify(_request({}, key=OTHER_KEY), correlation_id="cid-1", routing_key="svc.m")
    with pytest.raises(IdentityRefused, match="another call"):
        _verifier().verify(_request({}), correlation_id="cid-2", routing_key="svc.m")
    with pytest.raises(IdentityRefused, match="another call"):
        _verifier().verify(_request({}), correlation_id="cid-1", routing_key="svc.other")


def test_expired_or_too_long_lived_identities_are_refused() -> None:
    headers = _request({}, timeout=10)
    with pytest.raises(IdentityRefused, match="expired"):
        _verifier(clock=lambda: time.time() + 60).verify(headers, correlation_id="cid-1", routing_key="svc.m")
    with pytest.raises(IdentityRefused, match="identity_max_age"):
        _verifier(max_age=5).verify(headers, correlation_id="cid-1", routing_key="svc.m")


def test_a_replay_is_refused_but_a_redelivery_is_not() -> None:
    verifier = _verifier()
    headers = _request({"user_id": "ann"})
    verifier.verify(headers, correlation_id="cid-1", routing_key="svc.m")
    verifier.verify(headers, correlation_id="cid-1", routing_key="svc.m", rerun=True)
    with pytest.raises(IdentityRefused, match="replayed"):
        verifier.verify(headers, correlation_id="cid-1", routing_key="svc.m")


def test_seen_calls_forget_expired_ids_and_stay_bounded() -> None:
    seen = SeenCalls(max_entries=3)
    assert seen.add("a", 10, now=0) and not seen.add("a", 10, now=1)
    assert seen.add("a", 30, now=11)  # expired at 10: forgotten
    for name in "bcde":
        seen.add(name, 20, now=12)
    assert len(seen) == 3


def test_keys_are_long_and_come_from_the_config(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        IdentityKeys(["short"])
    path = tmp_path / "keys"
    path.write_text(f"# rotated\n{KEY}\n{OTHER_KEY}\n")
    keys = IdentityKeys.from_config(Config(identity_key_file=str(path)))
    assert keys is not None and keys.get(IdentityKeys([OTHER_KEY]).signing_kid) is not None
    assert IdentityKeys.from_config(Config()) is None

    class Trusting:
        name = "trusting"
        trusted_identity = True

    with pytest.raises(ConfigError, match="no identity_key"):
        verifier_for(Trusting, Config())
    assert verifier_for(Trusting, Config(identity_key=KEY)) is not None
    assert verifier_for(type("Plain", (), {}), Config(identity_key=KEY)) is None


class Whoami:
    name = "whoami"
    trusted_identity = True
    ctx = CallContext()

    @rpc
    def who(self) -> list[Any]:
        return [self.ctx.data.get("user_id"), self.ctx.data.get("roles")]


class Front:
    """Not trusted itself; its nested call is signed with the process's key."""

    name = "front"
    whoami = RpcProxy("whoami")

    @rpc
    def relay(self) -> list[Any]:
        return list(self.whoami.who())


def test_a_trusted_service_in_memory(request: pytest.FixtureRequest) -> None:
    signed = Config(broker_url=f"memory://{request.node.name}", identity_key=KEY, rpc_timeout=5)
    runner = ServiceRunner(signed)
    runner.add_service(Whoami)
    runner.add_service(Front)
    runner.start()
    try:
        with ClusterRpcClient(config=signed, context={"user_id": "ann", "roles": ["a"]}) as client:
            assert client.whoami.who() == ["ann", ["a"]]
            assert client.front.relay() == ["ann", ["a"]]  # re-signed by the nested call
        with ClusterRpcClient(config=signed) as client:
            assert client.whoami.who() == [None, None]  # anonymous, but signed
        unsigned = signed.replace(identity_key="")
        with ClusterRpcClient(config=unsigned, context={"user_id": "admin"}) as client, \
                pytest.raises(IdentityRefused, match="unsigned"):
            client.whoami.who()
    finally:
        runner.stop()
