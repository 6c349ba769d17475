"""The documentation's front door holds: every relative link and image in the README, docs/
and the experiment, benchmark, multiplier and cache READMEs points at a file or folder that
exists, and the README's Python example is the one tests/test_api.py runs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("README.md", "docs/*.md", "experiments/**/*.md", "benchmarks/**/*.md", "multipliers/**/*.md",
            "cache/README.md")
# [text](target) and ![alt](target), with an optional "title"; [ref]: target definitions
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(?:<([^>]*)>|([^)\s]*))(?:\s+\"[^\"]*\")?\s*\)")
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def documents() -> list[Path]:
    found = {path for pattern in PATTERNS for path in ROOT.glob(pattern) if path.is_file()}
    return sorted(found)


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        yield number, re.sub(r"`[^`]*`", "``", line)


def link_targets(text: str):
    """(line number, target) of every link and image in the prose of a markdown text."""
    for number, line in prose_lines(text):
        for match in INLINE.finditer(line):
            yield number, match.group(1) or match.group(2)
        definition = DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for number, target in link_targets(path.read_text(encoding="utf-8")):
        if not target or target.startswith("#") or EXTERNAL.match(target):
            continue
        relative = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / relative).exists():
            broken.append(f"{path.relative_to(root)}:{number}: {target}")
    return broken


def test_the_link_reader_finds_what_it_should(tmp_path):
    text = textwrap.dedent("""\
        See [a](a.md), ![plot](img/p.png "title"), [b](<b c.md>) and [c](c.md#part).
        [web](https://example.org) [mail](mailto:x@y.z) [here](#top) `[code](no.md)`
        ```
        [fenced](no.md)
        ```
        [ref]: d.md
        """)
    assert [t for _, t in link_targets(text)] == ["a.md", "img/p.png", "b c.md", "c.md#part",
                                                   "https://example.org", "mailto:x@y.z", "#top", "d.md"]
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](doc.md#x) [gone](missing.md) [web](http://example.org)\n")
    assert broken_links(doc, root=tmp_path) == ["doc.md:1: missing.md"]


def test_the_documents_exist():
    names = {str(p.relative_to(ROOT)) for p in documents()}
    assert {"README.md", "experiments/README.md", "multipliers/README.md", "cache/README.md"} <= names
    assert len([n for n in names if n.startswith("docs/")]) >= 2


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_readme_python_example_is_the_one_the_api_test_runs():
    import surrogate_nas

    doc = surrogate_nas.__doc__.split("::\n", 1)[1].lstrip("\n")
    lines = []
    for line in doc.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    docstring_example = textwrap.dedent("\n".join(lines)).strip()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert docstring_example in [block.strip() for block in blocks]
