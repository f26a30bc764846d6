"""The docstring examples of every serray module run as doctests.

Each module with at least one example is its own test (so a failure names the module);
modules without an example are not collected, so the suite's skips are real skips.
Examples marked ``# doctest: +SKIP`` (those that start Ray or need a work dir) are not
run and do not count. Every module is imported while the tests are collected: one that
cannot be imported because a package outside serray is not installed becomes a skip
naming that package; one that fails to import for any other reason (a serray module that
is missing, a wrong name, an error at import) is collected and fails with the error, so
no module drops out of the suite silently.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType

import pytest

import serray

# __main__ runs the CLI on import
_EXCLUDED = ("serray.__main__",)


def _module_names() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(serray.__path__, "serray.")]
    return sorted(n for n in names if n not in _EXCLUDED)


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    """The module's doctests that hold at least one example not marked ``+SKIP``."""
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    return [t for t in tests if any(not ex.options.get(doctest.SKIP) for ex in t.examples)]


def _missing_package(exc: ImportError, name: str) -> str | None:
    """The package outside ``name``'s own top-level package whose absence ``exc`` reports."""
    missing = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not missing:
        return None
    top = missing.split(".")[0]
    return None if top == name.split(".")[0] else top


def _collect(names: Iterable[str], load: Callable[[str], ModuleType] = importlib.import_module) -> list:
    """One ``pytest.param`` per module to test: those with examples, and those that fail to import.

    A module whose import fails because a package outside its own is missing is a skip
    naming the package; any other import error keeps the module, so its test fails.
    """
    params = []
    for name in names:
        try:
            module = load(name)
        except ImportError as exc:
            package = _missing_package(exc, name)
            marks = () if package is None else pytest.mark.skip(reason=f"{name} needs {package} (not installed)")
            params.append(pytest.param(name, id=name, marks=marks))
            continue
        except Exception:  # noqa: BLE001 - the test imports it again and fails with the traceback
            params.append(pytest.param(name, id=name))
            continue
        if _examples(module):
            params.append(pytest.param(name, id=name))
    return params


@pytest.mark.parametrize("name", _collect(_module_names()))
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)  # a module that failed at collection fails here
    tests = _examples(module)
    assert tests, f"{name} was collected for its examples but has none to run"
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


_FAKE_MODULES = {
    "with_example": '''
        """A module with an example.

        >>> 1 + 1
        2
        """
    ''',
    "only_skipped": '''
        """Its only example is skipped.

        >>> import ray; ray.init()  # doctest: +SKIP
        """
    ''',
    "no_example": '''
        """No example at all."""
        def f():
            """Nor here."""
    ''',
    "optional_dep": '''
        """Needs a package that is not installed."""
        import serray_test_not_installed_pkg
    ''',
    "own_missing": '''
        """Imports a module of its own package that does not exist (a real bug)."""
        import fakedocpkg.gone
    ''',
    "raises": '''
        """Fails at import."""
        raise RuntimeError("broken at import")
    ''',
}


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Iterator[str]:
    package = tmp_path / "fakedocpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in _FAKE_MODULES.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fakedocpkg"
    for name in [n for n in sys.modules if n == "fakedocpkg" or n.startswith("fakedocpkg.")]:
        del sys.modules[name]


def test_collection_keeps_examples_and_import_failures_only(fake_package: str) -> None:
    """Modules without a runnable example drop out; import failures stay visible."""
    params = _collect(f"{fake_package}.{m}" for m in _FAKE_MODULES)
    by_name = {p.values[0].split(".")[-1]: p for p in params}
    assert sorted(by_name) == ["optional_dep", "own_missing", "raises", "with_example"]
    skip_reasons = {m: [mark.kwargs.get("reason") for mark in p.marks if mark.name == "skip"] for m, p in by_name.items()}
    assert skip_reasons["optional_dep"] == [f"{fake_package}.optional_dep needs serray_test_not_installed_pkg (not installed)"]
    # a missing module of the package itself and an error at import are failures, not skips
    assert skip_reasons["own_missing"] == [] and skip_reasons["raises"] == []
    assert skip_reasons["with_example"] == []
