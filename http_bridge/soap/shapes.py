"""A parameter's JSON Schema (from the service descriptor) as the XML shape SOAP uses for it.

One function decides, and both the WSDL generator and the envelope codec follow its
answer, so what the WSDL promises is what the bridge reads and writes::

    integer -> xsd:long     number -> xsd:double     boolean -> xsd:boolean
    string -> xsd:string (format date-time/date/time -> xsd:dateTime/date/time,
              decimal -> xsd:decimal; the service still receives the text)
    enum of strings (or of integers) -> a restriction of xsd:string (xsd:long)
    several simple types (int | str) -> xsd:string, read as the first type the text fits
    list[X]           -> <name><item>X</item>...</name>          (empty list: <name/>)
    dict[str, X]      -> <name><entry><key>k</key><value>X</value></entry>...</name>
    TypedDict / dataclass -> <name><field>...</field>...</name>  (one element per field)
    X | None          -> X, nillable: <name xsi:nil="true"/> is None
    anything else ({} "any value", mixed unions, tuples) -> xsd:anyType (values carry xsi:type)

``xsd:long`` rather than ``xsd:integer``: Java and .NET map it to a native 64-bit integer
(.NET maps ``xsd:integer`` to a string); the bridge still reads any integer a client sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Shape", "is_ncname", "shape_of"]

Kind = Literal["scalar", "array", "map", "record", "any"]

_MAX_DEPTH = 16  # schemas from the wire are not trusted to be shallow
_NCNAME = re.compile(r"^[^\W\d][\w.\-]*$")
_FORMATS = {"date-time": "dateTime", "date": "date", "time": "time", "decimal": "decimal"}
_SIMPLE = {"integer": "long", "number": "double", "boolean": "boolean", "string": "string"}


def is_ncname(name: str) -> bool:
    """True if ``name`` can be an XML element name without a prefix."""
    return bool(_NCNAME.match(name))


@dataclass(frozen=True, slots=True)
class Shape:
    """How one value travels in XML. ``schema`` is the JSON Schema of its non-null part."""

    kind: Kind
    nullable: bool = False
    xsd: str = ""  # scalar: the XSD built-in type's local name
    enum: tuple[Any, ...] = ()  # scalar: the allowed values
    item: Shape | None = None  # array
    value: Shape | None = None  # map
    fields: tuple[tuple[str, Shape, bool], ...] = ()  # record: (name, shape, required)
    schema: Any = None

    def nullable_copy(self) -> Shape:
        return Shape(self.kind, True, self.xsd, self.enum, self.item, self.value, self.fields, self.schema)


ANY = Shape("any", nullable=True, schema={})


def shape_of(schema: Any, _depth: int = 0) -> Shape:
    """The XML shape of a JSON Schema (the subset ``amqprpc.discovery.schema`` produces)."""
    if not isinstance(schema, dict) or not schema or _depth > _MAX_DEPTH:
        return ANY
    depth = _depth + 1
    kind = schema.get("type")
    if isinstance(kind, list):  # {"type": ["string", "null"]}: the same as an anyOf
        rest = {key: value for key, value in schema.items() if key != "type"}
        return shape_of({"anyOf": [{**rest, "type": k} for k in kind]}, _depth)
    options = schema.get("anyOf")
    if isinstance(options, list) and options:
        return _union(options, depth)
    if "enum" in schema:
        return _enum(schema)
    if kind in _SIMPLE:
        xsd = _SIMPLE[kind]
        if kind == "string":
            xsd = _FORMATS.get(schema.get("format", ""), "string")
        return Shape("scalar", xsd=xsd, schema=schema)
    if kind == "null":
        return ANY
    if kind == "array":
        items = schema.get("items")
        if "prefixItems" in schema or not isinstance(items, dict):
            return Shape("array", item=ANY, schema=schema)
        return Shape("array", item=shape_of(items, depth), schema=schema)
    if kind == "object":
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties and all(is_ncname(name) for name in properties):
            required = set(schema.get("required") or ())
            fields = tuple((name, shape_of(sub, depth), name in required) for name, sub in properties.items())
            return Shape("record", fields=fields, schema=schema)
        extra = schema.get("additionalProperties")
        value = shape_of(extra, depth) if isinstance(extra, dict) else ANY
        return Shape("map", value=value, schema=schema)
    return ANY


def _union(options: list[Any], depth: int) -> Shape:
    null = {"type": "null"}
    rest = [option for option in options if option != null]
    nullable = len(rest) < len(options)
    if len(rest) == 1:
        shape = shape_of(rest[0], depth)
        return shape.nullable_copy() if nullable else shape
    shapes = [shape_of(option, depth) for option in rest]
    if rest and all(shape.kind == "scalar" and not shape.enum for shape in shapes):
        # int | str: one text, read as the first option it fits (as the REST query does)
        return Shape("scalar", nullable=nullable, xsd="string", schema={"anyOf": rest})
    return ANY


def _enum(schema: dict[str, Any]) -> Shape:
    values = schema["enum"] if isinstance(schema["enum"], list) else []
    nullable = None in values
    values = [value for value in values if value is not None]
    if values and all(isinstance(value, str) for value in values):
        xsd = "string"
    elif values and all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        xsd = "long"
    else:
        return ANY
    kind = "string" if xsd == "string" else "integer"
    return Shape("scalar", nullable=nullable, xsd=xsd, enum=tuple(values),
                 schema={"type": kind, "enum": values})
