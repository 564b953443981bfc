"""The breaking-change check: a corpus of changes, each judged breaking or additive, one line each.

Each case is two versions of one service, written as Python (what a developer edits), described
offline exactly as a worker announces it, then diffed.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import textwrap
import uuid
from typing import Any, Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from amqprpc.cli import main
from amqprpc.contracts.diff import diff_contracts
from amqprpc.contracts.model import contract_of, describe_offline


class ItemV1(BaseModel):
    sku: str
    qty: int


class ItemV2(BaseModel):  # qty renamed: a field removed, one added
    sku: str
    quantity: int


class ItemV3(BaseModel):  # a new optional field
    sku: str
    qty: int
    note: str | None = None


class ItemV4(BaseModel):  # a new required field
    sku: str
    qty: int
    warehouse: str


class ItemV5(BaseModel):  # qty retyped
    sku: str
    qty: str


class ItemV6(BaseModel):  # qty constrained
    sku: str
    qty: int = Field(gt=0)


class ItemV7(BaseModel):  # qty optional now
    sku: str
    qty: int | None = None


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


class LevelMore(enum.Enum):
    LOW = "low"
    HIGH = "high"
    URGENT = "urgent"


NAMESPACE = {name: value for name, value in globals().items() if not name.startswith("_")}
NAMESPACE.update(Any=Any, Literal=Literal, datetime=datetime, decimal=decimal, uuid=uuid)


def contract(source: str, **attrs: Any) -> dict[str, Any]:
    """The contract of a service ``svc`` whose body is ``source`` (rpc, event_handler at hand)."""
    body = textwrap.indent(textwrap.dedent(source), "    ")
    code = "from amqprpc import rpc\nclass Svc:\n    name = 'svc'\n" + body
    namespace = dict(NAMESPACE)
    exec(code, namespace)
    cls = namespace["Svc"]
    for key, value in attrs.items():
        setattr(cls, key, value)
    return contract_of([describe_offline(cls)])


BASE = """
@rpc(http="POST /orders", roles=["clerk"])
def create(self, item: ItemV1, level: Level = Level.LOW, note: str = "") -> ItemV1: ...
"""

BREAKING = {
    "method removed": ("@rpc\ndef other(self) -> None: ...", "svc.create: method removed"),
    "parameter removed": (BASE.replace(', note: str = ""', ""), "parameter 'note' removed"),
    "new required parameter": (BASE.replace("note: str = \"\"", "note: str = \"\", *, shop: int"),
                               "parameter 'shop' is new and required"),
    "parameter now required": (BASE.replace('note: str = ""', "*, note: str"),
                               "parameter 'note' is now required"),
    "parameter retyped": (BASE.replace('note: str = ""', 'note: int = 0'), "parameter 'note': retyped"),
    "parameter narrowed": (BASE.replace('note: str = ""', 'note: Literal["a", "b"] = "a"'),
                           "parameter 'note': now limited to"),
    "default changed": (BASE.replace('note: str = ""', 'note: str = "x"'), "default changed"),
    "parameters reordered": (BASE.replace("item: ItemV1, level: Level = Level.LOW",
                                          "level: Level = Level.LOW, *, item: ItemV1"), "moved"),
    "field removed": (BASE.replace("item: ItemV1", "item: ItemV2"), "parameter 'item'.qty: field removed"),
    "new required field": (BASE.replace("item: ItemV1", "item: ItemV4"),
                           "parameter 'item'.warehouse: field is new and required"),
    "field retyped": (BASE.replace("item: ItemV1", "item: ItemV5"), "parameter 'item'.qty: retyped"),
    "field constrained": (BASE.replace("item: ItemV1", "item: ItemV6"), "exclusiveMinimum none -> 0"),
    "enum value removed": (BASE.replace("level: Level = Level.LOW", 'level: Literal["low"] = "low"'),
                           'values removed: "high"'),
    "result field removed": (BASE.replace("-> ItemV1", "-> ItemV2"), "result.qty: field removed"),
    "result field optional": (BASE.replace("-> ItemV1", "-> ItemV7"), "result.qty: field is now optional"),
    "result widened": (BASE.replace("-> ItemV1", "-> ItemV1 | None"), "result: widened"),
    "result retyped": (BASE.replace("-> ItemV1", "-> list[ItemV1]"), "result: retyped"),
    "result enum grew": ("ENUM", 'result: values added: "urgent"'),
    "route changed": (BASE.replace("POST /orders", "PUT /orders"),
                      "HTTP route changed from POST /orders to PUT /orders"),
    "route removed": (BASE.replace('http="POST /orders", ', ""), "HTTP route POST /orders removed"),
    "roles narrowed": (BASE.replace('["clerk"]', '["admin"]'), "roles narrowed"),
    "format added": (BASE.replace('note: str = ""', 'note: datetime.date = datetime.date(2026, 1, 1)'),
                     "parameter 'note': format none -> date"),
}
BREAKING.update({
    "service removed": (None, "svc: service removed"),
    "extra keywords no longer taken": ("KWARGS", "no longer accepts extra keyword arguments"),
    "event payload field removed": ("EVENT", "svc.created: payload.qty: field removed"),
    "event no longer dispatched": ("NOEVENT", "svc.created: event no longer dispatched"),
    "error status changed": ("ERRORS", "error KeyError now answers HTTP 409 (was 404)"),
})

ADDITIVE = {
    "method added": (BASE + "@rpc\ndef other(self) -> None: ...\n", "svc.other: method added"),
    "new optional parameter": (BASE.replace('note: str = ""', 'note: str = "", shop: int = 0'),
                               "parameter 'shop' is new and optional"),
    "parameter now optional": (BASE.replace("item: ItemV1,", "item: ItemV1 | None = None,"), "now optional"),
    "parameter widened": (BASE.replace('note: str = ""', 'note: str | None = ""'),
                          "parameter 'note': widened"),
    "new optional field": (BASE.replace("item: ItemV1", "item: ItemV3"),
                           "parameter 'item'.note: field is new"),
    "field now optional in a parameter": (BASE.replace("item: ItemV1", "item: ItemV7"),
                                          "parameter 'item'.qty: field is now optional"),
    "result field added": (BASE.replace("-> ItemV1", "-> ItemV4"), "result.warehouse: field is new"),
    "result narrowed": (BASE.replace("-> ItemV1:", "-> ItemV6:"), "result.qty: exclusiveMinimum none -> 0"),
    "roles widened": (BASE.replace('["clerk"]', '["clerk", "admin"]'), "roles widened"),
    "route added": ("+ROUTE", "HTTP route POST /orders added"),
    "extra keywords taken": ("+KWARGS", "now accepts extra keyword arguments"),
    "service added": ("+SERVICE", "other: service added"),
    "event added": ("+EVENT", "svc.shipped: event added"),
}

KWARGS = BASE.replace('note: str = "") ->', 'note: str = "", **extra: Any) ->')


def versions(source: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old, new) for a case: the base service, then the changed one."""
    old = contract(BASE)
    if source is None:
        return old, {"amqprpc_contract": 1, "services": {}}
    if source == "KWARGS":
        return contract(KWARGS), old
    if source == "+KWARGS":
        return old, contract(KWARGS)
    if source == "ENUM":
        return (contract(BASE.replace("-> ItemV1", "-> Level")),
                contract(BASE.replace("-> ItemV1", "-> LevelMore")))
    if source == "+ROUTE":
        return contract(BASE.replace('http="POST /orders", ', "")), old
    if source == "+SERVICE":
        new = json.loads(json.dumps(old))
        new["services"]["other"] = new["services"]["svc"]
        return old, new
    if source in ("EVENT", "NOEVENT", "+EVENT"):
        with_event = contract(BASE, event_types={"created": ItemV1})
        if source == "EVENT":
            return with_event, contract(BASE, event_types={"created": ItemV2})
        if source == "NOEVENT":
            return with_event, old
        return with_event, contract(BASE, event_types={"created": ItemV1, "shipped": ItemV3})
    if source == "ERRORS":
        return contract(BASE, http_errors={KeyError: 404}), contract(BASE, http_errors={KeyError: 409})
    return old, contract(source)


