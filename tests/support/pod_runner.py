"""Run a container the chart renders in the built image, as the kubelet and runc would.

There is no container engine and no Kubernetes here, so this does the runtime's part
with the kernel's own tools, as root: ``unshare`` gives the container a mount, PID and
UTS namespace of its own (the network is the host's: the pod's IP is 127.0.0.1, so it
reaches the test broker and stand-in on loopback), and in it:

- the image's root filesystem (a ``buildah from`` copy) is bind-mounted, read-only when
  the container's ``readOnlyRootFilesystem`` says so; mount points the volumes need are
  made in that copy first, as runc makes them;
- ``/proc`` is the namespace's own, ``/dev`` a tmpfs with the usual devices
  (null, zero, full, random, urandom, tty) and a ``/dev/shm`` tmpfs, ``/sys`` read-only;
- ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` are written as the kubelet
  writes them (the pod's name; ``hosts`` entries the test adds stand for cluster DNS);
- each volume mount of the plan (tests/support/pod_spec.py) is bind-mounted where the
  pod spec says: ConfigMap and Secret files read-only, an emptyDir writable;
- then ``python -m tests.support.pod_runner exec`` (PID 1 of the namespace) chroots,
  drops to the plan's UID, GID and groups, sets no_new_privs when
  ``allowPrivilegeEscalation`` is false, changes to the working directory and execs the
  command with exactly the plan's environment: the connector itself is PID 1.

``PodProcess`` signals that PID 1 (SIGTERM, as the kubelet does on deletion) and reads
its output; ``Prober`` probes it on the rendered timings, as the kubelet does.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from tests.support.connector_process import REPO, ProcessOutput
from tests.support.pod_spec import ContainerPlan, Mount, PodIdentity, Probe

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PR_SET_NO_NEW_PRIVS = 38


class PodError(RuntimeError):
    pass


def _mount_source(work: pathlib.Path, mount: Mount, index: int) -> pathlib.Path:
    """The host directory a volume mount shows: its files, or an empty writable one."""
    source = work / "volumes" / f"{index}-{mount.name}"
    source.mkdir(parents=True)
    if mount.writable:
        source.chmod(0o777)  # as the kubelet makes an emptyDir
    else:
        source.chmod(0o755)
        for relative, (content, mode) in (mount.files or {}).items():
            path = source / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode)
    return source / mount.sub_path if mount.sub_path else source


def kubelet_files(work: pathlib.Path, identity: PodIdentity, hosts: Mapping[str, str]) -> dict[str, pathlib.Path]:
    """/etc/hosts, /etc/hostname and /etc/resolv.conf as the kubelet writes them."""
    etc = work / "etc"
    etc.mkdir(parents=True)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{identity.pod_ip}\t{identity.name}",
        *(f"{ip}\t{name}" for name, ip in hosts.items()),
    ]
    files = {
        "/etc/hosts": "\n".join(lines) + "\n",
        "/etc/hostname": identity.name + "\n",
        "/etc/resolv.conf": (
            f"search {identity.namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "nameserver 127.0.0.1\noptions ndots:5\n"
        ),
    }
    paths = {}
    for target, text in files.items():
        path = etc / target.rsplit("/", 1)[1]
        path.write_text(text)
        path.chmod(0o644)
        paths[target] = path
    return paths


class PodProcess(ProcessOutput):
    """One container, started; its PID 1 and its output."""

    def __init__(
        self,
        plan: ContainerPlan,
        rootfs: pathlib.Path,
        work: pathlib.Path,
        identity: PodIdentity,
        hosts: Mapping[str, str] | None = None,
    ):
        self.plan, self.identity, self.work = plan, identity, work
        work.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = work / "stdout", work / "stderr"
        root = work / "root"
        root.mkdir()
        script = ["set -e", f"mount --bind {q(rootfs)} {q(root)}"]
        if plan.read_only_root:
            script.append(f"mount -o remount,bind,ro {q(root)}")
        script += [
            f"mount -t proc proc {q(root / 'proc')}",
            f"mount -t tmpfs -o nosuid,mode=755 tmpfs {q(root / 'dev')}",
            *(f"touch {q(root / 'dev' / d)} && mount --bind /dev/{d} {q(root / 'dev' / d)}" for d in DEVICES),
            f"mkdir {q(root / 'dev/shm')} && mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=64m shm "
            f"{q(root / 'dev/shm')}",
            f"ln -s /proc/self/fd {q(root / 'dev/fd')}",
            *(f"ln -s /proc/self/fd/{n} {q(root / 'dev' / s)}" for n, s in enumerate(("stdin", "stdout", "stderr"))),
            f"mount -t sysfs -o ro sysfs {q(root / 'sys')}",
        ]
        for target, path in kubelet_files(work, identity, hosts or {}).items():
            _ensure_mount_point(rootfs, target, is_dir=False)
            script.append(f"mount --bind {q(path)} {q(root / target.lstrip('/'))}")
        for index, mount in enumerate(plan.mounts):
            source = _mount_source(work, mount, index)
            _ensure_mount_point(rootfs, mount.path, is_dir=source.is_dir())
            target = root / mount.path.lstrip("/")
            if mount.memory:  # medium: Memory, a tmpfs as the kubelet makes it
                size = mount.memory.replace("Mi", "m").replace("Gi", "g").replace("Ki", "k")
                script.append(f"mount -t tmpfs -o size={size},mode=1777 tmpfs {q(target)}")
            else:
                script.append(f"mount --bind {q(source)} {q(target)}")
            if mount.read_only:
                script.append(f"mount -o remount,bind,ro {q(target)}")
        script.append(f"hostname {q(identity.name)}")
        spec = {
            "root": str(root),
            "uid": plan.uid,
            "gid": plan.gid,
            "groups": list(plan.groups),
            "cwd": plan.working_dir,
            "argv": plan.argv,
            "env": plan.env,
            "no_new_privileges": plan.no_new_privileges,
        }
        spec_path = work / "exec.json"
        spec_path.write_text(json.dumps(spec))
        script.append(f"exec {q(sys.executable)} -m tests.support.pod_runner exec {q(spec_path)}")
        self._out, self._err = self.stdout_path.open("wb"), self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--uts",
                "--fork",
                "sh",
                "-c",
                "\n".join(script),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            cwd=REPO,
            start_new_session=True,
        )
        self.started = time.monotonic()
        self.pid = self._pid_1()

    def _pid_1(self, timeout_s: float = 10) -> int:
        """The host PID of the namespace's PID 1 (unshare's forked child)."""
        deadline = time.monotonic() + timeout_s
        children = pathlib.Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PodError(f"the container did not start (exit {self.process.returncode}):\n{self.stderr}")
            with contextlib.suppress(FileNotFoundError):
                found = children.read_text().split()
                if found:
                    return int(found[0])
            time.sleep(0.02)
        raise PodError("the container's PID 1 did not appear")

    def status(self, timeout_s: float = 10) -> dict[str, str]:
        """/proc/<pid>/status of PID 1 once it runs as the plan's user (the launcher drops to
        it just before its exec, so what this reads holds for the command too)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = pathlib.Path(f"/proc/{self.pid}/status").read_text()
            status = {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}
            if status["Uid"].split()[0] == str(self.plan.uid):
                return status
            time.sleep(0.02)
        raise PodError(f"the container's command did not start as UID {self.plan.uid}:\n{self.stderr}")

    def terminate(self) -> float:
        """SIGTERM to PID 1, as the kubelet sends it; returns when it was sent (monotonic)."""
        os.kill(self.pid, signal.SIGTERM)
        return time.monotonic()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PodError(f"the container did not exit within {timeout_s:g} s:\n{self.stderr[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL, as the kubelet does once the grace period is over."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)
        self._out.close()
        self._err.close()


