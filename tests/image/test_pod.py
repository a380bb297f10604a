"""The chart's pod, run as the kubelet would run it, in the built image (make image-test).

For the default values and each ci/ scenario whose pod differs, the chart is rendered
and the Deployment's container is started as the kubelet and runc would start it
(tests/support/pod_spec.py works out the command, environment, user and files from the
rendered objects; tests/support/pod_runner.py runs it in the image's root filesystem, in
namespaces of its own, PID 1, read-only root): its args as rendered, as the rendered
UID, GID and groups, the rendered ConfigMap mounted read-only where the pod spec says,
the variables from the rendered Secret (or, for existingSecret, from a Secret this test
provides) and from fieldRef. Against the test broker (the SASL_SSL one for the SASL
scenarios) and the UserFlux stand-in it must: answer the rendered liveness and readiness
probes (path, port by name, on their timings) while it delivers; pass `helm test` (the
rendered hook pod, in the same image) while it runs and fail it once it has stopped;
and on SIGTERM exit 0 well within the rendered terminationGracePeriodSeconds, every
event delivered and every offset committed.

What the test changes in each scenario's values, and why: the Kafka address and group,
the UserFlux address, the topics (the test's own), the metrics port (a free one: the
pods share the host's loopback); for the keda and replay scenarios, the broker's security
(SASL_SSL with SCRAM-SHA-512 and the test CA, which the test broker speaks, in place of
their SASL_PLAINTEXT, or no protocol at all) while their credentials still come through the
chart's own Secret; for the schema-registry scenario, the session's real registry as
schemaRegistry.url and a JSON topic (what is run is the pod around the registry: its
credentials' Secret and its in-memory /tmp); for the destinations scenario, a Secret with
the second project's key (the test's topic goes to the first project).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import threading
import time
from typing import Any

import pytest
import yaml

from tests.conftest import SASL_PASSWORD
from tests.support import image
from tests.support.connector_process import free_port
from tests.support.helm import NAMESPACE, SCENARIOS, find, one, render
from tests.support.kafka_tools import committed, end_offsets, new_topic, produce, read_all, unique, wait_until
from tests.support.pod_runner import PodProcess, Prober
from tests.support.pod_spec import ContainerPlan, PodIdentity, container_plan, pod_template
from tests.support.userflux_standin import UserFluxStandIn

pytestmark = [pytest.mark.image, pytest.mark.kafka]

API_KEY = "ci-write-key"  # what ci/*-values.yaml set as apiKey.value (or the test's Secret holds)
MOBILE_KEY = "ci-mobile-write-key"  # the destinations scenario's second project
POD_NAME = "uf-userflux-connector-7c9d5b8f6-k2x4p"
PARTITIONS = 2
BEFORE, DURING = 40, 60  # events produced before the pod starts, and while it runs
# The scenarios whose pod is the default's: they change only what is around it.
SAME_POD_AS_DEFAULT = ("monitoring", "podmonitor")
RUN = [s for s in SCENARIOS if s not in SAME_POD_AS_DEFAULT]
# The scenarios whose SASL credentials are the chart's own Secret (kafkaSasl.username and
# password): run against the SASL_SSL broker, with its security in place of theirs.
CHART_SASL = ("keda", "replay")


def secret(name: str, data: dict[str, str | bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="module")
def image_config() -> dict[str, Any]:
    assert image.has_image(image.IMAGE_REF), f"{image.IMAGE_REF} is not built: run `make image-test`"
    return json.loads(image.buildah("inspect", "--type", "image", image.IMAGE_REF, capture=True))["OCIv1"]["config"]


@pytest.fixture
def rootfs():
    """A fresh copy of the image's root filesystem (a buildah container), as a runtime makes one per container."""
    name = image.buildah("from", "--quiet", "--pull-never", image.IMAGE_REF, capture=True)
    try:
        yield pathlib.Path(image.buildah("mount", name, capture=True))
    finally:
        image.buildah("umount", name, capture=True)
        image.buildah("rm", name, capture=True)


@pytest.fixture(scope="module")
def userflux():
    with UserFluxStandIn(api_key=API_KEY) as server:
        yield server


