"""The SOAP front end's XML layer without HTTP: safe parsing, shapes, values, envelopes."""

from __future__ import annotations

import socket
from typing import Any, Literal, TypedDict

import pytest

from amqprpc.discovery import schema_of
from http_bridge.errors import ApiError
from http_bridge.params import Invalid
from http_bridge.soap.codec import ResultMismatch, decode, encode
from http_bridge.soap.envelope import fault_code, operation_element, write_fault
from http_bridge.soap.names import SOAP12_ENV, SOAP_ENV, declarations
from http_bridge.soap.safexml import XmlRefused, parse_xml
from http_bridge.soap.shapes import shape_of

from .hostile_xml import BILLION_LAUGHS, xxe

# ---------------------------------------------------------------------- hostile documents

def test_billion_laughs_is_refused_at_its_doctype():
    with pytest.raises(XmlRefused) as refused:
        parse_xml(BILLION_LAUGHS)
    assert refused.value.reason == "dtd"


def test_xxe_file_is_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    with pytest.raises(XmlRefused) as refused:
        parse_xml(xxe(secret.as_uri()))
    assert refused.value.reason == "dtd"
    assert "TOP-SECRET" not in str(refused.value)


def test_external_dtd_and_entity_urls_are_never_fetched():
    with socket.socket() as listener:  # a "remote" DTD server on loopback that must see no connection
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/evil.dtd"
        for document in (xxe(url), f'<!DOCTYPE e SYSTEM "{url}"><e/>'.encode(),
                         f'<!DOCTYPE e [<!ENTITY % p SYSTEM "{url}"> %p;]><e/>'.encode()):
            with pytest.raises(XmlRefused):
                parse_xml(document)
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize(("document", "reason"), [
    (b"<a>" * 100 + b"</a>" * 100, "too_deep"),
    (b"<r>" + b"<a/>" * 101 + b"</r>", "too_many_elements"),
    (b"<r><?php system('id') ?></r>", "processing_instruction"),
    (b"<r>&undefined;</r>", "malformed"),
    (b"<r><a></r>", "malformed"),
    (b"", "malformed"),
    (b'<?xml version="1.0" encoding="no-such-codec"?><r/>', "malformed"),
])
def test_structural_bounds_and_malformed_documents(document, reason):
    with pytest.raises(XmlRefused) as refused:
        parse_xml(document, max_depth=64, max_elements=100)
    assert refused.value.reason == reason


def test_deep_nesting_stops_at_the_bound_without_recursion():
    with pytest.raises(XmlRefused) as refused:
        parse_xml(b"<a>" * 200_000 + b"</a>" * 200_000, max_depth=64)
    assert refused.value.reason == "too_deep"


def test_the_tree_keeps_prefixes_in_scope_and_drops_comments():
    root = parse_xml(b'<r xmlns="urn:d" xmlns:x="urn:x"><x:a t="x:long">4<!-- c -->2</x:a>'
                     b'<b xmlns:x="urn:other"/></r>')
    first, second = root.children
    assert (root.namespace, root.local) == ("urn:d", "r")
    assert (first.tag, first.text) == ("{urn:x}a", "42")
    assert first.resolve(first.attrib["t"]) == ("urn:x", "long")
    assert second.resolve("x:y") == ("urn:other", "y")
    assert second.namespace == "urn:d"


# ---------------------------------------------------------------------- shapes


class Address(TypedDict):
    city: str
    zip: int


@pytest.mark.parametrize(("hint", "kind", "xsd", "nullable"), [
    (int, "scalar", "long", False),
    (float, "scalar", "double", False),
    (bool, "scalar", "boolean", False),
    (str, "scalar", "string", False),
    (int | None, "scalar", "long", True),
    (int | str, "scalar", "string", False),
    (Literal["a", "b"], "scalar", "string", False),
    (list[int], "array", "", False),
    (list[str] | None, "array", "", True),
    (dict[str, float], "map", "", False),
    (dict, "map", "", False),
    (Address, "record", "", False),
    (Any, "any", "", True),
    (tuple[int, str], "array", "", False),
    (list[int] | dict[str, int], "any", "", True),
])
def test_type_hints_become_xml_shapes(hint, kind, xsd, nullable):
    shape = shape_of(schema_of(hint))
    assert (shape.kind, shape.xsd, shape.nullable) == (kind, xsd, nullable)


# ---------------------------------------------------------------------- values

_ROOT = f"<r {declarations(tns='urn:t')}>{{}}</r>"


def round_trip(value: Any, hint: Any) -> Any:
    shape = shape_of(schema_of(hint))
    root = parse_xml(_ROOT.format(encode(value, shape, "tns:v")).encode())
    return decode(root.children[0], shape, "v")


@pytest.mark.parametrize(("value", "hint"), [
    (42, int), (-(2**70), int), (2.5, float), (True, bool), (False, bool),
    ("  spaced\r\nline <&> \u00e9\U0001f600 ", str), ("", str), (None, int | None),
    ([1, 2, 3], list[int]), ([], list[int]), ([[1], [], [2, 3]], list[list[int]]),
    (["a", None], list[str | None]), ({"x": 1.5, "": -2.0}, dict[str, float]),
    ({"city": "Paris", "zip": 75001}, Address), ("b", Literal["a", "b"]), (7, int | str), ("x", int | str),
    ({"n": 1, "f": 0.5, "b": True, "s": "t", "l": [1, "a", None], "m": {"k": [True]}, "z": None}, Any),
    ({"k": {"nested": [1, 2]}}, dict[str, Any]),
])
def test_values_survive_a_round_trip(value, hint):
    assert round_trip(value, hint) == value


