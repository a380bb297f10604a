"""Reading the Markdown documentation: its links, and the anchors GitHub gives its headings.

README.md and docs/*.md are read on GitHub, where a link's ``#fragment`` must be the
anchor GitHub derives from a heading: the heading's text, lower-cased, every character
but letters, digits, ``-``, ``_`` and spaces removed, each space turned into ``-``; a
second heading with the same anchor gets ``-1``, a third ``-2``, and so on.

``problem`` says what is wrong with one link, or None: a relative link must name a file
of the repository, and its ``#fragment`` a heading of that file; a link to this project's
files on GitHub (``PROJECT_BLOB``) is checked against the local file the same way; any
other http(s) link is only checked for form.
"""

from __future__ import annotations

import os
import pathlib
import re
from urllib.parse import unquote, urlsplit

REPO = pathlib.Path(__file__).resolve().parents[2]
PROJECT = "https://github.com/userflux-connector/userflux-connector/"
PROJECT_BLOB = PROJECT + "blob/main/"  # a file on main, as the alerts' runbook_url links it
PROJECT_TREE = PROJECT + "tree/main/"  # a folder on main

_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (before duplicates are numbered)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(text: str) -> list[str]:
    """The text of every ATX heading (``# ...`` to ``###### ...``) outside fenced code."""
    found, fence = [], None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is not None:
            if (
                opening
                and opening.group(1)[0] == fence[0]
                and len(opening.group(1)) >= len(fence)
                and not line.strip().strip(fence[0])
            ):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        match = _HEADING.fullmatch(line)
        if match:
            found.append(match.group(2))
    return found


def heading_anchors(text: str) -> set[str]:
    """Every anchor a Markdown document's headings give, duplicates numbered as GitHub
    does (github-slugger: ``x``, ``x-1``, ``x-2``, skipping any already taken)."""
    occurrences: dict[str, int] = {}
    for heading in headings(text):
        anchor = original = github_anchor(heading)
        while anchor in occurrences:
            occurrences[original] += 1
            anchor = f"{original}-{occurrences[original]}"
        occurrences[anchor] = 0
    return set(occurrences)


# --- links ------------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(
    r"""!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)"""
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_LINE_FRAGMENT = re.compile(r"L\d+(?:-L\d+)?")


def links(text: str) -> list[tuple[int, str]]:
    """(line number, destination) of every inline link and image, reference definition
    and autolink, outside fenced code and code spans."""
    found: list[tuple[int, str]] = []
    paragraph: list[str] = []
    first = 0

    def flush() -> None:
        if not paragraph:
            return
        block = "\n".join(paragraph)
        # A code span is text, not Markdown: blank it, keeping its line breaks.
        block = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), block)
        for pattern in (_INLINE_LINK, _REFERENCE, _AUTOLINK):
            for match in pattern.finditer(block):
                target = match.group(1)
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1]
                found.append((first + block.count("\n", 0, match.start()), target))
        paragraph.clear()

    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = _FENCE.match(line)
        if fence is not None:
            if (
                opening
                and opening.group(1)[0] == fence[0]
                and len(opening.group(1)) >= len(fence)
                and not line.strip().strip(fence[0])
            ):
                fence = None
            continue
        if opening:
            flush()
            fence = opening.group(1)
        elif not line.strip():
            flush()
        else:
            if not paragraph:
                first = number
            paragraph.append(line)
    flush()
    return sorted(found)


def problem(source: pathlib.Path, target: str, repo: pathlib.Path = REPO) -> str | None:
    """What is wrong with a link from ``source`` to ``target``, or None if it resolves."""
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        for prefix in (PROJECT_BLOB, PROJECT_TREE):
            if target.startswith(prefix):
                path, _, fragment = target[len(prefix) :].partition("#")
                if not path:
                    return "names no file of the repository"
                return _local(repo / unquote(path), fragment, repo)
        if not parts.hostname or "." not in parts.hostname or re.search(r"\s", target):
            return "not a well-formed http(s) URL"
        return None
    if parts.scheme or target.startswith("//"):
        return f"a link of scheme {parts.scheme or '//'!r}: only relative and http(s) links are expected"
    path, _, fragment = target.partition("#")
    return _local(source.parent / unquote(path) if path else source, fragment, repo)


def _local(file: pathlib.Path, fragment: str, repo: pathlib.Path) -> str | None:
    file = pathlib.Path(os.path.normpath(file))
    if file != repo and repo not in file.parents:
        return "points outside the repository"
    if not file.exists():
        return f"no such file: {file.relative_to(repo)}"
    if not fragment:
        return None
    if file.is_dir():
        return "an anchor on a folder"
    if file.suffix.lower() == ".md":
        if fragment not in heading_anchors(file.read_text()):
            return f"no heading of {file.relative_to(repo)} has the anchor #{fragment}"
        return None
    if _LINE_FRAGMENT.fullmatch(fragment):  # GitHub's line links: #L10, #L10-L20
        return None
    return f"an anchor into {file.relative_to(repo)}, which is not Markdown"
