"""Values between XML and Python, following a Shape (see shapes.py for the mapping).

``decode`` reads a request element into the value the service receives and raises
``Invalid`` (http_bridge.params) naming the element path (``tags[2]``, ``address.city``);
the caller then checks the value against the full JSON Schema, as REST does. ``encode``
writes a result as XML text and raises ``ResultMismatch`` when the value is not what the
method's type hints promise (a ``str`` where ``list[int]`` was announced): a client that
generated code from the WSDL could not read it, so the bridge answers a fault instead of
sending XML that breaks the client's parser.

Values of shape ``any`` carry their type: ``xsi:type="xsd:long"`` (``xsd:boolean``,
``xsd:double``, ``xsd:string``, ``xsd:base64Binary``), ``amq:AnyList`` of ``<amq:item>``,
``amq:AnyMap`` of ``<amq:entry><amq:key/><amq:value/></amq:entry>``, ``xsi:nil`` for None.
Reading one without ``xsi:type``: ``<item>`` children are a list, ``<entry>`` children a
map, other children a dict by element name, no children the text.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from ..params import Invalid, coerce_text
from . import xmltext
from .names import ANY_LIST, ANY_MAP, BRIDGE, XSD, XSI
from .safexml import Node
from .shapes import Shape

__all__ = ["ResultMismatch", "decode", "encode", "is_nil"]

_NIL = f"{{{XSI}}}nil"
_TYPE = f"{{{XSI}}}type"
_XSD_INTEGERS = frozenset({
    "integer", "long", "int", "short", "byte", "nonNegativeInteger", "positiveInteger",
    "nonPositiveInteger", "negativeInteger", "unsignedLong", "unsignedInt", "unsignedShort", "unsignedByte",
})
_XSD_NUMBERS = frozenset({"double", "float", "decimal"})
_INT64 = range(-(2**63), 2**63)


class ResultMismatch(ValueError):
    """A result does not fit the shape its method announced; ``where`` names the spot."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


# ---------------------------------------------------------------------- reading


def is_nil(node: Node) -> bool:
    return node.attrib.get(_NIL, "").strip() in ("true", "1")


def decode(node: Node, shape: Shape, where: str) -> Any:
    """The value of ``node`` read as ``shape``; raises Invalid naming ``where``."""
    if is_nil(node):
        return None
    if shape.kind == "scalar":
        _no_children(node, where)
        raw = node.text
        return coerce_text(raw if shape.xsd == "string" else raw.strip(), shape.schema, where)
    if shape.kind == "array":
        assert shape.item is not None
        return [decode(child, shape.item, f"{where}[{index}]")
                for index, child in enumerate(_children(node, "item", where))]
    if shape.kind == "map":
        assert shape.value is not None
        return _decode_map(node, shape.value, where)
    if shape.kind == "record":
        _no_text(node, where)
        fields = {name: sub for name, sub, _ in shape.fields}
        record: dict[str, Any] = {}
        for child in node.children:
            name = child.local
            sub = fields.get(name)
            if sub is None:
                raise Invalid(f"{where}.{name}", "unknown field")
            if name in record:
                raise Invalid(f"{where}.{name}", "given more than once")
            record[name] = decode(child, sub, f"{where}.{name}")
        return record
    return decode_any(node, where)


def decode_any(node: Node, where: str) -> Any:
    """A value of no declared type: by its ``xsi:type``, else by its shape."""
    if is_nil(node):
        return None
    declared = node.attrib.get(_TYPE)
    if declared:
        namespace, local = node.resolve(declared)
        if namespace == XSD:
            _no_children(node, where)
            raw = node.text
            if local in _XSD_INTEGERS:
                return coerce_text(raw.strip(), {"type": "integer"}, where)
            if local in _XSD_NUMBERS:
                return coerce_text(raw.strip(), {"type": "number"}, where)
            if local == "boolean":
                return coerce_text(raw.strip(), {"type": "boolean"}, where)
            return raw
        if namespace == BRIDGE and local == ANY_LIST:
            return [decode_any(child, f"{where}[{index}]")
                    for index, child in enumerate(_children(node, "item", where))]
        if namespace == BRIDGE and local == ANY_MAP:
            return _decode_map(node, None, where)
    if not node.children:
        return node.text
    names = {child.local for child in node.children}
    if names == {"item"}:
        return [decode_any(child, f"{where}[{index}]") for index, child in enumerate(node.children)]
    if names == {"entry"}:
        return _decode_map(node, None, where)
    _no_text(node, where)
    record: dict[str, Any] = {}
    for child in node.children:
        if child.local in record:
            raise Invalid(f"{where}.{child.local}", "given more than once")
        record[child.local] = decode_any(child, f"{where}.{child.local}")
    return record


