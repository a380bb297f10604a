"""The connector's exceptions.

Lower-level errors (YAML, librdkafka, httpx) are translated into these once, at the
module that talks to that library; everything above only sees this tree::

    ConnectorError
    ├── ConfigError                 bad configuration: nothing starts (exit 2)
    ├── InvalidMessage              one message can never be delivered (on_invalid decides)
    ├── RegistryUnavailable         the schema registry did not answer: the message waits (transient)
    └── FatalError                  the run must stop; what is done is committed first
        ├── AuthError               UserFlux refused the write key: 401/403 (exit 3)
        ├── DeliveryConfigError     UserFlux answered something no retry can fix (exit 3)
        ├── RegistryRefused         the schema registry refused the credentials: 401/403 (exit 3)
        ├── StoppedOnInvalid        on_invalid: stop met an invalid message (exit 4)
        ├── KafkaFatalError         the consumer or dead-letter producer failed for good (exit 5)
        └── GroupBusy               a consumer group has members that a command must not
                                    disturb: offsets reset, a second replay (exit 7)

Messages never contain secrets: the API key and Kafka passwords are redacted before a
message is built, and config errors describe secret values without quoting them.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""

    exit_code = 1


class ConfigError(ConnectorError):
    """The configuration is wrong; ``problems`` lists every finding, one per line."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}invalid configuration: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{where}invalid configuration ({len(self.problems)} problems):\n{lines}"
        super().__init__(text)


class InvalidMessage(ConnectorError):
    """A message that can never become a deliverable UserFlux event.

    ``stage`` tells where it failed: ``deserialize`` (the value is not JSON, or not in
    its format: not the wire format, an unknown schema id, a payload that does not decode),
    ``map`` (the mapping could not build a valid event) or ``deliver`` (UserFlux
    refused the event on its own).
    """

    # A reason quotes what it found; this bound keeps a poison message from turning it
    # (and so a log line and a dead-letter header) into megabytes.
    MAX_REASON_CHARS = 1000

    def __init__(self, reason: str, stage: str = "map"):
        if len(reason) > self.MAX_REASON_CHARS:
            reason = reason[: self.MAX_REASON_CHARS] + f"... ({len(reason) - self.MAX_REASON_CHARS} more characters)"
        self.reason = reason
        self.stage = stage
        super().__init__(reason)


class RegistryUnavailable(ConnectorError):
    """The schema registry could not be asked for a schema now (unreachable, a timeout, a
    5xx): transient. The message is not invalid; the pipeline holds it and retries."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class FatalError(ConnectorError):
    """The run cannot go on. The pipeline commits what is done, then exits."""


class AuthError(FatalError):
    exit_code = 3


class DeliveryConfigError(FatalError):
    exit_code = 3


class RegistryRefused(FatalError):
    exit_code = 3


class StoppedOnInvalid(FatalError):
    exit_code = 4


class KafkaFatalError(FatalError):
    exit_code = 5


class GroupBusy(FatalError):
    """A consumer group has active members: moving its offsets, or a second replay in the
    same group, would work against them. Nothing was changed; run again once they are gone."""

    exit_code = 7
