"""What the kubelet makes of a rendered pod: the process, its environment, its files.

No Kubernetes runs in the tests. This module reads a Deployment (or a Pod) the chart
rendered, with the ConfigMaps and Secrets it refers to, and works out what the kubelet
and the container runtime would give its container, following the Kubernetes API's
rules (the field docs of ``core/v1`` ``Container``, ``EnvVar``, ``Volume`` and
``SecurityContext``):

- **the command**: ``command`` replaces the image's ENTRYPOINT and ``args`` its CMD; with
  ``command`` and no ``args`` the image's CMD is dropped; ``$(VAR)`` in either is replaced
  by the container's variable (``$$`` escapes it, an unknown one stays as written);
- **the environment**: the image's, then ``envFrom`` (in order, with ``prefix``), then
  ``env`` (in order; ``$(VAR)`` in a ``value`` refers to variables defined before it).
  ``valueFrom`` reads a Secret's or ConfigMap's key (``optional`` allows it to be missing),
  a ``fieldRef`` (``metadata.name``, ``metadata.namespace``, ``metadata.uid``,
  ``metadata.labels['k']``, ``metadata.annotations['k']``, ``spec.nodeName``,
  ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``) or a
  ``resourceFieldRef`` (``limits.*`` / ``requests.*``, in the divisor's unit);
- **the user**: the container's ``securityContext`` over the pod's (``runAsUser``,
  ``runAsGroup``), else the image's USER; ``fsGroup`` and ``supplementalGroups`` are
  supplementary groups; ``runAsNonRoot`` refuses UID 0 as the kubelet does;
- **the files**: every ``volumeMount`` of the container with what its volume holds: a
  ConfigMap's or Secret's keys as files (``items`` pick and rename them, ``defaultMode``
  and an item's ``mode`` set the mode, always mounted read-only), an ``emptyDir`` (an
  empty writable directory, a tmpfs with ``medium: Memory``); ``subPath`` mounts one entry;
  ``readOnly`` a read-only mount.
  Other volume types are refused (the chart renders none).
- **the probes**: an ``httpGet`` probe's port by name is the container port of that name.

Left out: the service-link variables (``<SERVICE>_SERVICE_HOST`` and the like) that
``enableServiceLinks`` adds, and the ServiceAccount token volume (the chart turns it off).

Secrets the chart does not render (``existingSecret``) are given by the test, as
``extra`` manifests.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Kubernetes' $(VAR) reference; $$ escapes it (k8s.io/kubernetes third_party/forked/golang/expansion).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_INDEX = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class PodSpecError(ValueError):
    """The rendered pod asks for something the kubelet would refuse (a missing Secret key,
    a root user with runAsNonRoot), or that this module does not implement."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables replaced, ``$$`` becomes ``$``,
    anything else left as written."""

    def replace(match: re.Match) -> str:
        if match.group() == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group()

    return _REFERENCE.sub(replace, text)


@dataclasses.dataclass(frozen=True)
class PodIdentity:
    """What the API server and the scheduler would have filled in for the pod."""

    name: str
    namespace: str
    uid: str = "6f1d2c3b-8e9a-4b5c-9d7e-0a1b2c3d4e5f"
    node_name: str = "node-1"
    pod_ip: str = "127.0.0.1"
    host_ip: str = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Mount:
    """One volume mount: ``files`` (relative path -> (content, mode)) for a ConfigMap or
    Secret, or ``writable`` for an emptyDir; ``sub_path`` mounts one entry of it."""

    name: str
    path: str
    read_only: bool
    files: Mapping[str, tuple[bytes, int]] | None = None
    writable: bool = False
    sub_path: str = ""
    memory: str = ""  # an emptyDir with medium: Memory, a tmpfs of this size ("" otherwise)


@dataclasses.dataclass(frozen=True)
class Probe:
    kind: str  # liveness, readiness, startup
    path: str
    port: int
    scheme: str
    initial_delay_s: int
    period_s: int
    timeout_s: int
    failure_threshold: int
    success_threshold: int


@dataclasses.dataclass(frozen=True)
class ContainerPlan:
    """A container as the kubelet would start it."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: tuple[int, ...]
    working_dir: str
    read_only_root: bool
    no_new_privileges: bool
    mounts: list[Mount]
    ports: dict[str, int]
    probes: dict[str, Probe]
    termination_grace_s: int


