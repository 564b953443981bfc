"""SOAP 1.1 envelopes: read a request's Body, write a reply or a Fault. Pure functions.

What a request must be (SOAP 1.1 §4, document/literal wrapped): an ``Envelope`` in the
SOAP 1.1 namespace (another namespace, such as SOAP 1.2's, is a ``VersionMismatch``
fault), an optional ``Header`` and a ``Body`` holding exactly one element, the operation.
Header entries are ignored unless they carry ``mustUnderstand="1"`` for this node: the
bridge understands none, so those get a ``MustUnderstand`` fault (§4.2.3) rather than
being silently skipped (a WS-Security header the bridge cannot check must not pass).

A Fault (§4.4) carries ``faultcode`` ``soapenv:Client.<Name>`` for what the caller can
fix (the bridge's 4xx), ``soapenv:Server.<Name>`` for the rest; ``<Name>`` is the remote
exception's type when the service declared it (``Client.OutOfStock``), else the bridge's
error code in CamelCase (``Client.Unauthorized``, ``Server.DeadlineExceeded``).
``detail`` holds ``amq:error`` with the same fields as the REST error body (type, code,
status, message, id, and the failing fields).
"""

from __future__ import annotations

from typing import Any

from ..errors import ApiError
from . import xmltext
from .codec import encode
from .names import BRIDGE, FAULT_DETAIL, SOAP_ENV, declarations
from .operations import SoapOperation, SoapService
from .safexml import Node
from .shapes import is_ncname

__all__ = ["fault_code", "operation_element", "write_fault", "write_reply"]

_XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_NEXT_ACTOR = "http://schemas.xmlsoap.org/soap/actor/next"


def operation_element(root: Node) -> Node:
    """The one element in the Body; ApiError(400) with a SOAP-specific code otherwise."""
    if root.local != "Envelope":
        raise ApiError(400, "not_an_envelope", f"expected a SOAP 1.1 Envelope, got <{root.local[:40]}>")
    if root.namespace != SOAP_ENV:
        raise ApiError(400, "version_mismatch",
                       f"this endpoint speaks SOAP 1.1 ({SOAP_ENV}); the Envelope is in "
                       f"{root.namespace[:100] or 'no namespace'}")
    header = body = None
    for child in root.children:
        if child.tag == f"{{{SOAP_ENV}}}Header" and header is None and body is None:
            header = child
        elif child.tag == f"{{{SOAP_ENV}}}Body" and body is None:
            body = child
    if body is None:
        raise ApiError(400, "not_an_envelope", "the Envelope has no Body")
    if header is not None:
        _check_header(header)
    if len(body.children) != 1 or body.text.strip():
        raise ApiError(400, "invalid_body",
                       f"the Body must hold exactly one element (the operation), not {len(body.children)}")
    return body.children[0]


def _check_header(header: Node) -> None:
    for entry in header.children:
        flag = entry.attrib.get(f"{{{SOAP_ENV}}}mustUnderstand", "0").strip()
        actor = entry.attrib.get(f"{{{SOAP_ENV}}}actor", _NEXT_ACTOR).strip()
        if flag == "1" and actor == _NEXT_ACTOR:
            raise ApiError(400, "must_understand",
                           f"the header entry <{entry.local[:40]}> must be understood, and this "
                           "endpoint understands no header entries")


def write_reply(service: SoapService, operation: SoapOperation, result: Any) -> bytes:
    """The reply envelope; raises codec.ResultMismatch if ``result`` breaks the method's hints."""
    payload = encode(result, operation.result, "tns:result")
    name = operation.name
    return (f"{_XML_DECLARATION}<soapenv:Envelope {declarations(tns=service.namespace)}>"
            f"<soapenv:Body><tns:{name}Response>{payload}</tns:{name}Response></soapenv:Body>"
            "</soapenv:Envelope>").encode()


def fault_code(error: ApiError) -> str:
    """The faultcode of an error (a QName with the ``soapenv`` prefix)."""
    if error.code == "version_mismatch":
        return "soapenv:VersionMismatch"
    if error.code == "must_understand":
        return "soapenv:MustUnderstand"
    side = "Client" if error.status < 500 else "Server"
    name = error.remote_type
    if not name or not is_ncname(name):
        name = "".join(part.capitalize() for part in error.code.split("_"))
    return f"soapenv:{side}.{name}"


def write_fault(error: ApiError, request_id: str) -> bytes:
    """The Fault envelope for ``error`` (HTTP 500 per SOAP 1.1 §6.2 and WS-I BP R1126)."""
    detail = ""
    if error.code != "must_understand":  # §4.4: detail is about the Body, never about headers
        fields = [("type", error.remote_type), ("code", error.code), ("status", str(error.status)),
                  ("message", error.message), ("id", request_id)]
        parts = [f"<amq:{name}>{xmltext.text(xmltext.clean(value))}</amq:{name}>"
                 for name, value in fields if value is not None]
        for item in error.details or ():
            parts.append("<amq:details>" + "".join(
                f"<amq:{key}>{xmltext.text(xmltext.clean(str(item[key])))}</amq:{key}>"
                for key in ("field", "problem") if key in item) + "</amq:details>")
        detail = f"<detail><amq:{FAULT_DETAIL}>{''.join(parts)}</amq:{FAULT_DETAIL}></detail>"
    return (f'{_XML_DECLARATION}<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:amq="{BRIDGE}">'
            f"<soapenv:Body><soapenv:Fault><faultcode>{xmltext.text(fault_code(error))}</faultcode>"
            f"<faultstring>{xmltext.text(xmltext.clean(error.message))}</faultstring>{detail}"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>").encode()