def _decode_map(node: Node, value_shape: Shape | None, where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for entry in _children(node, "entry", where):
        parts = {child.local: child for child in entry.children}
        if set(parts) != {"key", "value"} or len(entry.children) != 2:
            raise Invalid(where, "each <entry> holds one <key> and one <value>")
        _no_children(parts["key"], f"{where}.<key>")
        key = parts["key"].text
        if key in result:
            raise Invalid(f"{where}[{key[:40]!r}]", "key given more than once")
        at = f"{where}[{key[:40]!r}]"
        value = parts["value"]
        result[key] = decode_any(value, at) if value_shape is None else decode(value, value_shape, at)
    return result


def _children(node: Node, name: str, where: str) -> list[Node]:
    _no_text(node, where)
    for child in node.children:
        if child.local != name:
            raise Invalid(where, f"unexpected element <{child.local[:40]}>; expected <{name}> elements")
    return node.children


def _no_children(node: Node, where: str) -> None:
    if node.children:
        raise Invalid(where, f"expected a simple value, got the element <{node.children[0].local[:40]}>")


def _no_text(node: Node, where: str) -> None:
    if node.text.strip():
        raise Invalid(where, "expected child elements, got text")


# ---------------------------------------------------------------------- writing


def encode(value: Any, shape: Shape, qname: str, where: str = "result") -> str:
    """``value`` as the element ``qname`` (its children use the ``tns`` prefix)."""
    out: list[str] = []
    try:
        _encode(value, shape, qname, out, where)
    except RecursionError:
        raise ResultMismatch(where, "nested too deeply to write as XML") from None
    return "".join(out)


def _encode(value: Any, shape: Shape, qname: str, out: list[str], where: str) -> None:
    if value is None:
        out.append(f'<{qname} xsi:nil="true"/>')
        return
    kind = shape.kind
    if kind == "scalar":
        out.append(f"<{qname}>{_scalar(value, shape, where)}</{qname}>")
    elif kind == "array":
        assert shape.item is not None
        if not isinstance(value, list | tuple):
            raise ResultMismatch(where, f"expected a list, got {_kind(value)}")
        out.append(f"<{qname}>")
        for index, item in enumerate(value):
            _encode(item, shape.item, "tns:item", out, f"{where}[{index}]")
        out.append(f"</{qname}>")
    elif kind == "map":
        assert shape.value is not None
        if not isinstance(value, dict):
            raise ResultMismatch(where, f"expected a mapping, got {_kind(value)}")
        out.append(f"<{qname}>")
        for key, item in value.items():
            out.append(f"<tns:entry><tns:key>{_text(str(key), where)}</tns:key>")
            _encode(item, shape.value, "tns:value", out, f"{where}[{str(key)[:40]!r}]")
            out.append("</tns:entry>")
        out.append(f"</{qname}>")
    elif kind == "record":
        if not isinstance(value, dict):
            raise ResultMismatch(where, f"expected a mapping, got {_kind(value)}")
        out.append(f"<{qname}>")
        for name, sub, _ in shape.fields:  # declared fields only, in declared order
            if name in value:
                _encode(value[name], sub, f"tns:{name}", out, f"{where}.{name}")
        out.append(f"</{qname}>")
    else:
        _encode_any(value, qname, out, where)


def _scalar(value: Any, shape: Shape, where: str) -> str:
    xsd = shape.xsd
    if isinstance(value, bool):
        if xsd == "boolean" or (xsd == "string" and "anyOf" in shape.schema):
            return "true" if value else "false"
    elif isinstance(value, int):
        if xsd in ("long", "double", "decimal") or (xsd == "string" and "anyOf" in shape.schema):
            return str(value)
    elif isinstance(value, float):
        if xsd in ("double", "decimal") or (xsd == "string" and "anyOf" in shape.schema):
            return _double(value)
    elif isinstance(value, str):
        if xsd not in ("long", "double", "boolean"):
            return _text(value, where)
    raise ResultMismatch(where, f"expected {_expected(xsd)}, got {_kind(value)}")


def _encode_any(value: Any, qname: str, out: list[str], where: str) -> None:
    if value is None:
        out.append(f'<{qname} xsi:nil="true"/>')
    elif isinstance(value, bool):
        out.append(f'<{qname} xsi:type="xsd:boolean">{"true" if value else "false"}</{qname}>')
    elif isinstance(value, int):
        xsd = "long" if value in _INT64 else "integer"
        out.append(f'<{qname} xsi:type="xsd:{xsd}">{value}</{qname}>')
    elif isinstance(value, float):
        out.append(f'<{qname} xsi:type="xsd:double">{_double(value)}</{qname}>')
    elif isinstance(value, str):
        out.append(f'<{qname} xsi:type="xsd:string">{_text(value, where)}</{qname}>')
    elif isinstance(value, bytes | bytearray):
        encoded = base64.b64encode(value).decode("ascii")
        out.append(f'<{qname} xsi:type="xsd:base64Binary">{encoded}</{qname}>')
    elif isinstance(value, list | tuple):
        out.append(f'<{qname} xsi:type="amq:{ANY_LIST}">')
        for index, item in enumerate(value):
            _encode_any(item, "amq:item", out, f"{where}[{index}]")
        out.append(f"</{qname}>")
    elif isinstance(value, dict):
        out.append(f'<{qname} xsi:type="amq:{ANY_MAP}">')
        for key, item in value.items():
            out.append(f"<amq:entry><amq:key>{_text(str(key), where)}</amq:key>")
            _encode_any(item, "amq:value", out, f"{where}[{str(key)[:40]!r}]")
            out.append("</amq:entry>")
        out.append(f"</{qname}>")
    else:
        raise ResultMismatch(where, f"{_kind(value)} has no XML form")


def _double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(value)


def _text(value: str, where: str) -> str:
    try:
        return xmltext.text(value)
    except xmltext.NotRepresentable as exc:
        raise ResultMismatch(where, str(exc)) from None


def _expected(xsd: str) -> str:
    return {"long": "an integer", "double": "a number", "boolean": "a boolean"}.get(xsd, "a string")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
