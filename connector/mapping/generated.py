"""An event builder's per-message function, generated once per mapping.

Building an event reads five fields. As calls (``spec.get(value, message)`` per field,
then ``properties.build``) each read costs a Python call and its attribute lookups, and
those calls were a fifth of the mapping's cost. Here the builder's steps are written out
as one function per mapping, with the plain JSON paths of one or two segments (the
common case: ``event``, ``user.id``) read inline, and compiled once at start. Every
other spec (a list, a default, a template, metadata, longer paths) is still called.

The function does what the template below says and nothing else; the checks that only
run when something is wrong (``_name``, ``_id``, ``_no_id``, ``_timestamp``) stay
methods of ``EventBuilder``. ``builder.source`` keeps the generated text for debugging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .paths import MISSING, _step

# The function, with {placeholders} for what differs between mappings. Reading a field is
# an expression: a lookup written out, or a call of the spec's getter.
_TEMPLATE = """\
def build(value, message):
    found = {name}
    name = found if type(found) is str and found in VALID_NAMES else builder._name(found, value, message)
    event = {{"name": name}}
{user_id}
{anonymous_id}
    if user_id is None and anonymous_id is None:
        builder._no_id()
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    ts = {timestamp}
    if type(ts) is int and EARLIEST_MS <= ts < MILLIS_BELOW:  # epoch milliseconds
        event["timestamp"] = ts
    elif type(ts) is float and EARLIEST_S <= ts < SECONDS_BELOW:  # epoch seconds, as time.time() gives
        event["timestamp"] = round(ts * 1000)
    elif type(ts) is str and (ms := iso_ms(ts)) is not None:  # ISO-8601
        event["timestamp"] = ms
    else:
        event["timestamp"] = builder._timestamp(ts, message)
    event["properties"] = {properties}
    return event
"""

# An id: the common case (a usable string) settled inline, everything else by _id.
_ID = """\
    found = {read}
    {var} = found if type(found) is str and found and found not in ABSENT_IDS and not found.isspace() \\
        else builder._id("{field}", builder.{attr}, found)"""


def generate(builder: Any, names: dict[str, Any]) -> tuple[Callable[[Any, Any], dict], str]:
    """(build, its source) for ``builder``; ``names`` are the module globals it uses
    (VALID_NAMES, ABSENT_IDS, the timestamp bounds, iso_ms)."""
    namespace: dict[str, Any] = dict(names, builder=builder, MISSING=MISSING, step=_step)

    def bind(value: Any) -> str:
        # Keys and getters enter the function as names, never as text in its source.
        name = f"c{len(namespace)}"
        namespace[name] = value
        return name

    def read(spec: Any) -> str:
        segments = getattr(spec.get, "segments", None)
        if segments is not None and len(segments) == 1:
            key = bind(segments[0])
            return f"(value.get({key}, MISSING) if type(value) is dict else step(value, {key}))"
        if segments is not None and len(segments) == 2:
            first, second = bind(segments[0]), bind(segments[1])
            return (
                f"(node.get({second}, MISSING) if type(node := (value.get({first}, MISSING) "
                f"if type(value) is dict else step(value, {first}))) is dict "
                f"else (step(node, {second}) if node is not MISSING else MISSING))"
            )
        return f"{bind(spec.get)}(value, message)"

    def identifier(spec: Any, var: str, field: str, attr: str) -> str:
        if spec is None:
            return f"    {var} = None"
        return _ID.format(read=read(spec), var=var, field=field, attr=attr)

    properties = builder.properties
    plain_copy = (
        properties.source is not None
        and properties.include is None
        and not properties.exclude
        and not properties.assign
    )
    if plain_copy:  # the whole object copied: only a value that is not an object needs the builder
        props = (
            f"(dict(found) if type(found := {read(properties.source)}) is dict "
            f"else builder.properties.build(value, message))"
        )
    else:
        props = "builder.properties.build(value, message)"
    source = _TEMPLATE.format(
        name=read(builder.name),
        user_id=identifier(builder.user_id, "user_id", "userId", "user_id"),
        anonymous_id=identifier(builder.anonymous_id, "anonymous_id", "anonymousId", "anonymous_id"),
        timestamp=read(builder.timestamp) if builder.timestamp is not None else "MISSING",
        properties=props,
    )
    exec(compile(source, f"<mapping build: {builder.name.describe}>", "exec"), namespace)  # noqa: S102 - our own template, values passed in the namespace
    return namespace["build"], source