class Run:
    """One scenario's pod: its values, the rendered objects, the Secrets the test provides."""

    def __init__(self, scenario: str, kafka_bootstrap: str, request: pytest.FixtureRequest, userflux: UserFluxStandIn):
        self.scenario = scenario
        sasl = scenario in ("sasl", *CHART_SASL)
        if sasl:
            broker, certs = request.getfixturevalue("sasl_broker"), request.getfixturevalue("certs")
            self.setup_bootstrap, bootstrap = broker.bootstrap_servers, broker.sasl_bootstrap_servers
        else:
            self.setup_bootstrap = bootstrap = kafka_bootstrap
        self.topic = new_topic(self.setup_bootstrap, f"pod-{scenario}", partitions=PARTITIONS)
        self.dlq = new_topic(self.setup_bootstrap, f"pod-{scenario}-dlq")
        self.group = unique(f"pod-{scenario}")
        self.port = free_port()
        sets: dict[str, Any] = {
            "config.kafka.bootstrap\\.servers": bootstrap,
            "config.kafka.group\\.id": self.group,
            "config.userflux.base_url": userflux.base_url,
            "config.metrics.port": self.port,
            "config.dead_letter.topic": self.dlq,
            "config.mappings": [
                {"topics": [self.topic], "event": {"name": "event", "userId": "user_id", "properties": "properties"}}
            ],
        }
        self.provided: list[dict[str, Any]] = []
        self.keys = {yaml_value(SCENARIOS[scenario], "apiKey", "value") or API_KEY}  # what UserFlux accepts
        if scenario == "existing-secret":
            self.provided.append(secret("userflux-credentials", {"write-key": API_KEY}))
        if scenario == "sasl":
            self.provided.append(
                secret(
                    "kafka-credentials",
                    {"username": "connector", "password": SASL_PASSWORD, "ssl-key-password": "unused"},
                )
            )
        if sasl:
            self.provided.append(secret("kafka-ca", {"ca.crt": certs.ca.read_bytes()}))
        if scenario == "schema-registry":
            # The test's topic is JSON (the mapping says so over the scenario's value_format):
            # what is run is the pod around the registry, its Secret and its /tmp; the
            # registry is the session's real one, so whatever the connector asks of it answers.
            sets["schemaRegistry.url"] = request.getfixturevalue("schema_registry").url
            sets["config.mappings"][0]["value_format"] = "json"
            self.provided.append(secret("schema-registry-credentials", {"username": "reader", "password": "unused"}))
        if scenario == "destinations":
            # Both projects' keys reach the pod (the top-level one from the chart's Secret, the
            # mobile one from a Secret the test provides); the test's topic goes to the first.
            self.provided.append(secret("userflux-mobile", {"write-key": MOBILE_KEY}))
            self.keys.add(MOBILE_KEY)
        if scenario in CHART_SASL:
            sets |= {
                "config.kafka.security\\.protocol": "SASL_SSL",
                "config.kafka.sasl\\.mechanism": "SCRAM-SHA-512",
                "config.kafka.ssl\\.ca\\.location": "/etc/kafka/tls/ca.crt",
                "kafkaTls.existingSecret": "kafka-ca",
                "kafkaSasl.password": SASL_PASSWORD,
            }
        self.manifests = render([SCENARIOS[scenario]], sets)
        self.deployment = one(self.manifests, "Deployment")
        self.identity = PodIdentity(name=POD_NAME, namespace=NAMESPACE)

    def plan(self, image_config: dict[str, Any]) -> ContainerPlan:
        return container_plan(self.deployment, self.manifests + self.provided, self.identity, image_config)

    def hook(self, image_config: dict[str, Any]) -> tuple[ContainerPlan, dict[str, str]]:
        """The `helm test` pod's container, and the cluster DNS it relies on (the Service's name)."""
        (pod,) = [m for m in find(self.manifests, "Pod") if m["metadata"]["annotations"]["helm.sh/hook"] == "test"]
        service = one(self.manifests, "Service")
        (port,) = service["spec"]["ports"]
        # The Service forwards its port to the pod's named port: the same number here, so
        # loopback stands in for the Service's virtual IP without a proxy.
        assert self.plan(image_config).ports[port["targetPort"]] == port["port"]
        identity = PodIdentity(name=pod["metadata"]["name"], namespace=NAMESPACE)
        return container_plan(pod, self.manifests, identity, image_config), {service["metadata"]["name"]: "127.0.0.1"}


def yaml_value(path: pathlib.Path, *keys: str) -> Any:
    found: Any = yaml.safe_load(path.read_text())
    for key in keys:
        found = (found or {}).get(key)
    return found


def events(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {"event": "page_view", "user_id": f"{prefix}-{i}", "properties": {"uid": f"{prefix}-{i}"}} for i in range(n)
    ]


def test_the_scenarios_left_out_render_the_default_s_pod():
    def pod(scenario: str) -> Any:
        return pod_template(one(render([SCENARIOS[scenario]]), "Deployment"))

    for scenario in SAME_POD_AS_DEFAULT:
        assert pod(scenario) == pod("default"), f"{scenario} renders its own pod: run it in test_the_pod_runs..."


def run_check(plan: ContainerPlan, rootfs: pathlib.Path, work: pathlib.Path, identity: PodIdentity) -> dict[str, str]:
    """`kubectl exec`, in effect: a shell in the container's filesystem, user and mounts,
    trying to write everywhere that matters. Returns path -> "writable" or the error."""
    paths = ["/", "/tmp", "/etc", "/opt/userflux-connector", "/dev/shm"] + [m.path for m in plan.mounts]
    script = (
        "import json, os, sys\n"
        "found = {}\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        probe = os.path.join(path, '.write-probe')\n"
        "        open(probe, 'w').close(); os.unlink(probe); found[path] = 'writable'\n"
        "    except OSError as exc:\n"
        "        found[path] = exc.strerror\n"
        "print(json.dumps(found))\n"
    )
    check = dataclasses.replace(plan, argv=["python3", "-c", script, *paths])
    process = PodProcess(check, rootfs, work, identity)
    try:
        assert process.wait(30) == 0, process.stderr
        return json.loads(process.stdout)
    finally:
        process.kill()


