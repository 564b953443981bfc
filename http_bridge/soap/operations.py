"""Which methods are SOAP operations, and what each one reads and returns.

A method is a SOAP operation exactly when it is an HTTP route: it declares ``http=`` in
``@rpc`` (issue 9: "a method marked for HTTP is also reachable as a SOAP operation").
Methods without it stay internal, as they do for REST. Its roles, ``public`` flag,
deadline (``[bridge.deadlines]``) and error table are the route's. The catalog is built
from the registry's live descriptors, like the route table, and rebuilt when the
registry's generation changes; ``services = [...]`` limits it the same way.

The request is document/literal "wrapped": the Body holds one element named after the
operation, with one child element per argument (by parameter name, in any order);
absent optional arguments take the method's default. The answer's Body holds
``<op>Response`` with one ``<result>`` child.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from amqprpc.discovery import MethodDescriptor, ParamDescriptor, ServiceView

from ..errors import ApiError
from ..params import Invalid, validate
from .codec import decode, decode_any
from .names import service_namespace, soap_action
from .safexml import Node
from .shapes import Shape, is_ncname, shape_of

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SoapOperation:
    name: str
    method: MethodDescriptor
    params: tuple[tuple[ParamDescriptor, Shape], ...]  # the ones a keyword caller can name
    result: Shape
    deadline: float
    action: str

    def decode_arguments(self, element: Node) -> dict[str, Any]:
        """The call's keyword arguments from the operation element; ApiError 400 naming the field."""
        try:
            return self._decode(element)
        except Invalid as exc:
            raise ApiError(400, "validation_error", f"{exc.where}: {exc.problem}",
                           details=[{"field": exc.where, "problem": exc.problem}]) from None

    def _decode(self, element: Node) -> dict[str, Any]:
        if element.text.strip():
            raise Invalid(self.name, "expected one element per argument, got text")
        by_name = {param.name: (param, shape) for param, shape in self.params}
        kwargs: dict[str, Any] = {}
        for child in element.children:
            name = child.local
            if name in kwargs:
                raise Invalid(name, "given more than once")
            known = by_name.get(name)
            if known is None:
                if not self.method.variadic_keywords or name.startswith("_"):
                    raise Invalid(name, "unknown parameter")
                kwargs[name] = decode_any(child, name)  # taken by **kwargs: no type to follow
                continue
            param, shape = known
            value = decode(child, shape, name)
            validate(value, param.schema, name)
            kwargs[name] = value
        for param, _ in self.params:
            if param.required and param.name not in kwargs:
                raise Invalid(param.name, "required parameter is missing")
        return kwargs


@dataclass(frozen=True, slots=True)
class SoapService:
    name: str
    namespace: str
    operations: dict[str, SoapOperation]
    errors: dict[str, int]
    doc: str = ""

    @property
    def any_public(self) -> bool:
        """True if some operation needs no credentials (then the body is read before a 401)."""
        return any(op.method.public for op in self.operations.values())


def build_catalog(views: Iterable[ServiceView], *, allowed: tuple[str, ...] = (),
                  deadline_for: Callable[[str, str], float] = lambda service, method: 10.0
                  ) -> dict[str, SoapService]:
    """service name -> its SOAP operations (services without any are left out)."""
    catalog: dict[str, SoapService] = {}
    for view in views:
        if allowed and view.name not in allowed:
            continue
        operations: dict[str, SoapOperation] = {}
        elements: set[str] = set()
        for method in sorted(view.methods, key=lambda m: m.name):
            if method.http is None:
                continue
            names = {method.name, f"{method.name}Response"}
            if names & elements:
                _log.warning("%s.%s: its XML element names clash with another operation's; "
                             "not exposed over SOAP", view.name, method.name)
                continue
            elements |= names
            operations[method.name] = _operation(view.name, method, deadline_for(view.name, method.name))
        if operations:
            catalog[view.name] = SoapService(view.name, service_namespace(view.name), operations,
                                             dict(view.errors))
    return catalog


def _operation(service: str, method: MethodDescriptor, deadline: float) -> SoapOperation:
    params = []
    for param in method.params:
        if param.positional_only:
            continue  # cannot be named by a keyword caller; REST leaves them out too
        if not is_ncname(param.name):
            _log.warning("%s.%s: parameter %r cannot be an XML element name; left out of SOAP",
                         service, method.name, param.name)
            continue
        params.append((param, shape_of(param.schema)))
    return SoapOperation(method.name, method, tuple(params), shape_of(method.returns), float(deadline),
                         soap_action(service, method.name))
