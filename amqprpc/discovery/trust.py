"""What a registry may believe of an announcement: who sent it, when, and which rule wins.

Anyone holding broker credentials can publish on the discovery exchange, and the bridge
builds its routes and access rules from what arrives there. Three defences, pure functions:

* **Signatures.** With a deployment key (``discovery_key``), every announcement carries
  ``x-amqprpc-signature: v1=<hex HMAC-SHA256>`` over its routing key, content type and body;
  a registry that has the key drops anything unsigned or signed otherwise. Several keys
  (comma-separated) allow rotation: the first signs, any verifies.
* **Clock bounds.** ``sent_at`` must lie within ``max_skew`` of the receiver's clock and
  ``started_at`` may not lie after it, so an instance cannot win the "newest instance" election
  with ``started_at: 1e18``, and an old announcement replayed later is refused.
* **Conflicts narrow.** When live instances of one service disagree about a method, the
  bridge applies the most restrictive rule of them (:func:`narrowest`): public only if all
  say public, roles the intersection, exposed over HTTP only if every instance exposes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from ..exceptions import ConfigError
from ..signatures import SIGNATURE_HEADER as SIGNATURE_HEADER
from ..signatures import MessageSigner
from .descriptor import DescriptorError, MethodDescriptor, ServiceDescriptor

DEFAULT_MAX_SKEW = 300.0  # seconds: generous for hosts without NTP, short for replays


class AnnouncementSigner(MessageSigner):
    """Signs and verifies announcements; a bad one is a ``DescriptorError`` to the registry."""

    what = "announcement"
    error = DescriptorError


def parse_owners(value: str) -> dict[str, str]:
    """``discovery_owners`` (``"users=svc-users,orders=svc-orders"``) as service -> broker user."""
    owners: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        service, sep, user = (item.strip() for item in entry.partition("="))
        if not sep or not service or not user:
            raise ConfigError(f"discovery_owners: {entry!r} is not service=broker_user")
        owners[service] = user
    return owners


def check_clock(descriptor: ServiceDescriptor, now: float, max_skew: float = DEFAULT_MAX_SKEW) -> None:
    """Raise DescriptorError when the announcement's times cannot be true."""
    sent_at, started_at = descriptor.sent_at, descriptor.started_at
    if not (math.isfinite(sent_at) and math.isfinite(started_at)):
        raise DescriptorError("sent_at and started_at must be finite numbers")
    if abs(sent_at - now) > max_skew:
        raise DescriptorError(f"sent_at is {sent_at - now:+.0f} s from this host's clock "
                              f"(more than {max_skew:.0f} s: a replay, or a clock to fix)")
    if started_at > now + max_skew:
        raise DescriptorError("started_at lies in the future")
    if started_at > sent_at:
        raise DescriptorError("started_at is after sent_at")


def narrowest(
    newest: Sequence[MethodDescriptor], others: Iterable[Sequence[MethodDescriptor]]
) -> tuple[tuple[MethodDescriptor, ...], list[str]]:
    """``newest``'s methods, each under the most restrictive rule any live instance gives it.

    Returns the methods and one line per conflict found (for the log). Methods only the
    newest instance has (a deploy that adds one) are kept as it announces them.
    """
    by_name: dict[str, list[MethodDescriptor]] = {}
    for methods in others:
        for method in methods:
            by_name.setdefault(method.name, []).append(method)
    merged: list[MethodDescriptor] = []
    conflicts: list[str] = []
    for method in newest:
        peers = by_name.get(method.name, [])
        if not peers:
            merged.append(method)
            continue
        narrowed = _narrow(method, peers)
        if narrowed != method:
            conflicts.append(_describe(method, narrowed))
        merged.append(narrowed)
    return tuple(merged), conflicts


def _narrow(method: MethodDescriptor, peers: list[MethodDescriptor]) -> MethodDescriptor:
    everyone = [method, *peers]
    public = all(m.public for m in everyone)
    idempotent = all(m.idempotent for m in everyone)  # retried only if every instance agrees
    http = method.http if all(m.http is not None for m in everyone) else None
    # Roles are "any of": a non-public method with no roles admits every authenticated
    # caller (no constraint); one with roles admits their holders. Both must hold.
    constraints = [set(m.roles) for m in everyone if not m.public and m.roles]
    roles: tuple[str, ...] = ()
    if constraints:
        allowed = set.intersection(*constraints)
        if not allowed:
            http = None  # no caller satisfies every instance: not exposed at all
        roles = tuple(sorted(allowed)) if allowed else tuple(sorted(set().union(*constraints)))
    return replace(method, public=public, http=http, roles=roles, idempotent=idempotent)


def _describe(announced: MethodDescriptor, applied: MethodDescriptor) -> str:
    def rule(m: MethodDescriptor) -> str:
        exposure = str(m.http) if m.http else "not over HTTP"
        access = "public" if m.public else (f"roles {','.join(m.roles)}" if m.roles else "authenticated")
        return f"{exposure}, {access}"

    return f"{announced.name}: instances disagree; newest says {rule(announced)}, applied {rule(applied)}"
