"""Every line of POLICY.md (V1-V6, M1-M5, C1-C7, S1-S4, D1) is findable: at least one function or class that
enforces it names it in its docstring ("POLICY V6: ..."), and at least one test names it (in its name, e.g.
`test_..._v6_...`, or its docstring). A new line in the policy fails this test until both exist; a line whose
enforcement is renamed away fails it too."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "docs" / "POLICY.md"
LINES = re.findall(r"^- ([A-Z]\d+) ", POLICY.read_text(), re.M)
_MENTION = re.compile(r"POLICY\s+((?:[A-Z]\d+(?:\s*[–-]\s*[A-Z]?\d+)?(?:\s*,\s*|\s+and\s+|\s*/\s*)?)+)")


def named_in(text: str) -> set[str]:
    """The policy lines a text names after the word POLICY: 'POLICY V6', 'POLICY C1-C4, S2', 'POLICY M1 and M2'."""
    out: set[str] = set()
    for group in _MENTION.findall(text):
        for a, b in re.findall(r"([A-Z]\d+)(?:\s*[–-]\s*[A-Z]?(\d+))?", group):
            if b:
                out |= {f"{a[0]}{k}" for k in range(int(a[1:]), int(b) + 1)}
            else:
                out.add(a)
    return out


def _defs(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield path, node


@functools.cache
def enforcing() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in ("studio", "workers", "api"):
        for path, node in _defs(folder):
            for line in named_in(ast.get_docstring(node) or ""):
                found.setdefault(line, []).append(f"{path.relative_to(ROOT)}:{node.name}")
    return found


@functools.cache
def proving() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, node in _defs("tests"):
        if not node.name.startswith("test_"):
            continue
        lines = named_in(ast.get_docstring(node) or "")
        lines |= {x.upper() for x in re.findall(r"(?:^|_)([vmcsd]\d)(?=_|$)", node.name)}
        for line in lines:
            found.setdefault(line, []).append(f"{path.relative_to(ROOT)}:{node.name}")
    return found


def test_the_policy_has_its_lines():
    assert len(LINES) == len(set(LINES)) >= 20 and {"V1", "M5", "C7", "S4", "D1"} <= set(LINES)


def test_mentions_are_read_as_written():
    assert named_in("(POLICY C1-C4, S2 and M1)") == {"C1", "C2", "C3", "C4", "S2", "M1"}
    assert named_in("POLICY V6: the disclosure") == {"V6"}
    assert named_in("an S3 store, V6 without the word") == set()


@pytest.mark.parametrize("line", LINES)
def test_each_policy_line_is_named_by_a_function_that_enforces_it(line):
    assert enforcing().get(line), f"POLICY {line}: no function or class in studio/, workers/ or api/ names it " \
                                  f"in its docstring (write 'POLICY {line}' where it is enforced)"


@pytest.mark.parametrize("line", LINES)
def test_each_policy_line_is_named_by_a_test(line):
    assert proving().get(line), f"POLICY {line}: no test names it (in its name, test_..._{line.lower()}_..., or " \
                                f"its docstring, 'POLICY {line}')"
