"""Istio's EnvoyFilter (networking.istio.io), read unmodified from `routing:` or `policies:`
files, applied to the waypoint's HTTP filter chain of the workloads it selects.

Which workloads it is for (Istio): one in the root namespace (`istio-system`) without a
`workloadSelector` is for every workload; one in another namespace is for that namespace's
workloads, narrowed by `workloadSelector.labels`. A waypointed service takes the patches of
every EnvoyFilter for any of its backends (an EnvoyFilter for a backend of a service that
would not be waypointed makes it so), in Istio's order: by `priority`, root namespace first,
then in the order the files list them.

What the waypoint applies: `applyTo: HTTP_FILTER` patches (ADD, INSERT_FIRST, INSERT_BEFORE,
INSERT_AFTER, REPLACE, REMOVE) whose `match.context` is SIDECAR_INBOUND or ANY (the waypoint
takes the selected workloads' inbound traffic), matching the HTTP connection manager,
optionally a `subFilter` by name and the `portNumber` (the service's or the backend's port).
Such as the seed's `envoy.filters.http.local_ratelimit` INSERT_BEFORE, as written: its value
goes to Envoy unchanged, and Envoy's own check (`envoy --mode validate`) judges it with the
rest. Any other patch (another `applyTo`, context or operation, a match on what the waypoint
does not have, a REMOVE or REPLACE of the filters that enforce AuthorizationPolicy and
CiliumNetworkPolicy L7 rules, a filter that runs code the document brings: Lua, Wasm...) is
refused by name, with file and line, and not applied; the rest applies. A document with other
`spec` fields (`targetRefs`...) applies none of its patches: they could reach workloads it
does not mean.

Source: Istio reference, networking.istio.io/v1alpha3 EnvoyFilter.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from apps.services.selection import ROOT_NAMESPACE, selects
from controller.config import Document
from controller.endpoints import DEFAULT_NAMESPACE, Endpoint, labels_of
from vnf.waypoint import ciliumrbac, rbac
from vnf.waypoint.model import PATCH_OPERATIONS, FilterPatch

LOG = logging.getLogger("osken_suite.services")
KIND = "EnvoyFilter"
HCM = "envoy.filters.network.http_connection_manager"
CONTEXTS = ("ANY", "SIDECAR_INBOUND")
_LISTENER_MATCH = ("portNumber", "filterChain")
_CHAIN_MATCH = ("filter",)
_FILTER_MATCH = ("name", "subFilter")
# Envoy extensions that run code a document brings (Lua, Wasm, Go, dynamic modules) or load a
# filter's config from elsewhere (extension config discovery). The waypoint's Envoy runs as
# root (on the host with `runtime: namespace`): a Lua filter's os.execute ran commands there.
CODE_EXTENSIONS = (
    "envoy.extensions.filters.http.lua.",
    "envoy.extensions.filters.http.wasm.",
    "envoy.extensions.wasm.",
    "envoy.extensions.filters.http.golang.",
    "envoy.extensions.filters.http.dynamic_modules.",
)
# The filters that enforce AuthorizationPolicy and CiliumNetworkPolicy L7 rules: a patch may not
# remove or replace them (a security policy is never half enforced).
SECURITY_FILTERS = frozenset((*rbac.FILTER_NAMES, ciliumrbac.NAME))

_NAMED = {"type": "object", "properties": {"name": {"type": "string"}}}
_LISTENER_MATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
        "filterChain": {
            "type": "object",
            "properties": {
                "filter": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "subFilter": _NAMED},
                }
            },
        },
    },
}
ENVOY_FILTER_SCHEMA = {
    "type": "object",
    "required": ["metadata"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "properties": {
                "workloadSelector": {
                    "type": "object",
                    "properties": {
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "priority": {"type": "integer"},
                "configPatches": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["applyTo", "patch"],
                        "properties": {
                            "applyTo": {"type": "string"},
                            "match": {
                                "type": "object",
                                "properties": {
                                    "context": {"type": "string"},
                                    "listener": _LISTENER_MATCH_SCHEMA,
                                },
                            },
                            "patch": {
                                "type": "object",
                                "required": ["operation"],
                                "properties": {
                                    "operation": {"type": "string"},
                                    "value": {"type": "object"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Patch:
    """One applicable patch: `port` (None: any) is `match.listener.portNumber`."""

    port: int | None
    patch: FilterPatch


@dataclass(frozen=True)
class EnvoyFilter:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...] | None
    priority: int
    patches: tuple[Patch, ...]
    doc: Document

    @property
    def ident(self) -> str:
        return f"EnvoyFilter {self.namespace}/{self.name}"

    def selects(self, e: Endpoint) -> bool:
        """Whether it is for workload `e` (its namespace's, or all from the root namespace)."""
        return selects(self.namespace, self.selector, e)

    def patches_for(self, ports: frozenset[int]) -> tuple[FilterPatch, ...]:
        """Its patches for a listener whose destination ports are `ports`."""
        return tuple(p.patch for p in self.patches if p.port is None or p.port in ports)


def _refusal(match: dict, applies: str, operation: str, patch: dict) -> tuple[tuple, str] | None:
    """(where under the patch, why) it cannot be applied to the waypoint's HTTP filters, or
    None if it can."""
    if applies != "HTTP_FILTER":
        return ("applyTo",), f"applyTo {applies}: the waypoint applies HTTP_FILTER patches only"
    context = match.get("context", "ANY")
    if context not in CONTEXTS:
        return ("match", "context"), f"context {context}: the waypoint is {' or '.join(CONTEXTS)}"
    if operation not in PATCH_OPERATIONS:
        return ("patch", "operation"), f"operation {operation} on an HTTP filter"
    for key in sorted(set(patch) - {"operation", "value"}):
        return ("patch", key), f"patch.{key} is not applied by the waypoint"
    for key in sorted(set(match) - {"context", "listener"}):
        return ("match", key), f"match.{key}: the waypoint matches on its listener only"
    listener = match.get("listener") or {}
    chain = listener.get("filterChain") or {}
    fil = chain.get("filter") or {}
    for at, spec, known in (
        (("match", "listener"), listener, _LISTENER_MATCH),
        (("match", "listener", "filterChain"), chain, _CHAIN_MATCH),
        (("match", "listener", "filterChain", "filter"), fil, _FILTER_MATCH),
    ):
        for key in sorted(set(spec) - set(known)):
            return at + (key,), f"{key}: the waypoint does not match on it"
    if fil.get("name", HCM) != HCM:
        return ("match", "listener", "filterChain", "filter", "name"), (
            f"filter {fil['name']}: the waypoint's HTTP filters are under {HCM}"
        )
    sub = (fil.get("subFilter") or {}).get("name")
    if operation in ("REMOVE", "REPLACE") and sub is None:
        return ("patch", "operation"), f"{operation} needs match...subFilter.name"
    if operation in ("REMOVE", "REPLACE") and sub in SECURITY_FILTERS:
        return ("match", "listener", "filterChain", "filter", "subFilter", "name"), (
            f"{operation} of {sub}: it enforces the authorization policies"
        )
    if operation != "REMOVE" and not isinstance(patch.get("value"), dict):
        return ("patch",), f"{operation} needs a value (an HTTP filter)"
    if operation != "REMOVE":
        return _runs_code(patch["value"])
    return None


def _runs_code(value, at: tuple = ("patch", "value")) -> tuple[tuple, str] | None:
    """(where, why) for the first place in a patch value that names an extension running
    code it brings, or loads config from elsewhere (`config_discovery`); None if none does.
    Every key and string is looked at, nested ones too (a composite filter, a TypedStruct)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "config_discovery":
                return at + (key,), "config_discovery: a filter's config comes with the patch"
            found = _runs_code(item, at + (key,))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _runs_code(item, at + (i,))
            if found is not None:
                return found
    elif isinstance(value, str) and any(x in value for x in CODE_EXTENSIONS):
        return at, f"{value}: the waypoint runs no code an EnvoyFilter brings (Lua, Wasm...)"
    return None


def _patch(doc: Document, where: tuple, spec: dict, ident: str) -> Patch | None:
    """Patch `spec` at `where`, or None (logged by name) when the waypoint cannot apply it."""
    match, patch = spec.get("match") or {}, spec["patch"]
    operation = patch["operation"]
    refused = _refusal(match, spec["applyTo"], operation, patch)
    if refused is not None:
        at, why = refused
        LOG.warning("%s: %s: patch not applied: %s", doc.located(where + at), ident, why)
        return None
    listener = match.get("listener") or {}
    sub = ((listener.get("filterChain") or {}).get("filter") or {}).get("subFilter") or {}
    value = json.dumps(patch["value"], sort_keys=True) if operation != "REMOVE" else ""
    origin = doc.located(where)
    return Patch(listener.get("portNumber"), FilterPatch(operation, sub.get("name"), value, origin))


def parse_envoy_filter(doc: Document) -> EnvoyFilter:
    """An EnvoyFilter document (already known by its kind) with its applicable patches.
    Raises ConfigError, located, for a malformed one; names what it refuses in the log."""
    doc.validate(ENVOY_FILTER_SCHEMA)
    data = doc.data
    meta, spec = data["metadata"], data.get("spec") or {}
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    ident = f"{KIND} {namespace}/{meta['name']}"
    unknown = sorted(set(spec) - {"workloadSelector", "priority", "configPatches"})
    for key in unknown:
        LOG.warning(
            "%s: %s: spec.%s is not applied, so none of its patches is (they could reach "
            "workloads it does not mean)",
            doc.located(("spec", key)),
            ident,
            key,
        )
    patches = [
        _patch(doc, ("spec", "configPatches", i), p, ident)
        for i, p in enumerate(spec.get("configPatches") or [])
        if not unknown
    ]
    selector = spec.get("workloadSelector")
    return EnvoyFilter(
        meta["name"],
        namespace,
        None if selector is None else labels_of(selector.get("labels")),
        spec.get("priority", 0),
        tuple(p for p in patches if p is not None),
        doc,
    )


def patches_for(
    backends: list[tuple[Endpoint, int]], port: int, filters: list[EnvoyFilter]
) -> tuple[tuple[EnvoyFilter, ...], tuple[FilterPatch, ...]]:
    """(the EnvoyFilters for any of `backends`, their patches in Istio's order) for a service
    on `port` whose backends are `backends` ((endpoint, target port) pairs)."""
    mine = [f for f in filters if any(f.selects(e) for e, _ in backends)]
    mine.sort(key=lambda f: (f.priority, f.namespace != ROOT_NAMESPACE))
    ports = frozenset({port} | {p for _, p in backends})
    return tuple(mine), tuple(p for f in mine for p in f.patches_for(ports))
