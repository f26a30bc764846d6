"""The documentation holds together: links resolve, every command is documented.

- Every relative link in README.md, docs/*.md and the recipes' Markdown files points to a
  file or folder inside the repository, and a ``#anchor`` on a Markdown file names one of
  its headings (GitHub's heading slugs).
- Every command and subcommand of ``serray`` (walking the click group) has a heading
  ``serray <command>`` in docs/cli.md, and every such heading names a real command.
- README opens with the two quickstart commands, and the second is the one .ci/run runs.
- Nothing in the docs, docstrings, search spaces, recipes or benchmarks points to design
  files outside the repository.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+.*)?$", re.M)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md, recipes/*.md and each recipe's own Markdown (recipes/*/*.md)."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "recipes").glob("*.md"))]
    files += sorted((root / "recipes").glob("*/*.md"))  # not results/: copied reports whose figures stay out
    return [f for f in files if f.is_file()]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for match in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code."""
    text = _prose(path.read_text(encoding="utf-8"))
    return [m.group(1) for m in _INLINE_LINK.finditer(text)] + [m.group(1) for m in _REFERENCE_LINK.finditer(text)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of ``path`` that does not resolve inside ``root``."""
    problems = []
    for target in links(path):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # a URL: not checked here
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        where = f"{path.relative_to(root)}: ({target})"
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} names a missing file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where} names a missing heading #{anchor} of {resolved.relative_to(root.resolve())}")
    return problems


def test_every_relative_link_resolves():
    files = doc_files()
    assert ROOT / "README.md" in files and any(f.parent.name == "docs" for f in files)
    problems = [p for f in files for p in broken_links(f)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Options shared by `train`, tune\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md#options-shared-by-train-tune) [top](docs/a.md#title) [url](https://x.org/y)\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [out](../elsewhere/DESIGN.md)\n"
        "`[in code](docs/missing.md)`\n```\n[in a block](docs/missing.md)\n```\n[self](#nowhere-here)\n"
    )
    problems = broken_links(readme, tmp_path)
    assert len(problems) == 4, problems
    assert "missing file" in problems[0] and "docs/missing.md" in problems[0]
    assert "#nowhere" in problems[1]
    assert "outside the repository" in problems[2]
    assert "#nowhere-here" in problems[3]


def _command_paths(group: click.Command, prefix: tuple[str, ...] = ()) -> list[str]:
    paths = []
    if isinstance(group, click.Group):
        for name in group.list_commands(click.Context(group)):
            command = group.get_command(click.Context(group), name)
            paths.append(" ".join(("serray", *prefix, name)))
            paths += _command_paths(command, (*prefix, name))
    return paths


def documented_commands(cli_doc: Path) -> set[str]:
    """The ``serray ...`` headings of docs/cli.md (code marks ignored)."""
    text = _FENCE.sub("", cli_doc.read_text(encoding="utf-8"))
    headings = (m.group(2).replace("`", "").strip() for m in _HEADING.finditer(text))
    return {h for h in headings if h.startswith("serray ")}


def test_every_command_is_documented_in_cli_md():
    from serray.cli import main

    commands = _command_paths(main)
    assert "serray data prepare" in commands and "serray train" in commands
    cli_doc = ROOT / "docs" / "cli.md"
    assert cli_doc.is_file(), "docs/cli.md is missing: it documents every serray command"
    documented = documented_commands(cli_doc)
    missing = [c for c in commands if c not in documented]
    assert not missing, f"docs/cli.md has no heading for: {', '.join(missing)} (add '## <command>' with what it does)"
    stale = sorted(documented - set(commands))
    assert not stale, f"docs/cli.md documents commands that do not exist: {', '.join(stale)}"


def test_readme_opens_with_the_two_quickstart_commands_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = _FENCE.search(text)
    assert first_block is not None
    before = [line for line in text[: first_block.start()].splitlines() if line.strip()]
    assert all(line.startswith("#") for line in before), f"README opens with prose before the quickstart: {before}"
    commands = [line for line in first_block.group(0).splitlines()[1:-1] if line.strip()]
    assert len(commands) == 2, commands
    assert "pip install" in commands[0] and commands[0].rstrip().endswith("serray demo")
    assert "'.[dev]'" in commands[1] and "pytest" in commands[1]
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text(encoding="utf-8"), (
        "README's second quickstart command is not the one .ci/run runs"
    )


_OUTSIDE = re.compile(r"DESIGN\.md|METHODS\.md|shared/seeds|\.\./shared/(?!data)")


@pytest.mark.parametrize("pattern", ["serray/**/*.py", "serray/**/*.yaml", "bench/*.py", "*.md", "docs/*.md", "recipes/**/*"])
def test_nothing_points_to_design_files_outside_the_repository(pattern):
    hits = []
    for path in sorted(ROOT.glob(pattern)):
        if not path.is_file() or path.suffix not in (".py", ".yaml", ".md", ".sh", ".txt") or path.name == "CHANGELOG.md":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "point to docs/ instead (docs/design.md, docs/models.md):\n" + "\n".join(hits)
