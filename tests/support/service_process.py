"""What the harnesses that run a real server for the tests share.

The Kafka broker (``kafka_broker.py``), the schema registry (``schema_registry.py``) and
Prometheus (``prometheus.py``) each keep what is their own: what to fetch and run, how to
tell it is ready, its configuration. The rest is here:

- ``cached_dir()``: a directory fetched once per machine, atomically (built in a temporary
  directory that is renamed into place only once complete, a marker file last, so that an
  interrupted download never looks like a finished one) and under a file lock (concurrent
  callers, e.g. pytest-xdist workers, wait for the first). ``maven_copy_dependencies()``
  fills one from Maven Central.

- ``ServiceProcess``: one server process, in a session (process group) of its own, its
  output appended to a log file. A process it launches never outlives the Python process
  that launched it: ``stop()`` is registered with ``atexit`` and, on Linux when launched
  from the main thread, the child also gets ``PR_SET_PDEATHSIG`` (SIGKILL), so that it dies
  with its parent even if that parent is killed with SIGKILL or dies on a signal that skips
  ``atexit``. ``detached=True`` (for the ``start --dir`` commands) sets up neither.

- ``PidFiles``, ``cli_start()``, ``cli_stop()``: what ``start --dir DIR`` leaves in DIR (the
  server's pid and its address) and ``stop --dir DIR`` reads, for a detached server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

LOG_TAIL_LINES = 40
MARKER = ".complete"  # written into a cached dir, last, before it is renamed into place

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the file at ``path``, or why they cannot be read."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")
    except OSError as e:
        return f"(cannot read {path}: {e})"


@contextlib.contextmanager
def file_lock(path: pathlib.Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def killpg(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid`` leads (to ``pid`` alone if that is refused)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def run_bounded(cmd: list[str], timeout_s: float, **kwargs) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group with stdout+stderr captured.

    Returns (exit code, output); the exit code is None if the command timed out,
    in which case its whole process group has been killed.
    """
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
        **kwargs,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    except BaseException:
        killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


_PR_SET_PDEATHSIG = 1


