"""The pod runs locked down in every scenario: non-root, read-only root filesystem, no
privilege escalation, no capabilities, RuntimeDefault seccomp, no API token."""

from __future__ import annotations

import pytest

from tests.support.helm import SCENARIOS, one, render

IMAGE_UID = 10001  # the Dockerfile's USER


@pytest.mark.parametrize("scenario, kind", [*((s, "Deployment") for s in SCENARIOS), ("replay", "Job")])
def test_the_pod_and_container_are_locked_down(scenario, kind):
    pod = one(render([SCENARIOS[scenario]]), kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(mount.get("readOnly") for mount in container["volumeMounts"] if mount["name"] != "tmp")


def test_the_image_s_user_is_the_chart_s():
    dockerfile = (SCENARIOS["default"].parents[3] / "Dockerfile").read_text()
    assert f"ARG UID={IMAGE_UID}" in dockerfile and "USER ${UID}:${UID}" in dockerfile
