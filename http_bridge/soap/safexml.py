"""Untrusted XML in, a small tree out: no DTD, no entities, bounded depth and element count.

The hardening against entity tricks comes from defusedxml, a maintained library that does
exactly that job, rather than from code of ours: its parser refuses a ``<!DOCTYPE>`` (SOAP
1.1 §3: "a SOAP message MUST NOT contain a Document Type Declaration"), any entity
declaration and any external reference, as expat reports them and before anything is
expanded or fetched. So a billion-laughs document stops at its DOCTYPE, and an XXE payload
never opens its file or URL. What defusedxml does not bound we bound here, in the tree
builder: element nesting (``max_depth``) and element count (``max_elements``); the byte
size is bounded before parsing (the gateway's ``max_body_size``). Processing instructions
are refused too (SOAP 1.1 §3 forbids them); comments are dropped.

The tree keeps what SOAP needs and ElementTree drops: the namespace prefixes in scope at
each element, because ``xsi:type="xsd:long"`` names a type by a prefixed name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = ["Node", "XmlRefused", "parse_xml"]


class XmlRefused(ValueError):
    """The document is not well-formed, or uses something a SOAP message may not use.

    ``reason`` is a stable word for logs and fault details: ``malformed``, ``dtd``,
    ``entity``, ``external_reference``, ``processing_instruction``, ``too_deep``,
    ``too_many_elements``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True, eq=False)
class Node:
    """One element: ``tag`` is ``{namespace}local`` (or ``local``), ``nsmap`` the prefixes in scope."""

    tag: str
    attrib: dict[str, str]
    nsmap: dict[str, str]
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.tag[1:].partition("}")[0] if self.tag.startswith("{") else ""

    @property
    def local(self) -> str:
        return self.tag.rpartition("}")[2]

    @property
    def text(self) -> str:
        """All character data directly inside this element (not inside its children)."""
        return "".join(self.texts)

    def resolve(self, qname: str) -> tuple[str, str]:
        """``"xsd:long"`` -> (namespace, local) with the prefixes in scope here."""
        prefix, colon, local = qname.strip().rpartition(":")
        return self.nsmap.get(prefix if colon else "", ""), local


class _Builder:
    """The parser's target: builds Nodes and enforces the structural bounds as it goes."""

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.root: Node | None = None
        self._stack: list[Node] = []
        self._count = 0
        self._declared: dict[str, str] = {}

    def start_ns(self, prefix: str, uri: str) -> None:
        self._declared[prefix] = uri

    def end_ns(self, prefix: str) -> None:
        pass  # scopes follow the element stack

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if len(self._stack) >= self.max_depth:
            raise XmlRefused("too_deep", f"elements are nested deeper than {self.max_depth} levels")
        self._count += 1
        if self._count > self.max_elements:
            raise XmlRefused("too_many_elements", f"the document has more than {self.max_elements} elements")
        scope = self._stack[-1].nsmap if self._stack else {}
        if self._declared:
            scope = {**scope, **self._declared}
            self._declared = {}
        node = Node(tag, attrib, scope)
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self.root = node
        self._stack.append(node)

    def end(self, tag: str) -> None:
        self._stack.pop()

    def data(self, text: str) -> None:
        if self._stack:
            self._stack[-1].texts.append(text)

    def pi(self, target: str, data: str) -> None:
        raise XmlRefused("processing_instruction",
                         f"processing instructions are not allowed in a SOAP message (<?{target[:40]} ...?>)")

    def close(self) -> Node | None:
        return self.root


_REFUSALS = (
    ("DTDForbidden", "dtd", "a document type declaration (DTD) is not allowed in a SOAP message"),
    ("EntitiesForbidden", "entity", "entity declarations are not allowed"),
    ("ExternalReferenceForbidden", "external_reference", "external references are not allowed"),
)


def parse_xml(data: bytes, *, max_depth: int = 64, max_elements: int = 50_000) -> Node:
    """The root element of ``data``; raises XmlRefused naming what is wrong (never expands)."""
    builder = _Builder(max_depth, max_elements)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except XmlRefused:
        raise
    except DefusedXmlException as exc:
        name = type(exc).__name__
        for class_name, reason, message in _REFUSALS:
            if name == class_name:
                raise XmlRefused(reason, message) from None
        raise XmlRefused("dtd", f"refused: {name}") from None
    except ParseError as exc:
        raise XmlRefused("malformed", f"the body is not well-formed XML: {exc}") from None
    except (LookupError, UnicodeError) as exc:  # an encoding that the declaration names but Python lacks
        raise XmlRefused("malformed", f"the body's encoding cannot be read: {exc}") from None
    if not isinstance(root, Node):
        raise XmlRefused("malformed", "the body holds no XML element")
    return root
