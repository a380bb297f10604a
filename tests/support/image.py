"""Build the connector's container image without a Docker engine, for ``make image``.

These machines have no Docker engine and no container registry, so:

1. The base image is made locally: ``debootstrap`` writes a minimal Debian bookworm
   with python3, its venv module and the CA certificates (what the Dockerfile asks of
   ``BASE_IMAGE``), and buildah commits it. The result is saved as an OCI archive in
   ``~/.cache/userflux-connector/images/`` so later builds on this machine, from any
   clone, skip the few minutes debootstrap takes.
2. ``buildah bud`` builds the top-level Dockerfile on that base, as root, with the vfs
   storage driver and chroot isolation (no daemon, no user namespaces, no overlayfs).
   The builder stage downloads from PyPI, so the host's CA bundle is mounted read-only
   over the base's: downloads that pass through a TLS-inspecting proxy then verify.

buildah keeps its storage under ``~/.cache/userflux-connector/buildah/``, apart from
any other use of buildah on the machine.

    python -m tests.support.image build        # base if needed, then the image; prints its name
    python -m tests.support.image base         # only the base image
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from tests.support.connector_process import REPO

CACHE = pathlib.Path.home() / ".cache" / "userflux-connector"
STORAGE = CACHE / "buildah"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_ARCHIVE = CACHE / "images" / f"debian-{SUITE}-python3.oci.tar"
BASE_REF = f"localhost/userflux-connector-base:{SUITE}"
IMAGE_REF = "localhost/userflux-connector:test"
HOST_CA_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
# Everything in the base rootfs the runtime never reads (and apt's lists, which would
# make the image change with every mirror update).
BASE_PRUNE = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/*-old",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


class ImageError(Exception):
    """A step of the image build failed; the message says which and how."""


def buildah_command() -> list[str]:
    """buildah on this project's own storage."""
    if shutil.which("buildah") is None:
        raise ImageError("buildah is not installed (make image installs it with apt-get)")
    return ["buildah", "--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run"), "--storage-driver", "vfs"]


def buildah(*args: str, capture: bool = False) -> str:
    command = [*buildah_command(), *args]
    result = subprocess.run(command, stdout=subprocess.PIPE if capture else None, text=True)
    if result.returncode != 0:
        raise ImageError(f"buildah {args[0]} failed (exit {result.returncode}): {' '.join(command)}")
    return result.stdout.strip() if capture else ""


def has_image(ref: str) -> bool:
    command = [*buildah_command(), "inspect", "--type", "image", ref]
    return subprocess.run(command, capture_output=True).returncode == 0


def ensure_base() -> str:
    """The base image in buildah's storage: already there, from the cached archive, or
    debootstrapped now (and cached)."""
    if has_image(BASE_REF):
        return BASE_REF
    if BASE_ARCHIVE.exists():
        # An OCI archive carries no name: pull prints the image's ID, which gets the name.
        image_id = buildah("pull", "--quiet", f"oci-archive:{BASE_ARCHIVE}", capture=True).splitlines()[-1]
        buildah("tag", image_id, BASE_REF)
        return BASE_REF
    _debootstrap_base()
    return BASE_REF


def _debootstrap_base() -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (make image installs it with apt-get)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="userflux-base-") as tmp:
        rootfs = pathlib.Path(tmp) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR],
            "debootstrap",
        )
        for pattern in BASE_PRUNE:
            for path in rootfs.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        tarball = pathlib.Path(tmp) / "rootfs.tar"
        # /dev, /proc and /sys are provided by the runtime; their debootstrap contents
        # (device nodes) do not belong in an image.
        _run(
            [
                "tar",
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(rootfs),
                "-cf",
                str(tarball),
                ".",
            ],
            "tar",
        )
        container = buildah("from", "--quiet", "scratch", capture=True)
        try:
            buildah("add", "--quiet", container, str(tarball), "/", capture=True)
            buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                container,
            )
            buildah("commit", "--quiet", "--rm", container, BASE_REF, capture=True)
        except ImageError:
            buildah("rm", container)
            raise
    BASE_ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    partial = BASE_ARCHIVE.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", BASE_REF, f"oci-archive:{partial}")
    partial.rename(BASE_ARCHIVE)  # only a complete archive is ever found by a later build
    print(f"base image {BASE_REF} made in {time.monotonic() - started:.0f}s, cached as {BASE_ARCHIVE}", file=sys.stderr)


def build(ref: str = IMAGE_REF) -> str:
    """Build the Dockerfile on the local base; return the image's name."""
    base = ensure_base()
    version = project_version()
    revision = (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        or "unknown"
    )
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--pull-never",
        "--volume",
        f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"VERSION={version}",
        "--build-arg",
        f"REVISION={revision}",
        "--tag",
        ref,
        "--file",
        str(REPO / "Dockerfile"),
        str(REPO),
    )
    # vfs keeps a full copy per layer: drop what the new build left unreferenced.
    buildah("rmi", "--prune")
    return ref


def project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.image", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["base", "build"])
    args = parser.parse_args(argv)
    try:
        print(ensure_base() if args.what == "base" else build())
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
