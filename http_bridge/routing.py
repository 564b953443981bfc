"""The route table: HTTP verb + path -> (service, method), built from the live registry.

Only methods that declare ``http=`` are routed: there is no generic pass-through, so
deploying the bridge never exposes a method its author did not mean to expose. The table
is rebuilt when the registry's generation changes (a service appears, goes, or changes
its methods) and is immutable, so a request sees one consistent table.

Matching: static paths by dictionary lookup, templated ones (``/users/{user_id}``) by
regex, most specific first (more literal segments win). A path parameter is one segment,
percent-decoded. Two services claiming the same verb and path: the first in (service,
method) order keeps it and the clash is logged; paths the bridge serves itself
(``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/docs``, ``/soap/...``) cannot
be claimed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from amqprpc.discovery import MethodDescriptor, ServiceView

from .errors import ApiError

_log = logging.getLogger(__name__)

RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/ws", "/realtime/"})
RESERVED_PREFIXES = ("/soap/",)  # the SOAP front end (http_bridge.soap)
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """One exposed method."""

    verb: str
    template: str
    service: str
    method: MethodDescriptor
    errors: dict[str, int]
    deadline: float

    @property
    def roles(self) -> tuple[str, ...]:
        return self.method.roles

    @property
    def public(self) -> bool:
        return self.method.public

    @property
    def label(self) -> str:
        """Bounded-cardinality name for metrics and logs."""
        return f"{self.verb} {self.template}"


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    names: tuple[str, ...]
    literal_segments: int
    template: str


@dataclass
class RouteTable:
    """Immutable after ``build``; ``match`` is safe from any task."""

    generation: int = -1
    routes: list[Route] = field(default_factory=list)
    _static: dict[str, dict[str, Route]] = field(default_factory=dict)
    _dynamic: list[tuple[_Pattern, dict[str, Route]]] = field(default_factory=list)

    @classmethod
    def build(cls, views: Iterable[ServiceView], *, generation: int, allowed: tuple[str, ...] = (),
              deadline_for: Callable[[str, str], float] = lambda service, method: 10.0) -> RouteTable:
        table = cls(generation=generation)
        by_template: dict[str, dict[str, Route]] = {}
        for view in sorted(views, key=lambda v: v.name):
            if allowed and view.name not in allowed:
                continue
            for method in sorted(view.methods, key=lambda m: m.name):
                binding = method.http
                if binding is None:
                    continue
                if binding.path in RESERVED_PATHS or binding.path.startswith(RESERVED_PREFIXES):
                    _log.warning("%s.%s claims %s, which the bridge serves itself: ignored",
                                 view.name, method.name, binding)
                    continue
                verbs = by_template.setdefault(binding.path, {})
                holder = verbs.get(binding.method)
                if holder is not None:
                    _log.warning("%s.%s and %s.%s both claim %s; %s.%s keeps it", holder.service,
                                 holder.method.name, view.name, method.name, binding,
                                 holder.service, holder.method.name)
                    continue
                route = Route(binding.method, binding.path, view.name, method, dict(view.errors),
                              float(deadline_for(view.name, method.name)))
                verbs[binding.method] = route
                table.routes.append(route)
        for template, verbs in by_template.items():
            if not verbs:
                continue
            if not _PARAM.search(template):
                table._static[template] = verbs
            else:
                table._dynamic.append((_compile(template), verbs))
        table._dynamic.sort(key=lambda item: (-item[0].literal_segments, item[0].template))
        return table

    def match(self, verb: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route and its decoded path parameters; ApiError 404 or 405 otherwise."""
        verbs, params = self._lookup(raw_path)
        if verbs is None:
            raise ApiError(404, "not_found", f"no route for {raw_path}")
        route = verbs.get("GET" if verb == "HEAD" else verb)
        if route is None:
            allowed = ", ".join(sorted(verbs))
            raise ApiError(405, "method_not_allowed", f"{verb} is not allowed here; use {allowed}",
                           headers={"Allow": allowed})
        return route, params

    def verbs(self, raw_path: str) -> tuple[str, ...] | None:
        """The HTTP methods ``raw_path`` answers (HEAD with GET), None when it is no route."""
        verbs, _params = self._lookup(raw_path)
        if verbs is None:
            return None
        names = set(verbs)
        if "GET" in names:
            names.add("HEAD")
        return tuple(sorted(names))

    def _lookup(self, raw_path: str) -> tuple[dict[str, Route] | None, dict[str, str]]:
        verbs = self._static.get(raw_path)
        if verbs is not None:
            return verbs, {}
        for pattern, candidate in self._dynamic:
            found = pattern.regex.match(raw_path)
            if found is not None:
                return candidate, {name: unquote(found.group(name)) for name in pattern.names}
        return None, {}


def _compile(template: str) -> _Pattern:
    names: list[str] = []
    parts: list[str] = []
    position = 0
    for found in _PARAM.finditer(template):
        parts.append(re.escape(template[position:found.start()]))
        parts.append(f"(?P<{found.group(1)}>[^/]+)")
        names.append(found.group(1))
        position = found.end()
    parts.append(re.escape(template[position:]))
    literal = sum(1 for segment in template.split("/") if segment and not _PARAM.search(segment))
    return _Pattern(re.compile("^" + "".join(parts) + "$"), tuple(names), literal, template)
