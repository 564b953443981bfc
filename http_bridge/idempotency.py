"""``Idempotency-Key``: a client may retry a request safely; the call runs once per key.

Keys are scoped: a key belongs to the principal that sent it, and for anonymous calls to
the client address it came from (``scope_of``), so one client can neither replay nor
block another's key. The first request with a key in a scope runs the call and, when its outcome is final
(a 2xx or a 4xx), the response is kept for ``ttl`` seconds: a retry with the same key and
the same request gets the same response back (``Idempotent-Replayed: true``) without a new
call. While the first is still running a retry gets 409; the same key with a different
request (verb, path, query or body) gets 422. Outcomes that are not final (503, 504, 500:
the call may or may not have run) are not kept, so the client's retry runs again; the
service gets ``idempotency_key`` in the call's context, so a service that keeps its own
record can recognise the repeat: not the client's key but ``service_key(scope, key)``, a
digest, so the service's record is scoped too and never holds what the client chose.
At most ``max_entries`` keys are kept (LRU).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .auth import Identity
from .errors import ApiError

MAX_KEY_LENGTH = 255
_DIGEST_TAG = b"amqprpc-idempotency-v1"


def scope_of(identity: Identity, client_address: str) -> str:
    """Whose key it is: the principal; for an anonymous call, the client address."""
    if identity.method == "anonymous":
        return f"anonymous:{client_address}"
    return f"principal:{identity.principal}"


def service_key(scope: str, key: str) -> str:
    """What the service sees as ``idempotency_key``: SHA-256 over the length-prefixed (scope, key).

    Plain SHA-256, not an HMAC with a per-process secret: every ``--workers`` process and
    every restart must give a retry the same value, or the service's own record would
    miss it, and a shared secret would be one more thing to distribute. The length
    prefixes keep ("a:b", "c") and ("a", "b:c") apart.
    """
    digest = hashlib.sha256()
    for part in (_DIGEST_TAG, scope.encode("utf-8"), key.encode("utf-8")):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    expires_at: float
    response: StoredResponse | None = None  # None: the first request is still running


class IdempotencyCache:
    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    @staticmethod
    def fingerprint(verb: str, path_qs: str, body: bytes) -> str:
        return hashlib.sha256(b"\0".join([verb.encode(), path_qs.encode(), body])).hexdigest()

    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        """A stored response to replay, or None after reserving the key for this request."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ApiError(400, "invalid_idempotency_key",
                           f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters")
        now = self._clock()
        slot = (scope, key)
        entry = self._entries.get(slot)
        if entry is not None and entry.expires_at <= now:
            del self._entries[slot]
            entry = None
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ApiError(422, "idempotency_key_reused",
                               "this Idempotency-Key was used for a different request")
            if entry.response is None:
                raise ApiError(409, "idempotency_key_in_use",
                               "a request with this Idempotency-Key is still running")
            self._entries.move_to_end(slot)
            return entry.response
        self._entries[slot] = _Entry(fingerprint, now + self.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return None

    def finish(self, scope: str, key: str, response: StoredResponse) -> None:
        """Keep a final outcome; forget the key for one that is not (5xx)."""
        slot = (scope, key)
        entry = self._entries.get(slot)
        if entry is None:
            return
        if response.status >= 500:
            del self._entries[slot]
        else:
            entry.response = response
            entry.expires_at = self._clock() + self.ttl

    def abandon(self, scope: str, key: str) -> None:
        """The request ended without a response (cancelled): release the key."""
        entry = self._entries.get((scope, key))
        if entry is not None and entry.response is None:
            del self._entries[(scope, key)]

    def __len__(self) -> int:
        return len(self._entries)
