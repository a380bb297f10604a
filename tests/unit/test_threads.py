"""The connector's threads carry their names for the kernel too (top -H, /proc, the benchmark)."""

from __future__ import annotations

import pathlib
import threading

from connector.threads import daemon_thread


def _kernel_name() -> str:
    return pathlib.Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def test_a_connector_thread_has_its_name_in_python_and_for_the_kernel():
    seen: list[str] = []
    thread = daemon_thread(lambda: seen.append(_kernel_name()), "sender-3")
    thread.start()
    thread.join(5)
    assert thread.daemon and thread.name == "sender-3"
    assert seen == ["sender-3"]


def test_a_long_name_is_cut_to_the_fifteen_bytes_the_kernel_keeps():
    seen: list[str] = []
    thread = daemon_thread(lambda: seen.append(_kernel_name()), "a-name-longer-than-fifteen")
    thread.start()
    thread.join(5)
    assert seen == ["a-name-longer-t"]