def pdeathsig_preexec(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGKILL when its parent (thread) dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved in the parent
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def jvm_options(heap_mb: int = 512) -> list[str]:
    """JVM flags for a server (or a Kafka tool) that is gentle on a 2-core CI box.

    Capped heap, the single-threaded SerialGC (no parallel GC threads fighting
    the tests for the CPU), C1 only (much less JIT work at start-up, plenty fast
    for test traffic), and no perf-data file in /tmp.
    """
    return [
        f"-Xms{min(256, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
        "-Dfile.encoding=UTF-8",
    ]


# --------------------------------------------------------------------------
# Fetching a server, once per machine
# --------------------------------------------------------------------------


def cached_dir(target: pathlib.Path, fill: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """``target`` (absolute), made by ``fill`` unless it is complete already.

    ``fill(scratch)`` builds the content somewhere under the empty directory ``scratch``
    (on the same file system as ``target``) and returns the directory that is to become
    ``target``. That gets a marker file listing what it holds, last, and is then renamed
    into place; ``scratch`` is removed whatever happens. Cheap once ``target`` is there.
    """
    target = target.absolute()
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / MARKER).is_file():  # another process finished it meanwhile
            return target
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            built = fill(scratch)
            (built / MARKER).write_text("".join(f"{p.name}\n" for p in sorted(built.iterdir())))
            if target.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(target)
            os.rename(built, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def maven_copy_dependencies(
    pom: pathlib.Path,
    output_dir: pathlib.Path,
    what: str,
    timeout_s: float,
    error: type[Exception],
    properties: Sequence[str] = (),
) -> str:
    """Copy the dependencies ``pom`` lists into ``output_dir`` with ``mvn`` (what it printed).

    ``what`` ("Kafka 4.4.0") is named in the ``error`` raised when Maven is missing, fails
    or takes longer than ``timeout_s``; the last lines Maven printed come with it.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(f"Maven ('mvn') is not on PATH; it is needed to fetch {what} from Maven Central")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={output_dir}",
        *properties,
    ]
    rc, out = run_bounded(cmd, timeout_s)
    if rc is None:
        raise error(f"mvn timed out after {timeout_s} s fetching {what}:\n{tail(out)}")
    if rc != 0:
        raise error(f"mvn failed (exit {rc}) fetching {what}:\n{tail(out)}")
    return out


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


def _port_taken(error: BaseException) -> bool:
    """Whether ``error`` (with the server's log tail in it) says a port was taken."""
    text = str(error).lower()
    return "address already in use" in text or "bindexception" in text


class ServiceProcess:
    """One server process, started and stopped as the module docstring says.

    ``name`` ("Kafka broker") is for log lines; the output goes to ``log_path``.
    """

    def __init__(self, name: str, log_path: pathlib.Path, *, detached: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self.detached = detached
        self.proc: subprocess.Popen | None = None
        self._program = "the process"
        self._atexit_registered = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> int | None:
        """The exit code once the process has exited; None while it runs or before launch."""
        return self.proc.poll() if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(
        self,
        start_once: Callable[[], None],
        error: type[Exception],
        *,
        deadline: float = math.inf,
        attempts: int = 3,
    ) -> None:
        """Call ``start_once`` (it picks ports, ``launch()``es and waits until the server is
        ready) until it returns. A failure is raised, the process killed first, unless it
        is an ``error`` saying a port was taken between picking and binding it: that is
        tried again, at most ``attempts`` times in all and not after ``deadline``."""
        for attempt in range(1, attempts + 1):
            try:
                start_once()
                return
            except BaseException as e:  # e.g. KeyboardInterrupt too: leave no half-started server
                self.kill_now()
                retry = isinstance(e, error) and _port_taken(e) and attempt < attempts
                if not retry or time.monotonic() >= deadline:
                    raise
                log.warning("%s lost a port race, retrying: %s", self.name, str(e).splitlines()[0])

    def launch(
        self, cmd: Sequence[str], header: str, *, cwd: pathlib.Path, env: Mapping[str, str] | None = None
    ) -> None:
        """Start ``cmd``, its output appended to the log after a ``### header`` line."""
        with open(self.log_path, "a") as logf:
            logf.write(f"### {header}\n")
            logf.flush()
            preexec = None
            if not self.detached and threading.current_thread() is threading.main_thread():
                # PDEATHSIG fires when the *thread* that forked the child exits, so
                # only use it from the main thread; atexit covers the rest.
                preexec = pdeathsig_preexec(os.getpid())
            self.proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self._program = pathlib.Path(cmd[0]).name
        if not self.detached and not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def failure(self, what: str) -> str:
        """Kill the process (if any); ``what`` went wrong, how the process exited if it
        did, and the last lines of its log: the text of the error to raise."""
        rc = self.poll()
        exit_note = f" ({self._program} exited with code {rc})" if rc is not None else ""
        self.kill_now()
        return f"{what}{exit_note}\n--- last lines of {self.log_path} ---\n{self.log_tail()}"

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the process group (a clean shutdown), SIGKILL it after ``timeout_s``.

        Idempotent; safe on a process that was never launched.
        """
        proc = self.proc
        if proc is not None and proc.poll() is None:
            killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s pid %d ignored SIGTERM for %.0f s; killing it", self.name, proc.pid, timeout_s)
        self.kill_now()

    def kill_now(self) -> None:
        """SIGKILL the process group if its leader still runs, and forget the process.

        Not once the leader has been reaped: its group id may be another's by then.
        """
        proc = self.proc
        if proc is not None and proc.poll() is None:
            killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.proc = None
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False


# --------------------------------------------------------------------------
# A detached server: `start --dir DIR` and `stop --dir DIR`
# --------------------------------------------------------------------------


def pid_alive(pid: int, marker: bytes) -> bool:
    """True if ``pid`` is a live (non-zombie) process with ``marker`` in its command line."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        if sys.platform.startswith("linux"):
            return False
        try:  # no /proc: trust the pid file
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    return marker in cmdline


@dataclass(frozen=True)
class PidFiles:
    """The files of a detached server in ``directory``: its pid, and the address its
    clients use. ``marker`` is in the server's command line (a pid reused by another
    process is not taken for the server); ``label`` ("broker") names it in messages."""

    directory: pathlib.Path
    pid_name: str
    address_name: str
    marker: bytes
    label: str

    def live_pid(self) -> int | None:
        try:
            pid = int((self.directory / self.pid_name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid, self.marker) else None


def cli_start(files: PidFiles, start: Callable[[], tuple[int, str]]) -> int:
    """Print the address of the server running in ``files.directory``, starting it with
    ``start()`` (its pid and address) unless it runs already; the exit status."""
    files.directory.mkdir(parents=True, exist_ok=True)
    address_file = files.directory / files.address_name
    pid = files.live_pid()
    if pid is not None and address_file.is_file():
        print(address_file.read_text().strip())
        print(f"(already running, pid {pid})", file=sys.stderr)
        return 0
    pid, address = start()
    (files.directory / files.pid_name).write_text(f"{pid}\n")
    address_file.write_text(address + "\n")
    print(address)
    return 0


def _wait_gone(pid: int, marker: bytes, timeout_s: float, interval_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return not pid_alive(pid, marker)


def cli_stop(files: PidFiles, timeout_s: float) -> int:
    """SIGTERM the server ``cli_start`` left in ``files.directory``, SIGKILL it after
    ``timeout_s``, and remove its files; the exit status."""
    pid = files.live_pid()
    if pid is not None:
        killpg(pid, signal.SIGTERM)
        if not _wait_gone(pid, files.marker, timeout_s, 0.2):
            print(f"{files.label} pid {pid} ignored SIGTERM for {timeout_s:.0f} s; killing it", file=sys.stderr)
            killpg(pid, signal.SIGKILL)
            _wait_gone(pid, files.marker, 10, 0.1)
    for name in (files.pid_name, files.address_name):
        with contextlib.suppress(FileNotFoundError):
            (files.directory / name).unlink()
    return 0