def test_the_corpus_is_large_enough():
    assert len(BREAKING) >= 20 and len(ADDITIVE) >= 10


@pytest.mark.parametrize("name", sorted(BREAKING))
def test_breaking(name):
    source, expected = BREAKING[name]
    findings = diff_contracts(*versions(source))
    lines = [str(f) for f in findings if f.breaking]
    assert any(expected in line for line in lines), [str(f) for f in findings]
    assert all("\n" not in line and line.startswith("BREAKING ") for line in lines)


@pytest.mark.parametrize("name", sorted(ADDITIVE))
def test_additive(name):
    source, expected = ADDITIVE[name]
    findings = diff_contracts(*versions(source))
    assert not [str(f) for f in findings if f.breaking], [str(f) for f in findings]
    assert any(expected in str(f) and str(f).startswith("additive ") for f in findings), \
        [str(f) for f in findings]


def test_no_change_no_finding():
    assert diff_contracts(contract(BASE), contract(BASE)) == []


def test_cli_diff_exits_non_zero_on_breaking_only(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    runner = CliRunner()
    result = runner.invoke(main, ["contract", "dump", "--module", "tests.contract_services:Orders"])
    assert result.exit_code == 0, result.output
    old.write_text(result.output)
    dumped = json.loads(result.output)
    assert dumped["services"]["orders"]["methods"]["create"]["http"] == "POST /orders"
    assert runner.invoke(main, ["contract", "diff", str(old), str(old)]).exit_code == 0
    changed = json.loads(old.read_text())
    del changed["services"]["orders"]["methods"]["receipt"]
    changed["services"]["orders"]["methods"]["extra"] = changed["services"]["orders"]["methods"]["add"]
    new.write_text(json.dumps(changed))
    result = runner.invoke(main, ["contract", "diff", str(old), str(new)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["BREAKING orders.receipt: method removed",
                                          "additive orders.extra: method added"]
    result = runner.invoke(main, ["contract", "diff", str(new), str(old)])
    assert result.exit_code == 1  # receipt added back, extra removed
    result = runner.invoke(main, ["contract", "diff", str(old), "module",
                                  "--module", "tests.contract_services:Orders"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["contract", "diff", str(tmp_path / "none.json"), str(old)])
    assert result.exit_code == 2 and "cannot read a contract" in result.output
