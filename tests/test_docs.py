"""The Markdown docs: every relative link points to a file, every #anchor to a heading.

Links are read the way GitHub renders them: fenced code blocks and inline code hold no links, and a
heading's anchor is its text lower-cased, without punctuation other than - and _, spaces made -,
and -1, -2, ... added to repeats. External (http, mailto) links are not fetched.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT

DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "bench" / "README.md",
        *(ROOT / "examples").glob("*/README.md"),
        ROOT / "samples" / "README.md",
    ]
)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_LINK_TEXT = r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], one level of [brackets] inside
_INLINE_LINK = re.compile(_LINK_TEXT + r"\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence = ""
    for number, line in enumerate(text.splitlines(), start=1):
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
        elif opened:
            fence = opened.group(1)
        else:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before repeats are numbered)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a document offers: its headings' slugs (repeats numbered) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ID.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a document, outside code."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        prose = _CODE_SPAN.sub("", line)
        found.extend((number, target) for target in _INLINE_LINK.findall(prose))
        reference = _REFERENCE.match(prose)
        if reference:
            found.append((number, reference.group(1)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with a document's relative links, one `file:line: message` each."""
    problems: list[str] = []
    root, path = root.resolve(), path.resolve()
    where = path.relative_to(root)
    for number, target in links(path):
        if not target or _SCHEME.match(target) or target.startswith("//"):
            continue  # external: not fetched
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not destination.is_relative_to(root):
            problems.append(f"{where}:{number}: {target} leaves the repository")
        elif not destination.exists():
            problems.append(f"{where}:{number}: {target}: no such file")
        elif fragment and destination.suffix != ".md":
            problems.append(f"{where}:{number}: {target}: anchor into a non-Markdown file")
        elif fragment and unquote(fragment) not in anchors(destination):
            shown = destination.relative_to(root)
            problems.append(f"{where}:{number}: {target}: no heading #{fragment} in {shown}")
    return problems


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quick start", "quick-start"),
        ("Configuration: `rules.yaml`", "configuration-rulesyaml"),
        ("Syncing users (the sql sink)", "syncing-users-the-sql-sink"),
        ("Health, metrics, logs", "health-metrics-logs"),
        ("Moving from SQLite: pending deliveries", "moving-from-sqlite-pending-deliveries"),
        ("`relay_store_commit_seconds` and p99", "relay_store_commit_seconds-and-p99"),
        ("Sources → sinks", "sources--sinks"),
        ("Writing a [sink](plugins.md)", "writing-a-sink"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    """A heading's anchor is GitHub's: lower case, punctuation dropped but - and _, spaces as -."""
    assert slug(heading) == anchor


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    """The second and third heading with the same text get -1 and -2, as on GitHub."""
    doc = tmp_path / "doc.md"
    doc.write_text("# How\n\n## How\n\n### How\n")
    assert anchors(doc) == {"how", "how-1", "how-2"}


def test_code_holds_no_links_or_headings(tmp_path: Path) -> None:
    """A link or a `#` line inside a fenced block or inline code is not a link or a heading."""
    doc = tmp_path / "doc.md"
    doc.write_text("```sh\n# a comment\n[x](gone.md)\n```\n\n`[y](gone.md)` [`z`](doc.md)\n")
    assert anchors(doc) == set()
    assert links(doc) == [(6, "doc.md")]


def test_broken_links_and_anchors_are_reported(tmp_path: Path) -> None:
    """A missing file, a missing heading and a path out of the repository each name their line."""
    (tmp_path / "other.md").write_text("# Other page\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Top\n\n"
        "[ok](other.md#other-page) [ok](#top) [web](https://example.com/x#y) [dir](.)\n"
        "[gone](missing.md)\n"
        "[no heading](other.md#nope)\n"
        "[no heading here](#nope)\n"
        "[out](../elsewhere.md)\n"
    )
    assert broken_links(doc, root=tmp_path) == [
        "doc.md:4: missing.md: no such file",
        "doc.md:5: other.md#nope: no heading #nope in other.md",
        "doc.md:6: #nope: no heading #nope in doc.md",
        "doc.md:7: ../elsewhere.md leaves the repository",
    ]


def test_the_docs_are_all_found() -> None:
    """The README, the manual in docs/ and the other READMEs are all checked."""
    names = {str(path.relative_to(ROOT)) for path in DOCS}
    assert {"README.md", "bench/README.md", "samples/README.md"} <= names
    assert {"docs/configuration.md", "docs/operating.md", "docs/postgresql.md"} <= names
    assert all(path.is_file() for path in DOCS)


def test_readme_links_every_page_of_the_manual() -> None:
    """Each docs/*.md page is reachable from the README's table of links."""
    linked = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    """Each relative link names an existing file, and each #anchor a heading in its target."""
    problems = broken_links(doc)
    assert problems == [], "\n".join(problems)
