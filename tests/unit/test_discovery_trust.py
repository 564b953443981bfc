"""What a registry may believe of an announcement (amqprpc.discovery.trust): pure, no broker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from amqprpc import Config, ServiceContainer, ServiceRegistry, rpc
from amqprpc.discovery import (
    DescriptorError,
    HttpBinding,
    MethodDescriptor,
    ServiceDescriptor,
    build_descriptor,
)
from amqprpc.discovery.trust import SIGNATURE_HEADER, AnnouncementSigner, check_clock, narrowest

KEY = "k" * 32
BODY = b'{"service": "users"}'
ROUTE = HttpBinding("GET", "/users/{user_id}")


def method(name: str = "get", *, public: bool = False, roles: tuple[str, ...] = (),
           http: HttpBinding | None = ROUTE) -> MethodDescriptor:
    return MethodDescriptor(name=name, params=(), returns={}, doc="", http=http, roles=roles,
                            public=public)


def announced(sent_at: float = 1000.0, started_at: float = 900.0) -> ServiceDescriptor:
    return ServiceDescriptor(event="alive", service="users", instance="i1", host="h", pid=1,
                             version=None, amqprpc_version=None, started_at=started_at,
                             sent_at=sent_at, interval=2.0)


# ------------------------------------------------------------------ signatures

def test_a_signed_announcement_verifies():
    signer = AnnouncementSigner([KEY])
    signature = signer.sign("users.alive", "application/json", BODY)
    signer.verify(signature, "users.alive", "application/json", BODY)
    signer.verify(signature.encode(), "users.alive", "application/json", BODY)  # headers may be bytes


@pytest.mark.parametrize(("routing_key", "content_type", "body"), [
    ("orders.alive", "application/json", BODY),            # replayed under another service
    ("users.alive", "application/x-msgpack", BODY),         # decoded another way
    ("users.alive", "application/json", BODY + b" "),       # altered body
])
def test_a_signature_binds_routing_key_content_type_and_body(routing_key, content_type, body):
    signer = AnnouncementSigner([KEY])
    signature = signer.sign("users.alive", "application/json", BODY)
    with pytest.raises(DescriptorError, match="bad announcement signature"):
        signer.verify(signature, routing_key, content_type, body)


@pytest.mark.parametrize(("signature", "problem"), [
    (None, "unsigned"),
    (12, "not a v1="),
    ("sha1=abc", "not a v1="),
    ("v1=" + "0" * 64, "bad announcement signature"),
])
def test_unsigned_or_malformed_signatures_are_refused(signature, problem):
    with pytest.raises(DescriptorError, match=problem):
        AnnouncementSigner([KEY]).verify(signature, "users.alive", "application/json", BODY)


def test_key_rotation_first_key_signs_any_key_verifies():
    old, new = "o" * 32, "n" * 32
    signed_by_old = AnnouncementSigner([old]).sign("users.up", "application/json", BODY)
    rotating = AnnouncementSigner.from_setting(f"{new}, {old}")
    assert rotating is not None
    rotating.verify(signed_by_old, "users.up", "application/json", BODY)
    AnnouncementSigner([new]).verify(rotating.sign("users.up", "application/json", BODY),
                                     "users.up", "application/json", BODY)


def test_unset_key_means_no_signer_and_short_keys_are_refused():
    assert AnnouncementSigner.from_setting(None) is None
    assert AnnouncementSigner.from_setting("  ") is None
    with pytest.raises(ValueError, match="at least 16 characters"):
        AnnouncementSigner(["short"])


# ------------------------------------------------------------------ clock bounds

def test_times_within_the_skew_pass():
    check_clock(announced(sent_at=1000.0, started_at=10.0), now=1100.0, max_skew=300)


@pytest.mark.parametrize(("sent_at", "started_at", "problem"), [
    (1000.0, 1e18, "started_at lies in the future"),    # wins the newest-instance election
    (1e18, 1e18, "sent_at is"),                          # from the far future
    (100.0, 50.0, "sent_at is"),                         # a replay of an old announcement
    (1000.0, 1001.0, "started_at is after sent_at"),
    (float("inf"), 1.0, "finite"),
    (float("nan"), 1.0, "finite"),
])
def test_impossible_times_are_refused(sent_at, started_at, problem):
    with pytest.raises(DescriptorError, match=problem):
        check_clock(announced(sent_at=sent_at, started_at=started_at), now=1000.0, max_skew=300)


# ------------------------------------------------------------------ conflicts narrow

def test_agreeing_instances_change_nothing():
    methods = (method(roles=("admin",)),)
    assert narrowest(methods, [methods]) == (methods, [])


@pytest.mark.parametrize(("newest", "other", "public", "roles", "exposed"), [
    (method(public=True), method(public=False), False, (), True),
    (method(public=True), method(roles=("admin",)), False, ("admin",), True),
    (method(), method(roles=("admin",)), False, ("admin",), True),                 # roles dropped
    (method(roles=("admin", "support")), method(roles=("admin",)), False, ("admin",), True),
    (method(roles=("admin",)), method(roles=("support",)), False, ("admin", "support"), False),
    (method(public=True), method(public=True, http=None), True, (), False),        # route added
])
def test_a_conflict_takes_the_most_restrictive_rule(newest, other, public, roles, exposed):
    (merged,), conflicts = narrowest((newest,), [(other,)])
    assert (merged.public, merged.roles, merged.http is not None) == (public, roles, exposed)
    assert len(conflicts) == 1 and conflicts[0].startswith("get: instances disagree")
    # Whichever instance is the newest, the outcome is the same rule.
    (swapped,), _ = narrowest((other,), [(newest,)])
    assert (swapped.public, swapped.http is not None) == (public, exposed)
    if exposed:
        assert swapped.roles == roles


def test_a_method_only_the_newest_instance_has_is_kept():
    newest = (method("get"), method("create", http=HttpBinding("POST", "/users")))
    merged, conflicts = narrowest(newest, [(method("get"),)])
    assert [m.name for m in merged] == ["get", "create"] and conflicts == []


# ------------------------------------------------------------------ the registry applies them

class Accounts:
    name = "accounts"

    @rpc(http="GET /accounts/{account_id}", roles=("admin",))
    def get(self, account_id: int) -> dict:
        return {}

    @rpc
    def internal(self) -> None: ...


def wire(event: str = "alive", *, started_at: float = 990.0, sent_at: float = 1000.0,
         instance: str = "real", **changes: Any) -> dict[str, Any]:
    data = build_descriptor(ServiceContainer(Accounts, Config()), event=event, instance=instance,
                            host="h", pid=1, started_at=started_at, sent_at=sent_at, interval=2.0,
                            amqprpc_version=None)
    data.update(changes)
    return data


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def make_registry(**kwargs: Any) -> ServiceRegistry:
    return ServiceRegistry(Config(), wall_clock=lambda: 1000.0, **kwargs)


def send(registry: ServiceRegistry, payload: dict[str, Any], *, signer: AnnouncementSigner | None = None,
         routing_key: str | None = None, **properties: Any) -> None:
    body = body_of(payload)
    key = routing_key or f"{payload['service']}.{payload['event']}"
    props: dict[str, Any] = {"content_type": "application/json", **properties}
    if signer is not None:
        props["application_headers"] = {SIGNATURE_HEADER: signer.sign(key, "application/json", body)}
    registry.receive(body, key, props)


def test_a_forged_newest_instance_cannot_make_a_method_public():
    """The attack of issue #19: started_at 1e18, public=true, roles dropped, a hidden method exposed."""
    registry = make_registry()
    send(registry, wire())
    forged = wire(instance="forged", started_at=1e18, sent_at=1000.0)
    for method in forged["methods"]:
        method.update(public=True, roles=[], http={"method": "POST", "path": f"/x/{method['name']}"})
    with pytest.raises(DescriptorError, match="started_at lies in the future"):
        send(registry, forged)
    # Even with plausible times, a disagreeing instance only ever narrows the rule.
    send(registry, {**forged, "started_at": 995.0})
    view = registry.service("accounts")
    assert view is not None and len(view.instances) == 2
    get, internal = view.method("get"), view.method("internal")
    assert get is not None and not get.public and get.roles == ("admin",)
    assert internal is not None and internal.http is None


