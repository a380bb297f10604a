"""Compile one field spec of a mapping into an extractor.

A field spec is one of::

    user.id                          a reference (see paths.py)
    [user.id, "@key"]                the first candidate with a value
    {path: user.id, default: anon}   a reference, or a list of them, with a fallback
    {template: "{type}_{action}"}    text built from references
    {value: mobile}                  a constant

Every form takes ``default:``. A value is "absent" when the reference finds nothing,
null, or a blank string; for ids and names the SDK's placeholders "null" and
"undefined" are absent too, so a list falls through them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..validation import Problems, Section, describe, join
from .paths import MISSING, compile_ref

Blank = Callable[[Any], bool]


def blank_value(value: Any) -> bool:
    return value is MISSING or value is None or (type(value) is str and not value.strip())


def blank_id(value: Any) -> bool:
    return blank_value(value) or value == "null" or value == "undefined"


class Extractor:
    """``extractor(value, message)`` returns what the spec finds, or MISSING.

    ``describe`` is how a reason names the spec: "'user.id'" or "any of 'a', 'b'".
    ``explain(value, message)``, where given, says why the spec found nothing; it only
    runs on the way to an invalid-message reason, never on the per-message path.
    """

    __slots__ = ("get", "describe", "explain")

    def __init__(
        self, get: Callable[[Any, Any], Any], describe: str, explain: Callable[[Any, Any], str | None] | None = None
    ):
        self.get = get
        self.describe = describe
        self.explain = explain

    def why_missing(self, value: Any, message: Any) -> str:
        """`` (reason)`` for an invalid-message text, or ''."""
        reason = self.explain(value, message) if self.explain is not None else None
        return f" ({reason})" if reason else ""

    def __call__(self, value: Any, message: Any) -> Any:
        return self.get(value, message)


def compile_field(raw: Any, where: str, problems: Problems, blank: Blank = blank_value) -> Extractor | None:
    """Compile a spec; on a mistake record it in ``problems`` and return None."""
    if isinstance(raw, str):
        return _reference(raw, where, problems)
    if isinstance(raw, list):
        return _first_of(raw, where, problems, blank)
    if isinstance(raw, dict):
        return _spec_mapping(raw, where, problems, blank)
    problems.add(
        where,
        "expected a path (e.g. 'user.id'), a list of paths, or a mapping with one of "
        f"path/template/value, found {describe(raw)}",
    )
    return None


def _reference(text: str, where: str, problems: Problems) -> Extractor | None:
    try:
        return Extractor(compile_ref(text), repr(text))
    except ValueError as exc:
        problems.add(where, str(exc))
        return None


def _first_of(items: list, where: str, problems: Problems, blank: Blank) -> Extractor | None:
    if not items:
        problems.add(where, "expected at least one candidate, found an empty list")
        return None
    candidates = [compile_field(item, join(where, i), problems, blank) for i, item in enumerate(items)]
    compiled = [c for c in candidates if c is not None]
    if len(compiled) < len(candidates):
        return None
    if len(compiled) == 1:
        return compiled[0]
    getters = tuple(c.get for c in compiled)

    def first(value: Any, message: Any) -> Any:
        for get in getters:
            found = get(value, message)
            if not blank(found):
                return found
        return MISSING

    return Extractor(first, "any of " + ", ".join(c.describe for c in compiled))


def _spec_mapping(raw: dict, where: str, problems: Problems, blank: Blank) -> Extractor | None:
    section = Section(raw, where, problems)
    forms = [k for k in ("path", "template", "value") if k in raw]
    default = section.raw("default", MISSING)
    if default is not MISSING and not _json_constant(default, join(where, "default"), problems):
        return None
    inner: Extractor | None = None
    if len(forms) != 1:
        section.raw("path", None), section.raw("template", None), section.raw("value", None)
        found = f"found {', '.join(forms)}" if forms else f"found keys {', '.join(map(str, raw)) or 'none'}"
        problems.add(where, f"expected exactly one of path, template or value, {found}")
    elif forms[0] == "path":
        inner = compile_field(section.raw("path"), join(where, "path"), problems, blank)
        if inner is not None and isinstance(raw["path"], dict):
            problems.add(join(where, "path"), "expected a path or a list of paths, found an object")
            inner = None
    elif forms[0] == "template":
        inner = _template(section.raw("template"), join(where, "template"), problems)
    else:
        constant = section.raw("value")
        if _json_constant(constant, join(where, "value"), problems):
            inner = Extractor(lambda value, message: constant, f"the constant {json.dumps(constant)}")
    section.finish()
    if inner is None:
        return None
    if default is MISSING:
        return inner
    get = inner.get

    def with_default(value: Any, message: Any) -> Any:
        found = get(value, message)
        return default if blank(found) else found

    return Extractor(with_default, f"{inner.describe} (default {json.dumps(default)})")


def _json_constant(value: Any, where: str, problems: Problems) -> bool:
    """A constant must be JSON: YAML's .nan and .inf are not (UserFlux could not take them)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        problems.add(where, f"expected a JSON value, found {describe(value)} (NaN and infinity are not JSON)")
        return False
    return True


def parse_template(text: str) -> list[tuple[str, str]]:
    """Split ``"{a}_x{{y}}"`` into ``[("ref", "a"), ("text", "_x{y}")]``."""
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "{}" and text[i : i + 2] in ("{{", "}}"):
            literal.append(ch)
            i += 2
        elif ch == "{":
            end = text.find("}", i)
            if end < 0:
                raise ValueError(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
            if literal:
                parts.append(("text", "".join(literal)))
                literal = []
            parts.append(("ref", text[i + 1 : end].strip()))
            i = end + 1
        elif ch == "}":
            raise ValueError(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append(("text", "".join(literal)))
    return parts


def _render(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _template(text: Any, where: str, problems: Problems) -> Extractor | None:
    if not isinstance(text, str):
        problems.add(where, f"expected a string like '{{type}}_{{action}}', found {describe(text)}")
        return None
    try:
        parts = parse_template(text)
        refs = [(body, compile_ref(body)) for kind, body in parts if kind == "ref"]  # (text, getter)
    except ValueError as exc:
        problems.add(where, str(exc))
        return None
    if not refs:
        problems.add(where, "a template needs at least one {reference}; use {value: ...} for a constant")
        return None

    # Compiled to a format string with one {} per reference: the per-message work is the
    # lookups and one format call.
    getters = tuple(get for _, get in refs)
    layout = "".join("{}" if kind == "ref" else body.replace("{", "{{").replace("}", "}}") for kind, body in parts)

    def render(value: Any, message: Any) -> Any:
        texts = []
        for get in getters:
            found = get(value, message)
            if type(found) is str and found and not found.isspace():
                texts.append(found)
            elif blank_value(found):
                return MISSING  # a template with a hole is absent, so a default applies
            else:
                texts.append(_render(found))
        return layout.format(*texts)

    def holes(value: Any, message: Any) -> str | None:
        missing = [body for body, get in refs if blank_value(get(value, message))]
        return f"nothing at {', '.join(missing)}" if missing else None

    return Extractor(render, f"the template {text!r}", holes)
