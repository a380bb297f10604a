"""Reading the Markdown documentation: the anchors GitHub gives its headings.

README.md and docs/*.md are read on GitHub, where a link's ``#fragment`` must be the
anchor GitHub derives from a heading: the heading's text, lower-cased, every character
but letters, digits, ``-``, ``_`` and spaces removed, each space turned into ``-``; a
second heading with the same anchor gets ``-1``, a third ``-2``, and so on.
"""

from __future__ import annotations

import re

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
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) \
                    and not line.strip().strip(fence[0]):
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
