"""Sample the connector with py-spy during a run's steady window, and say where the time went.

py-spy (``pip install py-spy``, in the ``bench`` extra) records, 100 times a second, the
stack of the thread that holds the GIL, if one does. The connector's Python code runs only
under the GIL, so the samples show where its interpreter time goes, and their count over
the samples taken says how busy the GIL was. (Without ``--gil``, py-spy also counts
threads blocked on a lock or a socket as running, which hides the CPU in the waiting.)
The raw file it writes (collapsed stacks, one ``frame;frame;... count`` a line) is kept
for flame graph tools (speedscope opens it); ``summary`` reads it back.

Sampling pauses the process briefly each time: a profiled run's figures are a little
worse than an unprofiled one's.
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from tests.benchmark.errors import BenchError

RATE = 100


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(pathlib.Path(sys.executable).parent))
    if found is None:
        raise BenchError("py-spy is not installed: `make bench` installs it (pip install py-spy)")
    return found


class Profiler:
    def __init__(self, pid: int, path: pathlib.Path):
        self.path = path
        self.started = time.monotonic()
        self.seconds = 0.0
        self._log = open(path.with_suffix(".log"), "wb")
        self.process = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(RATE),
                "--gil",
                "--format",
                "raw",
                "--function",
                "--output",
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        if self.running:
            self.seconds = time.monotonic() - self.started
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _frame_file(frame: str) -> str:
    # "JSONDecoder.decode (json/decoder.py:332)" -> "json/decoder.py"
    inside = frame.rsplit(" (", 1)[-1].rstrip(")")
    return inside.rsplit(":", 1)[0]


def _area(file: str) -> str:
    """What a source file belongs to: a connector module, or the library's top package."""
    if file.startswith("connector/"):
        return file.removesuffix(".py")
    return file.split("/", 1)[0].removesuffix(".py")


def summary(path: pathlib.Path, seconds: float = 0.0, top: int = 15) -> dict[str, Any]:
    """Samples by function (where they were taken), by library or connector module (where they
    were taken), and by connector module (the deepest connector frame on the stack: the stage
    that spent the time, its library calls included)."""
    by_function: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_function[frames[-1]] += count
        by_area[_area(_frame_file(frames[-1]))] += count
        stage = next((f for f in map(_frame_file, reversed(frames)) if f.startswith("connector/")), "(outside)")
        by_stage[stage.removesuffix(".py")] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "gil_busy": total / (seconds * RATE) if seconds else None,
        "functions": share(by_function),
        "areas": share(by_area),
        "stages": share(by_stage),
    }


def format_summary(found: dict[str, Any]) -> str:
    lines = [
        f"{found['samples']} samples of the thread holding the GIL"
        + (f" (held in about {found['gil_busy']:.0%} of the samples taken)" if found["gil_busy"] else "")
    ]
    for title, key in (
        ("connector module on the stack (its library calls included)", "stages"),
        ("where the samples were taken, by package", "areas"),
        ("where the samples were taken, by function", "functions"),
    ):
        lines.append(f"  {title}:")
        lines.extend(f"    {share:6.1%}  {name}" for name, share in found[key])
    return "\n".join(lines)
