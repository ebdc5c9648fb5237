"""Kubernetes Deployment and ConfigMap documents, read unmodified, as VNFs to run.

What is honoured: `replicas`, the pod template's labels (the selector must match them, as the
API server insists), one container per pod with its `image`, `securityContext.capabilities.add`,
`env` (literal values and `valueFrom.configMapKeyRef`), and `resources` requests and limits
(memory and cpu quantities). Fields that make no sense here (ports, probes, volumes...) are
named in a warning, not silently dropped. Shapes are checked against vnf/schemas.py first; every
problem is a ConfigError with file, line and field.

>>> memory_bytes("512Mi"), cpu_cores("500m"), cpu_cores("2")
(536870912, 0.5, 2.0)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from controller.config import Document, load_documents
from vnf.schemas import CONFIGMAP, DEPLOYMENT

LOG = logging.getLogger("osken_suite.vnf")
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# What Docker refuses at `docker run` (daemon/daemon_unix.go, verifyPlatformContainerResources):
# said here, where the file and line are known, not when a replica fails to start.
DOCKER_MIN_MEMORY = 6 * 2**20  # bytes, for --memory and --memory-reservation
DOCKER_MIN_CPUS = 0.01  # --cpus
_CONTAINER_USED = {"name", "image", "securityContext", "env", "resources", "imagePullPolicy"}


def memory_bytes(text) -> int:
    m = _QUANTITY.match(str(text))
    if not m or m.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"{text!r} is not a memory quantity (e.g. 512Mi, 1G)")
    return math.ceil(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])  # as Quantity.Value()


def cpu_cores(text) -> float:
    m = _QUANTITY.match(str(text))
    if not m or m.group(2) not in ("", "m"):
        raise ValueError(f"{text!r} is not a cpu quantity (e.g. 500m, 0.5, 2)")
    return float(m.group(1)) / (1000 if m.group(2) == "m" else 1)


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    capabilities: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # literal values
    env_from: tuple[tuple[str, str, str], ...] = ()  # (variable, configmap, key)
    memory_limit: int | None = None
    cpu_limit: float | None = None
    memory_request: int | None = None
    cpu_request: float | None = None


@dataclass(frozen=True)
class Deployment:
    name: str
    namespace: str
    replicas: int
    labels: tuple[tuple[str, str], ...]
    container: Container
    path: str


@dataclass
class Manifest:
    deployments: list[Deployment] = field(default_factory=list)
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)


def _quantity(doc: Document, resources: dict, where: tuple, part: str, what: str, parse):
    value = (resources.get(part) or {}).get(what)
    if value is None:
        return None
    try:
        amount = parse(value)
    except ValueError as exc:
        raise doc.error(where + (part, what), str(exc)) from None
    least = DOCKER_MIN_MEMORY if what == "memory" else DOCKER_MIN_CPUS if part == "limits" else 0
    if amount < least:
        raise doc.error(
            where + (part, what), f"{value!r} is below Docker's least {what} {part[:-1]} here"
        )
    return amount


def _within_limits(doc: Document, c: Container, where: tuple) -> Container:
    """A request above its limit is refused, as the API server refuses it."""
    for what, request, limit in (
        ("memory", c.memory_request, c.memory_limit),
        ("cpu", c.cpu_request, c.cpu_limit),
    ):
        if request is not None and limit is not None and request > limit:
            raise doc.error(where + ("requests", what), f"more than the {what} limit")
    return c


def _container(doc: Document, spec: dict, where: tuple) -> Container:
    for key in sorted(set(spec) - _CONTAINER_USED):
        LOG.warning(
            "%s: %s.%s is not used by the VNF runtime", doc.path, ".".join(map(str, where)), key
        )
    caps = (((spec.get("securityContext") or {}).get("capabilities") or {}).get("add")) or []
    env, env_from = [], []
    for i, item in enumerate(spec.get("env") or []):
        at = where + ("env", i)
        name = item["name"]
        if "value" in item:
            env.append((name, item["value"] or ""))
            continue
        ref = ((item.get("valueFrom") or {}).get("configMapKeyRef")) or None
        if ref is None:
            raise doc.error(at, "only value and valueFrom.configMapKeyRef are supported")
        env_from.append((name, ref["name"], ref["key"]))
    resources = spec.get("resources") or {}
    at = where + ("resources",)
    container = Container(
        name=spec["name"],
        image=spec["image"],
        capabilities=tuple(c.upper() for c in caps),
        env=tuple(env),
        env_from=tuple(env_from),
        memory_limit=_quantity(doc, resources, at, "limits", "memory", memory_bytes),
        cpu_limit=_quantity(doc, resources, at, "limits", "cpu", cpu_cores),
        memory_request=_quantity(doc, resources, at, "requests", "memory", memory_bytes),
        cpu_request=_quantity(doc, resources, at, "requests", "cpu", cpu_cores),
    )
    return _within_limits(doc, container, at)


def _deployment(doc: Document) -> Deployment:
    doc.validate(DEPLOYMENT)
    meta, spec = doc.data["metadata"], doc.data["spec"]
    name = meta["name"]
    if not _NAME.match(name) or len(name) > 63:
        raise doc.error(("metadata", "name"), f"{name!r} is not a DNS label")
    replicas = spec.get("replicas", 1)
    if not 0 <= replicas <= 99:
        raise doc.error(("spec", "replicas"), "must be a whole number from 0 to 99")
    template = spec["template"]
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = ((spec.get("selector") or {}).get("matchLabels")) or {}
    for key, value in selector.items():
        if labels.get(key) != value:
            raise doc.error(
                ("spec", "selector", "matchLabels", key),
                f"{key}={value} does not match the pod template's labels",
            )
    containers = template["spec"]["containers"]
    if len(containers) != 1:
        raise doc.error(
            ("spec", "template", "spec", "containers"),
            "one container per pod (a VNF is one network function)",
        )
    container = _container(doc, containers[0], ("spec", "template", "spec", "containers", 0))
    return Deployment(
        name,
        meta.get("namespace", "default"),
        replicas,
        tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        container,
        str(doc.path),
    )


def load_manifest(*paths: str) -> Manifest:
    """Every Deployment and ConfigMap in `paths`; checked, references resolved."""
    out = Manifest()
    refs = []
    for path in paths:
        for doc in load_documents(path):
            kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
            if kind == "Deployment":
                d = _deployment(doc)
                if any(x.name == d.name for x in out.deployments):
                    raise doc.error(("metadata", "name"), f"Deployment {d.name!r} twice")
                out.deployments.append(d)
                refs.append((doc, d))
            elif kind == "ConfigMap":
                doc.validate(CONFIGMAP)
                out.configmaps[doc.data["metadata"]["name"]] = dict(doc.data.get("data") or {})
            else:
                LOG.info("%s: kind %s is not a VNF document; skipped", path, kind)
    for doc, d in refs:
        env = doc.data["spec"]["template"]["spec"]["containers"][0].get("env") or []
        for var, cm, key in d.container.env_from:
            if key not in out.configmaps.get(cm, {}):
                i = next(j for j, item in enumerate(env) if item.get("name") == var)
                at = ("spec", "template", "spec", "containers", 0, "env", i, "valueFrom")
                raise doc.error(at, f"{var}: ConfigMap {cm!r} has no key {key!r} in these files")
    return out


def resolved_env(d: Deployment, configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment with ConfigMap references filled in."""
    env = dict(d.container.env)
    for var, cm, key in d.container.env_from:
        env[var] = configmaps[cm][key]
    return env
