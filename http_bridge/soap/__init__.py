"""SOAP 1.1 at the bridge: the methods routed over HTTP are also SOAP operations.

``POST /soap/<service>`` takes document/literal envelopes, ``GET /soap/<service>?wsdl``
describes them, generated from the live service descriptors. Auth, limits, deadlines and
metrics are the gateway's own. See docs/soap.md.
"""

from .endpoint import SOAP_PREFIX, SoapEndpoint

__all__ = ["SOAP_PREFIX", "SoapEndpoint"]