@pytest.mark.parametrize("scenario", RUN)
def test_the_pod_runs_as_the_kubelet_would_run_it(
    scenario, kafka_bootstrap, request, userflux, image_config, rootfs, tmp_path
):
    run = Run(scenario, kafka_bootstrap, request, userflux)
    plan = run.plan(image_config)
    container = pod_template(run.deployment)["spec"]["containers"][0]
    # What the pod spec says, as the kubelet reads it.
    assert plan.argv == [*image_config["Entrypoint"], *container["args"]] and "command" not in container
    assert plan.argv[1:3] == ["run", "--config"]
    assert (plan.uid, plan.gid, plan.read_only_root, plan.no_new_privileges) == (10001, 10001, True, True)
    config_mount = next(m for m in plan.mounts if m.name == "config")
    assert config_mount.read_only and f"{config_mount.path}/config.yaml" == plan.argv[3]
    assert plan.env["USERFLUX_API_KEY"] in run.keys and plan.env["POD_NAME"] == POD_NAME
    if scenario == "destinations":
        assert plan.env["USERFLUX_API_KEY_MOBILE"] == MOBILE_KEY
    if scenario in ("sasl", *CHART_SASL):
        assert (plan.env["KAFKA_SASL_USERNAME"], plan.env["KAFKA_SASL_PASSWORD"]) == ("connector", SASL_PASSWORD)

    writable = run_check(plan, rootfs, tmp_path / "check", run.identity)
    expected = {path: "Read-only file system" for path in writable}
    expected["/dev/shm"] = "writable"
    for mount in plan.mounts:
        expected[mount.path] = "Read-only file system" if mount.read_only else "writable"
    assert writable == expected

    userflux.reset()
    for key in run.keys - {userflux.api_key}:
        userflux.add_key(key)
    produce(run.setup_bootstrap, run.topic, events("before", BEFORE), key=lambda i: str(i).encode())
    produce(run.setup_bootstrap, run.topic, [b"{not json"])
    pod = PodProcess(plan, rootfs, tmp_path / "pod", run.identity)
    prober = Prober(plan.probes)
    try:
        status = pod.status()
        assert status["NSpid"].split()[-1] == "1", status["NSpid"]  # PID 1 of its namespace
        assert status["Uid"].split()[0] == "10001" and status["Gid"].split()[0] == "10001"
        assert "10001" in status["Groups"].split()  # fsGroup
        assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0

        # Events keep coming while the kubelet probes: both probes answer as delivery goes on.
        producing = threading.Thread(
            target=lambda: [
                (produce(run.setup_bootstrap, run.topic, events(f"during-{s}", DURING // 12)), time.sleep(1))
                for s in range(12)
            ],
            daemon=True,
        )
        producing.start()
        first = max(p.initial_delay_s for p in plan.probes.values())
        wait_until(
            lambda: prober.of("liveness") and 200 in prober.of("readiness"),
            first + 20,
            "a liveness answer and a ready readiness answer",
        )
        producing.join(30)
        userflux.wait_for_events(BEFORE + DURING, timeout_s=60)
        assert set(prober.of("liveness")) == {200}, prober.results
        assert prober.most_failures["liveness"] < plan.probes["liveness"].failure_threshold
        assert prober.of("readiness")[-1] == 200, prober.results

        hook, hosts = run.hook(image_config)
        passed = PodProcess(hook, rootfs, tmp_path / "helm-test", PodIdentity(hook.name, NAMESPACE), hosts)
        assert passed.wait(30) == 0, passed.stderr
        assert "/readyz 200" in passed.stdout and '"ready"' in passed.stdout
        passed.kill()

        sent = pod.terminate()
        code = pod.wait(plan.termination_grace_s)
        took = time.monotonic() - sent
    finally:
        prober.stop()
        pod.kill()
    err = pod.stderr
    assert code == 0, err[-3000:]
    assert took < plan.termination_grace_s / 2, f"{took:.1f} s of a {plan.termination_grace_s} s grace"
    assert "Read-only file system" not in err and "Permission denied" not in err, err[-3000:]
    # Delivered and committed, all of it; the invalid message in the dead-letter topic.
    accepted = {e["userId"] for e in userflux.events()}
    assert {e["user_id"] for e in events("before", BEFORE)} <= accepted
    assert len(accepted) == BEFORE + DURING
    assert committed(run.setup_bootstrap, run.group, run.topic, PARTITIONS) == end_offsets(
        run.setup_bootstrap, run.topic, PARTITIONS
    )
    assert len(read_all(run.setup_bootstrap, run.dlq, 1, timeout_s=30)) == 1

    # helm test fails once no replica is ready.
    hook, hosts = run.hook(image_config)
    failed = PodProcess(hook, rootfs, tmp_path / "helm-test-after", PodIdentity(hook.name, NAMESPACE), hosts)
    assert failed.wait(30) != 0 and "/readyz" in failed.stderr
    failed.kill()
    print(f"{scenario}: stopped {took:.1f} s after SIGTERM; probes {prober.results}")
