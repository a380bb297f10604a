"""One compiled mapping: which topics it takes, which messages it keeps, how it builds
the UserFlux event.

Per message, mapper.py asks the mapping's ``where`` filter (``Filter.keeps``) whether
to keep the message and its builder (``EventBuilder.build``, generated per mapping by
generated.py) for the event dict; the builder raises InvalidMessage with a reason that
names the field, the spec and what was found.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..config.model import DEFAULT_DESTINATION, DEFAULT_KEY_FORMAT, DEFAULT_VALUE_FORMAT, KEY_FORMATS, VALUE_FORMATS
from ..errors import InvalidMessage
from ..validation import Problems, Section, describe, join, short_repr
from .fields import Extractor, blank_id, blank_value, compile_field
from .generated import generate
from .paths import MISSING, compile_ref, split_path
from .timestamps import EARLIEST_MS, EARLIEST_S, MILLIS_BELOW, SECONDS_BELOW, in_range, iso_ms, to_epoch_ms

_FIELDS = ("name", "userId", "anonymousId", "timestamp", "properties")


class Mapping:
    def __init__(
        self,
        index: int,
        topics: frozenset[str] | None,
        pattern: re.Pattern | None,
        location_enrichment: bool,
        where: Filter | None,
        builder: EventBuilder,
        spec: dict,
        value_format: str = DEFAULT_VALUE_FORMAT,
        key_format: str = DEFAULT_KEY_FORMAT,
        destination: str = DEFAULT_DESTINATION,
    ):
        self.index = index
        self.value_format = value_format  # config.model.VALUE_FORMATS: how mapper.py decodes the value
        self.key_format = key_format  # KEY_FORMATS: the key, for @key
        self.topics = topics
        self.pattern = pattern
        self.location_enrichment = location_enrichment
        self.where = where
        self.builder = builder
        self.spec = spec  # the raw YAML, for `check` summaries
        self.destination = destination  # the UserFlux project its events go to (startup.py checks the name)
        # What the batcher keys this mapping's events by: a batch never mixes destinations or
        # locationEnrichment values. Built once here, so the per-message path only reads it.
        self.batch_key = (destination, location_enrichment)

    @property
    def label(self) -> str:
        return f"mappings[{self.index}] ({self.source})"

    @property
    def source(self) -> str:
        """What the mapping reads, in words: ``topics a, b`` or ``pattern ^x``."""
        if self.topics is not None:
            return f"topics {', '.join(sorted(self.topics))}"
        return f"pattern {self._pattern().pattern}"

    def subscription(self) -> list[str]:
        return sorted(self.topics) if self.topics is not None else [self._pattern().pattern]

    def matches(self, topic: str) -> bool:
        if self.topics is not None:
            return topic in self.topics
        return self._pattern().search(topic) is not None

    def _pattern(self) -> re.Pattern:
        assert self.pattern is not None, "a mapping has topics or a pattern"  # compile_mapping sees to it
        return self.pattern


class Filter:
    """``where:``: every condition must hold, or the message is skipped (and committed)."""

    def __init__(self, conditions: list[tuple[Any, str, str, Any]]):
        self.conditions = conditions  # (getter, path text, op, operand)
        self._checks = tuple(_compile_condition(get, op, operand) for get, _, op, operand in conditions)

    def keeps(self, value: Any, message: Any) -> bool:
        """The per-message test: whether every condition holds (``skip_reason`` says why not)."""
        for holds in self._checks:
            if not holds(value, message):
                return False
        return True

    def describe(self) -> str:
        words = {"in": "in", "not_in": "not in"}
        return " and ".join(
            f"{path} {'exists' if operand else 'is missing'}"
            if op == "exists"
            else f"{path} {words[op]} {_show_list(operand)}"
            for _, path, op, operand in self.conditions
        )

    def skip_reason(self, value: Any, message: Any) -> str | None:
        for get, path, op, operand in self.conditions:
            found = get(value, message)
            if op == "in" and (found is MISSING or not _member(found, operand)):
                return f"where: {path} is {_show(found)}, not one of {_show_list(operand)}"
            if op == "not_in" and found is not MISSING and _member(found, operand):
                return f"where: {path} is {_show(found)}, one of the excluded {_show_list(operand)}"
            if op == "exists" and (found is not MISSING and found is not None) != operand:
                return f"where: {path} {'is missing' if operand else 'is present'}"
        return None


def _compile_condition(get: Any, op: str, operand: Any) -> Any:
    """One condition as ``holds(value, message) -> bool``, the same rule as ``skip_reason``.
    A list of strings (the common case) becomes a set lookup: only a string equals a string."""
    if op == "exists":
        if operand:
            return lambda value, message: (found := get(value, message)) is not MISSING and found is not None
        return lambda value, message: (found := get(value, message)) is MISSING or found is None
    if all(type(item) is str for item in operand):
        names = frozenset(operand)
        # The type first: a list or an object found there is not hashable.
        if op == "in":
            return lambda value, message: type(found := get(value, message)) is str and found in names
        return lambda value, message: not (type(found := get(value, message)) is str and found in names)
    if op == "in":
        return lambda value, message: (found := get(value, message)) is not MISSING and _member(found, operand)
    return lambda value, message: (found := get(value, message)) is MISSING or not _member(found, operand)


def _member(found: Any, operand: tuple) -> bool:
    # Python has True == 1 and False == 0; in JSON they are different values.
    return any(found == item and isinstance(found, bool) == isinstance(item, bool) for item in operand)


def _show(value: Any) -> str:
    return "missing" if value is MISSING else describe(value)


def _show_list(values: tuple) -> str:
    return "[" + ", ".join(map(str, values)) + "]"


class EventBuilder:
    def __init__(
        self,
        name: Extractor,
        user_id: Extractor | None,
        anonymous_id: Extractor | None,
        timestamp: Extractor | None,
        properties: PropertiesBuilder,
    ):
        self.name = name
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.timestamp = timestamp
        self.properties = properties
        # build(value, message) -> the event dict: the per-message path, generated from
        # these specs once (generated.py), with the common cases (a name already seen, a
        # string id, epoch milliseconds) settled inline and the rest left to the checks below.
        self.build, self.source = generate(
            self,
            {
                "VALID_NAMES": _VALID_NAMES,
                "ABSENT_IDS": _ABSENT_IDS,
                "iso_ms": iso_ms,
                "EARLIEST_MS": EARLIEST_MS,
                "MILLIS_BELOW": MILLIS_BELOW,
                "EARLIEST_S": EARLIEST_S,
                "SECONDS_BELOW": SECONDS_BELOW,
            },
        )

    def summary(self) -> list[tuple[str, str]]:
        return [
            ("name", self.name.describe),
            ("userId", self.user_id.describe if self.user_id else "not mapped"),
            ("anonymousId", self.anonymous_id.describe if self.anonymous_id else "not mapped"),
            (
                "timestamp",
                (self.timestamp.describe + ", else " if self.timestamp else "") + "the Kafka message's timestamp",
            ),
            ("properties", self.properties.describe()),
        ]

    def _no_id(self) -> None:
        tried = " and ".join(
            f"{field} ({spec.describe if spec else 'not mapped'})"
            for field, spec in (("userId", self.user_id), ("anonymousId", self.anonymous_id))
        )
        raise InvalidMessage(f"no userId or anonymousId: nothing found for {tried}")

    def _name(self, found: Any, value: Any, message: Any) -> str:
        if blank_id(found):
            raise InvalidMessage(
                f"name: no value found for {self.name.describe}{self.name.why_missing(value, message)}"
            )
        if isinstance(found, bool) or not isinstance(found, (str, int, float)):
            raise InvalidMessage(f"name: expected a string from {self.name.describe}, found {describe(found)}")
        name = found if isinstance(found, str) else _number_text(found)
        if _WHITE_SPACE.search(name):
            raise InvalidMessage(
                f"name: {short_repr(name)} contains white space, which UserFlux event names do not support"
            )
        if len(_VALID_NAMES) >= _VALID_NAMES_KEPT:  # event names are few; a flood of odd ones is bounded
            _VALID_NAMES.clear()
        _VALID_NAMES[name] = None
        return name

    def _id(self, field: str, spec: Extractor, found: Any) -> str | None:
        """What ``spec`` found, as an id: None when absent; InvalidMessage when it cannot be one."""
        if blank_id(found):
            return None
        if type(found) is str:
            return found
        if isinstance(found, (int, float)) and not isinstance(found, bool):
            return _number_text(found)
        raise InvalidMessage(f"{field}: expected a string or a number from {spec.describe}, found {describe(found)}")

    def _timestamp(self, found: Any, message: Any) -> int:
        if self.timestamp is not None and not blank_value(found):
            try:
                return to_epoch_ms(found)
            except ValueError as exc:
                raise InvalidMessage(f"timestamp: from {self.timestamp.describe}: {exc}") from None
        # No timestamp in the message: the Kafka record's own time, else now.
        kind, ts = message.timestamp()
        if kind != 0 and ts is not None and ts >= 0:
            try:
                return in_range(ts, ts)
            except ValueError as exc:  # a producer can set any CreateTime
                raise InvalidMessage(f"timestamp: the Kafka message's own timestamp: {exc}") from None
        return int(time.time() * 1000)


# Names already found valid (no white space), so the check runs once per name, not per message.
_VALID_NAMES: dict[str, None] = {}
_VALID_NAMES_KEPT = 10_000
_WHITE_SPACE = re.compile(r"\s")
_ABSENT_IDS = frozenset({"null", "undefined"})


def _number_text(number: int | float) -> str:
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


class PropertiesBuilder:
    """``properties:``: an object copied from ``from``, narrowed by include/exclude, plus ``set``."""

    def __init__(
        self,
        source: Extractor | None,
        include: tuple[str, ...] | None,
        exclude: tuple[tuple[str, ...], ...],
        assign: tuple[tuple[str, Extractor], ...],
    ):
        self.source = source
        self.include = include
        self.exclude = exclude
        self.assign = assign
        # The getters themselves, without the Extractor around them: one call less per field.
        self._source = source.get if source is not None else None
        self._assign = tuple((key, spec.get) for key, spec in assign)

    def describe(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(f"copied from {self.source.describe}")
            if self.include is not None:
                parts.append(f"only {', '.join(self.include)}")
            if self.exclude:
                parts.append(f"without {', '.join('.'.join(p) for p in self.exclude)}")
        if self.assign:
            parts.append("set " + ", ".join(f"{k} = {spec.describe}" for k, spec in self.assign))
        return "; ".join(parts) or "none (an empty object)"

    def build(self, value: Any, message: Any) -> dict:
        props: dict[str, Any]
        if self._source is None:
            props = {}
        else:
            found = self._source(value, message)
            if found is MISSING or found is None:
                props = {}
            elif type(found) is dict:
                if self.include is not None:
                    props = {k: found[k] for k in self.include if k in found}
                else:
                    props = dict(found)  # a copy: exclude must not change the message value
            else:
                assert self.source is not None  # as self._source
                raise InvalidMessage(
                    f"properties: expected an object from {self.source.describe}, found {describe(found)}"
                )
            for path in self.exclude:
                _remove(props, path)
        for key, get in self._assign:
            found = get(value, message)
            if found is not MISSING:
                props[key] = found
        return props


def _remove(props: dict, path: tuple[str, ...]) -> None:
    node = props
    for segment in path[:-1]:
        child = node.get(segment)
        if type(child) is not dict:
            return
        child = dict(child)  # copy on the way down: the original value stays untouched
        node[segment] = child
        node = child
    node.pop(path[-1], None)


# ---------------------------------------------------------------------------
# Compilation from YAML


def compile_mapping(
    raw: Any,
    index: int,
    problems: Problems,
    default_location_enrichment: bool,
    default_value_format: str = DEFAULT_VALUE_FORMAT,
    default_key_format: str = DEFAULT_KEY_FORMAT,
) -> Mapping | None:
    where = f"mappings[{index}]"
    section = Section(raw, where, problems)
    if not section.ok:
        return None
    before = len(problems.lines)

    topics: frozenset[str] | None = None
    pattern: re.Pattern | None = None
    has_topics, has_pattern = section.has("topics"), section.has("pattern")
    if has_topics == has_pattern:
        section.raw("topics", None), section.raw("pattern", None)
        problems.add(
            where,
            "expected exactly one of topics (a list of names) or pattern (a regex), found "
            + ("both" if has_topics else "neither"),
        )
    elif has_topics:
        raw_topics = section.raw("topics")
        if isinstance(raw_topics, str):
            raw_topics = [raw_topics]
        if not isinstance(raw_topics, list) or not raw_topics or not all(isinstance(t, str) and t for t in raw_topics):
            problems.add(
                join(where, "topics"), f"expected a non-empty list of topic names, found {describe(raw_topics)}"
            )
        else:
            bad = [t for t in raw_topics if t.startswith("^")]
            if bad:
                problems.add(join(where, "topics"), f"{bad[0]!r} looks like a regex; write it as pattern: instead")
            topics = frozenset(raw_topics)
    else:
        text = section.get_str("pattern")
        if text is not None:
            if not text.startswith("^"):
                problems.add(
                    join(where, "pattern"),
                    f"a Kafka regex subscription must start with '^', found {text!r} (did you mean {'^' + text!r}?)",
                )
            else:
                try:
                    pattern = re.compile(text)
                except re.error as exc:
                    problems.add(join(where, "pattern"), f"not a valid regex: {exc}")

    location_enrichment = section.get_bool("location_enrichment", default_location_enrichment)
    value_format = section.get_choice("value_format", VALUE_FORMATS, default=default_value_format)
    key_format = section.get_choice("key_format", KEY_FORMATS, default=default_key_format)
    destination = section.get_str("destination", DEFAULT_DESTINATION)
    condition = _compile_where(section.raw("where", None), join(where, "where"), problems)
    builder = _compile_event(section.section("event", required=True), problems)
    section.finish()
    if len(problems.lines) != before or builder is None:
        return None
    return Mapping(
        index, topics, pattern, location_enrichment, condition, builder, raw, value_format, key_format, destination
    )


def _compile_where(raw: Any, where: str, problems: Problems) -> Filter | None:
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    conditions = []
    for i, item in enumerate(items):
        here = join(where, i) if isinstance(raw, list) else where
        section = Section(item, here, problems, what="a condition like {path: type, in: [track, screen]}")
        if not section.ok:
            continue
        path = section.get_str("path")
        ops = [op for op in ("in", "not_in", "exists") if section.has(op)]
        for op in ("in", "not_in", "exists"):
            section.raw(op, None)
        section.finish()
        if len(ops) != 1:
            problems.add(here, f"expected exactly one of in, not_in or exists, found {', '.join(ops) or 'none'}")
            continue
        op = ops[0]
        operand = item[op]
        if op == "exists":
            if not isinstance(operand, bool):
                problems.add(join(here, op), f"expected true or false, found {describe(operand)}")
                continue
        else:
            if not isinstance(operand, list) or not operand:
                problems.add(join(here, op), f"expected a non-empty list of values, found {describe(operand)}")
                continue
            operand = tuple(operand)
        if path is None:
            continue
        try:
            conditions.append((compile_ref(path), path, op, operand))
        except ValueError as exc:
            problems.add(join(here, "path"), str(exc))
    return Filter(conditions) if conditions else None


def _compile_event(section: Section, problems: Problems) -> EventBuilder | None:
    if not section.ok:
        return None
    before = len(problems.lines)
    name = (
        compile_field(section.raw("name"), join(section.path, "name"), problems, blank_id)
        if section.has("name")
        else section.raw("name")
    )
    ids = {}
    for field in ("userId", "anonymousId"):
        raw = section.raw(field, None)
        ids[field] = None if raw is None else compile_field(raw, join(section.path, field), problems, blank_id)
    if section.data.get("userId") is None and section.data.get("anonymousId") is None:
        problems.add(section.path, "map at least one of userId or anonymousId: UserFlux needs one of them")
    raw_ts = section.raw("timestamp", None)
    timestamp = None if raw_ts is None else compile_field(raw_ts, join(section.path, "timestamp"), problems)
    properties = _compile_properties(section.raw("properties", None), join(section.path, "properties"), problems)
    section.finish()
    if len(problems.lines) != before or name is None:
        return None
    return EventBuilder(name, ids["userId"], ids["anonymousId"], timestamp, properties)


def _compile_properties(raw: Any, where: str, problems: Problems) -> PropertiesBuilder:
    empty = PropertiesBuilder(None, None, (), ())
    if raw is None:
        return empty
    if isinstance(raw, (str, list)):
        source = compile_field(raw, where, problems)
        return PropertiesBuilder(source, None, (), ()) if source else empty
    section = Section(raw, where, problems, what="a path, or a mapping with from/include/exclude/set")
    if not section.ok:
        return empty
    source = None
    if section.has("from"):
        source = compile_field(section.raw("from"), join(where, "from"), problems)
    include = _key_list(section.raw("include", None), join(where, "include"), problems, dotted=False)
    exclude = _key_list(section.raw("exclude", None), join(where, "exclude"), problems, dotted=True)
    if (include or exclude) and not section.has("from"):
        problems.add(where, "include/exclude narrow the object read by from:, but from: is missing")
    assign = []
    set_section = section.section("set")
    for key in list(set_section.data):
        spec = compile_field(set_section.raw(key), join(set_section.path, key), problems)
        if not isinstance(key, str):
            problems.add(join(set_section.path, key), "property names must be strings")
        elif spec is not None:
            assign.append((key, spec))
    section.finish()
    return PropertiesBuilder(
        source,
        tuple(include) if include is not None else None,
        tuple(tuple(split_path(p)) for p in exclude or ()),
        tuple(assign),
    )


def _key_list(raw: Any, where: str, problems: Problems, dotted: bool) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(k, str) and k for k in raw):
        problems.add(where, f"expected a list of property names, found {describe(raw)}")
        return None
    if dotted:
        for key in raw:
            try:
                split_path(key)
            except ValueError as exc:
                problems.add(where, f"{key!r}: {exc}")
                return None
    return raw
