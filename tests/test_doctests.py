"""The docstring examples of every serray module run as doctests.

Each module with at least one example is its own test (so a failure names the module).
Examples marked ``# doctest: +SKIP`` (those that start Ray or need a work dir) are not
run. A module that cannot be imported because an optional dependency is missing (torch,
opensmile, ...) is skipped with the missing package named.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import serray

# __main__ runs the CLI on import
_EXCLUDED = ("serray.__main__",)


def _module_names() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(serray.__path__, "serray.")]
    return sorted(n for n in names if n not in _EXCLUDED)


def _examples(module) -> list[doctest.DocTest]:
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    return [t for t in tests if any(not ex.options.get(doctest.SKIP) for ex in t.examples)]


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency of this module is not installed
        pytest.skip(f"{name} needs {exc.name or exc}")
    tests = _examples(module)
    if not tests:
        pytest.skip(f"{name} has no docstring example to run")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring example(s) of {name} failed (see above)"


def test_a_failing_example_is_reported() -> None:
    """The runner above does fail on a wrong expected output (the test can fail)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "bad", "bad.py", 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _s: None)
    assert runner.summarize(verbose=False).failed == 1