def test_a_registry_with_a_key_refuses_unsigned_and_forged_announcements():
    signer = AnnouncementSigner([KEY])
    registry = make_registry(signer=signer)
    with pytest.raises(DescriptorError, match="unsigned"):
        send(registry, wire())
    with pytest.raises(DescriptorError, match="bad announcement signature"):
        send(registry, wire(), signer=AnnouncementSigner(["x" * 32]))
    with pytest.raises(DescriptorError, match="unsigned"):
        send(registry, wire(event="down"))  # a forged ``down`` cannot take a service offline
    assert registry.service("accounts") is None
    send(registry, wire(), signer=signer)
    assert registry.is_live("accounts")


def test_an_announcement_must_come_from_the_services_broker_user():
    registry = make_registry(owners={"accounts": "svc-accounts"})
    with pytest.raises(DescriptorError, match="only be announced by broker user 'svc-accounts'"):
        send(registry, wire(), user_id="svc-orders")
    with pytest.raises(DescriptorError, match="not None"):
        send(registry, wire())
    send(registry, wire(), user_id="svc-accounts")
    assert registry.is_live("accounts")


def test_an_announcement_routed_under_another_name_is_refused():
    """Per-routing-key topic permissions would be bypassed by a body naming another service."""
    with pytest.raises(DescriptorError, match=r"routing key 'orders\.alive'"):
        send(make_registry(), wire(), routing_key="orders.alive")


def test_owner_stamping_needs_a_named_login(tmp_path):
    """With a certificate login the user is the cert's name: a guessed user_id would make the
    broker close the channel at every announcement, so it is refused at start."""
    import trustme

    from amqprpc import ConfigError
    from amqprpc.discovery.announcer import _broker_user

    pem = tmp_path / "client.pem"
    trustme.CA().issue_cert("svc-ledger").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with pytest.raises(ConfigError, match="auth=external"):
        _broker_user(f"amqps://broker/?certfile={pem}&auth=external", "ledger")
    assert _broker_user("amqp://svc-ledger:pw@broker/", "ledger") == "svc-ledger"
