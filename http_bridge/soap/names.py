"""The names the SOAP front end puts on the wire: namespaces, prefixes, actions.

Pinned in docs/protocol.md ("SOAP 1.1 at the bridge"): clients generate code from them,
so changing one breaks every generated client.

* A service's target namespace is ``urn:amqprpc:service:<service>``; its operations,
  their wrapper elements (``<op>``, ``<op>Response``) and every element under them
  (``elementFormDefault="qualified"``) are in it.
* The bridge's own types (``AnyList``, ``AnyMap``) and the fault detail element
  ``error`` are in ``urn:amqprpc:soap``, the same for every service.
* An operation's SOAPAction is ``urn:amqprpc:service:<service>#<op>``.
"""

from __future__ import annotations

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP_HTTP = "http://schemas.xmlsoap.org/soap/http"
BRIDGE = "urn:amqprpc:soap"

# Prefixes the bridge declares on every document it writes.
PREFIXES = {"soapenv": SOAP_ENV, "xsi": XSI, "xsd": XSD, "amq": BRIDGE}

ANY_LIST = "AnyList"
ANY_MAP = "AnyMap"
FAULT_DETAIL = "error"


def service_namespace(service: str) -> str:
    return f"urn:amqprpc:service:{service}"


def soap_action(service: str, operation: str) -> str:
    return f"{service_namespace(service)}#{operation}"


def declarations(**extra: str) -> str:
    """``xmlns:...`` attributes for the bridge's prefixes plus ``extra`` (prefix=uri)."""
    return " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in {**PREFIXES, **extra}.items())