def _ensure_mount_point(rootfs: pathlib.Path, target: str, is_dir: bool) -> None:
    """Make the mount point in the container's copy of the image, as runc does."""
    path = rootfs / target.lstrip("/")
    if path.exists() or path.is_symlink():
        return
    if is_dir:
        path.mkdir(parents=True, mode=0o755)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(0o644)


def q(value: Any) -> str:
    return shlex.quote(str(value))


class Prober:
    """The kubelet's prober for one container: each probe from its initial delay on, every
    period, with its timeout. Records every result; ``failures`` counts the consecutive
    ones, as the kubelet does against ``failureThreshold``."""

    def __init__(self, probes: Mapping[str, Probe], host: str = "127.0.0.1"):
        self.probes, self.host = dict(probes), host
        self.results: list[tuple[float, str, int | str]] = []
        self.failures = dict.fromkeys(self.probes, 0)
        self.most_failures = dict.fromkeys(self.probes, 0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(probe,), name=f"probe-{kind}", daemon=True)
            for kind, probe in self.probes.items()
        ]
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def get(self, probe: Probe) -> int | str:
        url = f"{probe.scheme.lower()}://{self.host}:{probe.port}{probe.path}"
        try:
            with urllib.request.urlopen(url, timeout=probe.timeout_s) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            return type(exc).__name__

    def _run(self, probe: Probe) -> None:
        if self._stop.wait(probe.initial_delay_s):
            return
        while True:
            result = self.get(probe)
            ok = isinstance(result, int) and 200 <= result < 400  # the kubelet's success
            self.results.append((time.monotonic() - self.started, probe.kind, result))
            self.failures[probe.kind] = 0 if ok else self.failures[probe.kind] + 1
            self.most_failures[probe.kind] = max(self.most_failures[probe.kind], self.failures[probe.kind])
            if self._stop.wait(probe.period_s):
                return

    def of(self, kind: str) -> list[int | str]:
        return [result for _, k, result in self.results if k == kind]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def _exec(spec_path: str) -> None:
    """PID 1's last step before the command: chroot, drop privileges, exec."""
    spec = json.loads(pathlib.Path(spec_path).read_text())
    os.chroot(spec["root"])
    os.chdir(spec["cwd"])
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])  # from root to another user: every capability goes
    if spec["no_new_privileges"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "exec":
        _exec(sys.argv[2])
    else:
        sys.exit("usage: python -m tests.support.pod_runner exec SPEC.json (run by PodProcess)")