def _data(manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's or ConfigMap's keys and their bytes."""
    found: dict[str, bytes] = {}
    if manifest["kind"] == "Secret":
        for key, value in (manifest.get("data") or {}).items():
            found[key] = base64.b64decode(value)
        for key, value in (manifest.get("stringData") or {}).items():
            found[key] = str(value).encode()
    else:
        for key, value in (manifest.get("data") or {}).items():
            found[key] = str(value).encode()
        for key, value in (manifest.get("binaryData") or {}).items():
            found[key] = base64.b64decode(value)
    return found


class Objects:
    """The ConfigMaps and Secrets of one namespace, by kind and name."""

    def __init__(self, manifests: Iterable[Mapping[str, Any]], namespace: str):
        self.namespace = namespace
        self.by_name: dict[tuple[str, str], Mapping[str, Any]] = {}
        for manifest in manifests:
            if manifest.get("kind") in ("Secret", "ConfigMap"):
                if manifest["metadata"].get("namespace", namespace) == namespace:
                    self.by_name[(manifest["kind"], manifest["metadata"]["name"])] = manifest

    def data(self, kind: str, name: str, optional: bool = False) -> dict[str, bytes] | None:
        manifest = self.by_name.get((kind, name))
        if manifest is None:
            if optional:
                return None
            raise PodSpecError(f"{kind} {self.namespace}/{name} not found: the pod would not start")
        return _data(manifest)

    def key(self, kind: str, name: str, key: str, optional: bool = False) -> str | None:
        data = self.data(kind, name, optional)
        if data is None or key not in data:
            if optional:
                return None
            raise PodSpecError(f"{kind} {self.namespace}/{name} has no key {key!r}: the pod would not start")
        return data[key].decode()


def _quantity(text: str) -> float:
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "m": 10**-3,
        "": 1,
    }
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m|)", str(text))
    if not match:
        raise PodSpecError(f"not a quantity: {text!r}")
    return float(match.group(1)) * units[match.group(2)]


def _field(ref: Mapping[str, Any], pod: Mapping[str, Any], identity: PodIdentity, service_account: str) -> str:
    path = ref["fieldPath"]
    simple = {
        "metadata.name": identity.name,
        "metadata.namespace": identity.namespace,
        "metadata.uid": identity.uid,
        "spec.nodeName": identity.node_name,
        "spec.serviceAccountName": service_account,
        "status.podIP": identity.pod_ip,
        "status.hostIP": identity.host_ip,
    }
    if path in simple:
        return simple[path]
    match = _FIELD_INDEX.fullmatch(path)
    if match:
        return str((pod["metadata"].get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodSpecError(f"fieldRef {path!r} is not implemented here")


def _resource(ref: Mapping[str, Any], containers: Mapping[str, Mapping[str, Any]], default: str) -> str:
    container = containers[ref.get("containerName") or default]
    kind, _, name = ref["resource"].partition(".")
    value = (container.get("resources") or {}).get(kind, {}).get(name)
    if value is None:
        raise PodSpecError(f"resourceFieldRef {ref['resource']}: not set (the node's allocatable is not known here)")
    divisor = _quantity(ref.get("divisor", "1"))
    result = _quantity(value) / divisor
    return str(int(-(-result // 1)))  # rounded up, as the kubelet does


def container_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    objects: Objects,
    identity: PodIdentity,
    image_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment, as the kubelet builds it (see the module docstring)."""
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    env: dict[str, str] = dict(image_env or {})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source:
                ref = source[field]
                data = objects.data(kind, ref["name"], bool(ref.get("optional")))
                for key, value in (data or {}).items():
                    env[prefix + key] = value.decode()
    service_account = spec.get("serviceAccountName") or "default"
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = objects.key("Secret", ref["name"], ref["key"], bool(ref.get("optional")))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = objects.key("ConfigMap", ref["name"], ref["key"], bool(ref.get("optional")))
        elif "fieldRef" in source:
            value = _field(source["fieldRef"], pod, identity, service_account)
        elif "resourceFieldRef" in source:
            value = _resource(source["resourceFieldRef"], containers, container["name"])
        else:
            raise PodSpecError(f"env {name}: valueFrom {sorted(source)} is not implemented here")
        if value is not None:
            env[name] = value
    return env


def _volume_mount(mount: Mapping[str, Any], volumes: Mapping[str, Mapping[str, Any]], objects: Objects) -> Mount:
    volume = volumes.get(mount["name"])
    if volume is None:
        raise PodSpecError(f"volumeMount {mount['name']!r} has no volume of that name")
    read_only = bool(mount.get("readOnly"))
    sub_path = mount.get("subPath", "")
    for kind, field, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
        if field not in volume:
            continue
        source = volume[field]
        data = objects.data(kind, source[name_key], bool(source.get("optional"))) or {}
        default_mode = int(source.get("defaultMode", 0o644))
        files: dict[str, tuple[bytes, int]] = {}
        if source.get("items"):
            for item in source["items"]:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    raise PodSpecError(f"volume {mount['name']}: {kind} {source[name_key]} has no key {item['key']!r}")
                files[item["path"]] = (data[item["key"]], int(item.get("mode", default_mode)))
        else:
            files = {key: (value, default_mode) for key, value in data.items()}
        # ConfigMap and Secret volumes are always read-only (since Kubernetes 1.10).
        return Mount(mount["name"], mount["mountPath"], True, files=files, sub_path=sub_path)
    if "emptyDir" in volume:
        empty = volume["emptyDir"] or {}
        memory = str(empty.get("sizeLimit", "64Mi")) if empty.get("medium") == "Memory" else ""
        return Mount(mount["name"], mount["mountPath"], read_only, writable=True, sub_path=sub_path, memory=memory)
    raise PodSpecError(f"volume {mount['name']}: {sorted(volume)} is not implemented here")


def _probe(kind: str, probe: Mapping[str, Any], ports: Mapping[str, int]) -> Probe:
    if "httpGet" not in probe:
        raise PodSpecError(f"{kind} probe: only httpGet is implemented here")
    get = probe["httpGet"]
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        if port not in ports:
            raise PodSpecError(f"{kind} probe: the container has no port named {port!r}")
        port = ports[port]
    return Probe(
        kind=kind,
        path=get.get("path", "/"),
        port=int(port),
        scheme=get.get("scheme", "HTTP"),
        initial_delay_s=int(probe.get("initialDelaySeconds", 0)),
        period_s=int(probe.get("periodSeconds", 10)),
        timeout_s=int(probe.get("timeoutSeconds", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
        success_threshold=int(probe.get("successThreshold", 1)),
    )


def pod_template(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod of a Deployment (its template), or a Pod itself."""
    if manifest["kind"] == "Pod":
        return manifest
    if manifest["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return manifest["spec"]["template"]
    raise PodSpecError(f"not a pod or a workload: {manifest['kind']}")


def container_plan(
    workload: Mapping[str, Any],
    manifests: Iterable[Mapping[str, Any]],
    identity: PodIdentity,
    image_config: Mapping[str, Any],
    container_name: str | None = None,
) -> ContainerPlan:
    """What the kubelet starts for one container of the workload.

    ``image_config`` is the OCI image configuration (``Entrypoint``, ``Cmd``, ``Env``,
    ``User``, ``WorkingDir``), as ``buildah inspect`` reports it under ``OCIv1.config``.
    """
    pod = pod_template(workload)
    spec = pod["spec"]
    containers = spec["containers"]
    container = next((c for c in containers if c["name"] == container_name), None) if container_name else containers[0]
    if container is None:
        raise PodSpecError(f"no container {container_name!r}")
    objects = Objects(manifests, identity.namespace)
    image_env = dict(item.split("=", 1) for item in image_config.get("Env") or [])
    image_env["HOSTNAME"] = identity.name  # the runtime sets it, from the pod's hostname
    env = container_env(container, pod, objects, identity, image_env)

    entrypoint, cmd = list(image_config.get("Entrypoint") or []), list(image_config.get("Cmd") or [])
    if "command" in container:
        argv = [*container["command"], *container.get("args", [])]
    elif "args" in container:
        argv = [*entrypoint, *container["args"]]
    else:
        argv = [*entrypoint, *cmd]
    argv = [expand(str(a), env) for a in argv]
    if not argv:
        raise PodSpecError("nothing to run: no command and no image entrypoint")

    pod_context, context = spec.get("securityContext") or {}, container.get("securityContext") or {}
    image_user = str(image_config.get("User") or "0")
    image_uid, _, image_gid = image_user.partition(":")
    if not image_uid.isdigit() or (image_gid and not image_gid.isdigit()):
        raise PodSpecError(f"image USER {image_user!r}: a user name is not resolved here")
    uid = int(context.get("runAsUser", pod_context.get("runAsUser", image_uid)))
    gid = int(context.get("runAsGroup", pod_context.get("runAsGroup", image_gid or 0)))
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) and uid == 0:
        raise PodSpecError("runAsNonRoot and the user is root: the kubelet refuses to start the container")
    groups = [gid]
    if "fsGroup" in pod_context:
        groups.append(int(pod_context["fsGroup"]))
    groups += [int(g) for g in pod_context.get("supplementalGroups") or []]

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = [_volume_mount(m, volumes, objects) for m in container.get("volumeMounts") or []]
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
    probes = {
        kind: _probe(kind, container[f"{kind}Probe"], ports)
        for kind in ("startup", "liveness", "readiness")
        if f"{kind}Probe" in container
    }
    return ContainerPlan(
        name=container["name"],
        image=container["image"],
        argv=argv,
        env=env,
        uid=uid,
        gid=gid,
        groups=tuple(dict.fromkeys(groups)),
        working_dir=container.get("workingDir") or image_config.get("WorkingDir") or "/",
        read_only_root=bool(context.get("readOnlyRootFilesystem")),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
        mounts=mounts,
        ports=ports,
        probes=probes,
        termination_grace_s=int(spec.get("terminationGracePeriodSeconds", 30)),
    )
