"""What a process has used, from /proc, and what machine the benchmark ran on."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
from importlib import metadata

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), in seconds."""
    return _cpu_of(pathlib.Path(f"/proc/{pid}/stat").read_text())


def _cpu_of(stat: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc stat line, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# The connector's threads by their kernel names (connector/threads.py; librdkafka names its own).
THREAD_GROUPS = (("sender-", "senders"), ("dialer", "senders"), ("rdk:", "librdkafka"))


def thread_group(tid: int, pid: int, name: str) -> str:
    """Which part of the connector a thread is: main (the pipeline loop), senders, librdkafka or other."""
    if tid == pid:
        return "main"
    for prefix, group in THREAD_GROUPS:
        if name.startswith(prefix):
            return group
    return "other"


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time per thread group of the process's live threads, in seconds. A
    thread that has ended is missing: compare two samples of a steady run, not a start and an end."""
    groups: dict[str, float] = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = _cpu_of((task / "stat").read_text())
        except OSError:  # the thread ended in between
            continue
        group = thread_group(int(task.name), pid, name)
        groups[group] = groups.get(group, 0.0) + seconds
    return groups


def memory_mb(pid: int) -> dict[str, float]:
    """The resident set now (``rss``) and its peak so far (``peak``), in MB."""
    found: dict[str, float] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            found["rss"] = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            found["peak"] = int(line.split()[1]) / 1024
    return found


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Enough to tell two result files' machines (and code) apart."""
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import confluent_kafka

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "httpx": metadata.version("httpx"),
        "confluent_kafka": metadata.version("confluent-kafka"),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    here = pathlib.Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "connector"],
            cwd=here.parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'+changes' if dirty else ''}" if commit else "unknown"