@pytest.mark.parametrize(("value", "hint", "problem"), [
    ("x", int, "expected an integer"),
    (1.5, int, "expected an integer"),
    (True, int, "expected an integer"),
    ([1], dict[str, int], "expected a mapping"),
    ({"a": 1}, list[int], "expected a list"),
    ("nul\x00", str, "U+0000"),
    ("lone \ud800", str, "U+D800"),
])
def test_results_that_break_their_hints_are_refused(value, hint, problem):
    with pytest.raises(ResultMismatch) as refused:
        encode(value, shape_of(schema_of(hint)), "tns:v")
    assert problem in str(refused.value)


@pytest.mark.parametrize(("xml", "hint", "where", "problem"), [
    ("<tns:v>4x</tns:v>", int, "v", "expected an integer"),
    ("<tns:v>INF</tns:v>", float, "v", "finite"),
    ("<tns:v>yes</tns:v>", bool, "v", "expected true or false"),
    ("<tns:v><tns:item>1</tns:item><tns:other/></tns:v>", list[int], "v", "unexpected element <other>"),
    ("<tns:v><tns:item>1</tns:item><tns:item>b</tns:item></tns:v>", list[int], "v[1]", "integer"),
    ("<tns:v><tns:city>P</tns:city><tns:city>Q</tns:city></tns:v>", Address, "v.city", "more than once"),
    ("<tns:v><tns:nope/></tns:v>", Address, "v.nope", "unknown field"),
    ("<tns:v><tns:entry><tns:key>k</tns:key></tns:entry></tns:v>", dict[str, int], "v", "<key>"),
    ("<tns:v><tns:a/></tns:v>", int, "v", "expected a simple value"),
])
def test_bad_arguments_name_the_element(xml, hint, where, problem):
    root = parse_xml(_ROOT.format(xml).encode())
    with pytest.raises(Invalid) as invalid:
        decode(root.children[0], shape_of(schema_of(hint)), "v")
    assert invalid.value.where == where and problem in invalid.value.problem


def test_untyped_values_follow_their_xsi_type():
    xml = ('<tns:v xsi:type="amq:AnyMap"><amq:entry><amq:key>n</amq:key>'
           '<amq:value xsi:type="xsd:int">5</amq:value></amq:entry><amq:entry><amq:key>t</amq:key>'
           '<amq:value>5</amq:value></amq:entry></tns:v>')
    root = parse_xml(_ROOT.format(xml).encode())
    assert decode(root.children[0], shape_of({}), "v") == {"n": 5, "t": "5"}


# ---------------------------------------------------------------------- envelopes


def envelope(body: str, header: str = "", namespace: str = SOAP_ENV) -> bytes:
    return (f'<e:Envelope xmlns:e="{namespace}">{header}<e:Body>{body}</e:Body></e:Envelope>').encode()


def test_the_body_holds_the_operation():
    element = operation_element(parse_xml(envelope('<op xmlns="urn:s"><a>1</a></op>', "<e:Header/>")))
    assert (element.tag, element.children[0].text) == ("{urn:s}op", "1")


@pytest.mark.parametrize(("document", "code"), [
    (envelope("<op/>", namespace=SOAP12_ENV), "version_mismatch"),
    (b"<Envelope><Body><op/></Body></Envelope>", "version_mismatch"),
    (b"<op/>", "not_an_envelope"),
    (envelope(""), "invalid_body"),
    (envelope("<op/><op/>"), "invalid_body"),
    (envelope("<op/>", '<e:Header><s xmlns="urn:sec" e:mustUnderstand="1"/></e:Header>'), "must_understand"),
])
def test_envelope_errors(document, code):
    with pytest.raises(ApiError) as error:
        operation_element(parse_xml(document))
    assert error.value.code == code


def test_headers_for_other_actors_or_optional_ones_are_ignored():
    header = ('<e:Header><a xmlns="urn:x" e:mustUnderstand="0"/>'
              '<b xmlns="urn:x" e:mustUnderstand="1" e:actor="urn:someone-else"/></e:Header>')
    assert operation_element(parse_xml(envelope("<op/>", header))).local == "op"


@pytest.mark.parametrize(("error", "code"), [
    (ApiError(401, "unauthorized", "authentication required"), "soapenv:Client.Unauthorized"),
    (ApiError(504, "deadline_exceeded", "late"), "soapenv:Server.DeadlineExceeded"),
    (ApiError(409, "out_of_stock", "none left", remote_type="OutOfStock"), "soapenv:Client.OutOfStock"),
    (ApiError(400, "version_mismatch", "1.2"), "soapenv:VersionMismatch"),
    (ApiError(400, "must_understand", "x"), "soapenv:MustUnderstand"),
])
def test_fault_codes(error, code):
    assert fault_code(error) == code


def test_a_fault_carries_the_error_in_its_detail():
    error = ApiError(400, "validation_error", "tags[1]: expected string <&>",
                     details=[{"field": "tags[1]", "problem": "expected string"}])
    root = parse_xml(write_fault(error, "req-1"))
    fault = root.children[0].children[0]
    parts = {child.local: child for child in fault.children}
    assert parts["faultcode"].text == "soapenv:Client.ValidationError"
    assert parts["faultstring"].text == "tags[1]: expected string <&>"
    detail = {child.local: child for child in parts["detail"].children[0].children}
    assert [detail[key].text for key in ("code", "status", "id")] == ["validation_error", "400", "req-1"]
    assert detail["details"].children[0].text == "tags[1]"
