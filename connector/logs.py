"""Logging: text or JSON lines on stderr, with every secret value masked.

Secrets are masked in the formatted line, whatever put them there (our code, httpx,
librdkafka): the filter knows the values from the configuration and replaces them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

MASK = "***"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole. Very short
        # values would mask ordinary words; UserFlux keys and passwords are not that short.
        self.secrets = sorted({s for s in [*self.secrets, *secrets] if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            record.msg = self.redact(message)
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


_redactor = RedactSecrets()


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_redactor)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; our sender logs what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in every log line from now on."""
    _redactor.add(secrets)


def redact(text: str) -> str:
    return _redactor.redact(text)


class TransientNotices(logging.Filter):
    """librdkafka logs some conditions it retries by itself as warnings, e.g. the
    dead-letter producer's "Coordinator load in progress" while the cluster loads its
    coordinator at start. They are shown at DEBUG: nothing is wrong, nothing to do."""

    PATTERNS = ("Coordinator load in progress",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(p in record.getMessage() for p in self.PATTERNS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class RepeatLimit(logging.Filter):
    """At most ``burst`` lines of the same text per ``period_s``; numbers do not make a
    text different. For librdkafka, which logs a failing connection on every retry (a
    wrong password: dozens of lines a minute). The next line after a quiet stretch says
    how many were not shown."""

    MAX_KEYS = 1000  # distinct texts remembered; beyond that the memory starts afresh

    def __init__(self, burst: int = 5, period_s: float = 60.0, clock=time.monotonic):
        super().__init__()
        self.burst, self.period_s, self.clock = burst, period_s, clock
        self._seen: dict[tuple, list] = {}  # key -> [window start, shown, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, _DIGITS.sub("#", text[:300]))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.period_s:
            suppressed = entry[2] if entry is not None else 0
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if suppressed:
                record.msg, record.args = f"{text} ({suppressed} more like this not shown)", None
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


_DIGITS = re.compile(r"\d+")


class RateLimitedLog:
    """At most ``burst`` lines per ``period_s``; the rest are counted and summarised, so
    a flood of bad messages cannot drown the log (metrics still count every one)."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period_s: float = 10.0, clock=time.monotonic):
        self.logger = logger
        self.burst = burst
        self.period_s = period_s
        self.clock = clock
        self._window_start = clock()
        self._count = 0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args) -> None:
        now = self.clock()
        if now - self._window_start >= self.period_s:
            if self._suppressed:
                self.logger.log(
                    level, "%d more like this in the last %.0fs (not shown)", self._suppressed, self.period_s
                )
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            self.logger.log(level, msg, *args)
        else:
            self._suppressed += 1
