"""Size limits of the code (issue 38): no function over 80 lines, no module over 600.

Checked on every module of the package, so that none grows back over the limits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600

#: Modules (paths relative to the repository) held to the limits; a package stands for its modules (all of serray).
COMPLIANT = ("serray",)


def _modules() -> list[Path]:
    out: list[Path] = []
    for name in COMPLIANT:
        path = ROOT / name
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of every function (methods and nested ones too) over ``limit`` lines."""
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_functions_within_limits(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    n_lines = len(source.splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {n_lines} lines (limit {MAX_MODULE_LINES}); split it"
    too_long = long_functions(source)
    assert not too_long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines (name, line, length): {too_long}"


def test_listed_modules_exist() -> None:
    missing = [name for name in COMPLIANT if not (ROOT / name).exists()]
    assert not missing, f"tests/test_code_size.py lists modules that do not exist: {missing}"


def test_a_long_function_is_found() -> None:
    """The checker does see a function over the limit (the test can fail)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", 1, MAX_FUNCTION_LINES + 1)]
    assert long_functions("def g():\n    return 1\n") == []
