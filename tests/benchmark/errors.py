"""The benchmark's error: a run, or what it needs, could not be measured."""


class BenchError(RuntimeError):
    """Something did not start, finish or add up in time; the message says what."""
