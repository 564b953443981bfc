"""Every Python block of README.md and docs/ parses, and what it imports from this project exists.

Whole examples run elsewhere (tests/unit/test_testing_guide.py, tests/services/test_demo_flow.py,
tests/integration/test_expected_errors.py); this catches the rest going stale: a renamed
export, a moved module, a block that no longer parses.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("amqprpc", "http_bridge", "services")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) > 10  # the pattern still finds them


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_docs_block_parses_and_its_imports_exist(where: str, code: str) -> None:
    source = code
    if source.rstrip().splitlines()[-1].startswith("@"):
        source += "def signature(): pass\n"  # a decorator's signature shown alone
    tree = ast.parse(source, filename=where)  # a SyntaxError names the line
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")  # a submodule, or fail
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    importlib.import_module(alias.name)
