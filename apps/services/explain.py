"""Which service made one of the services app's flows: for a trace (controller/trace).

A flow names its service by the addresses it matches (the VIP, or one of its backends') and
its part by table and priority (compile.py). A new connection's flow also says who picks the
backend: the controller (method "exact"), or the select group whose buckets it names with
their backends and weights (method "switch"), or the waypoint replicas it steers to (method
"waypoint"); the groups are read as desired for the switch, so the answer is what that switch
was given.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from apps.services.compile import (
    ARP_PRIORITY,
    BACKEND_ARP_PRIORITY,
    COUNTED_HAIRPIN_PRIORITY,
    COUNTED_PRIORITY,
    COUNTED_REPLY_PRIORITY,
    CT_ZONE,
    DROP_PRIORITY,
    HAIRPIN_PRIORITY,
    NEW_PRIORITY,
    REFUSED_PRIORITY,
    REPLY_PRIORITY,
    SERVICE_REG,
    STEER_PRIORITY,
    VIP_PRIORITY,
    ServicesCompiler,
    select_group_id,
    vip_mac,
)
from apps.services.health import HEALTH_PORT, HEALTH_PRIORITY
from apps.services.outlier import RESET_PRIORITY
from apps.services.settings import WAYPOINT, Backend, Service
from controller.flows import Flow, Group

EXACT = "picked per connection by the controller (method exact)"


def _service_of(services: list[Service], m: dict[str, Any]) -> tuple[int, Backend | None] | None:
    """(index, backend or None) of the service whose addresses the match `m` names."""
    for i, s in enumerate(services):
        vip = (m.get("ipv4_dst"), m.get("ipv4_src"), m.get("arp_tpa"))
        tagged = m.get(SERVICE_REG) == int(ipaddress.IPv4Address(s.vip))
        backend = _backend_of(s, m)
        if s.vip in vip or tagged or backend is not None:
            return i, backend
    return None


def _backend_of(s: Service, m: dict[str, Any]) -> Backend | None:
    addresses = {m.get("ipv4_src"), m.get("ipv4_dst"), m.get("arp_spa")}
    return next((b for b in s.backends if b.ip in addresses), None)


def _named(b: Backend) -> dict[str, Any]:
    return {"endpoint": b.endpoint, "ip": b.ip, "port": b.port}


def explain_flow(
    compiler: ServicesCompiler,
    services: list[Service],
    groups: dict[int, Group],
    ff: dict[str, dict[str, int]],
    f: Flow,
    out_of_split: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """What made services flow `f` on a switch: {"kind", "service", "vip" ("ip:port/proto"),
    "method", "text", ...}, with "backend" (a backend's part, or for a new connection of
    method "exact" who picks it), "group" and "buckets" (method "switch": the select group,
    each bucket's backend and weight) or "waypoint" (the replicas' group); None for a flow no
    service in `services` (config order, learned MACs filled in) names.

    `groups` are the switch's desired groups by id, `ff` its fast-failover group ids
    (service name -> backend key -> group id). "decides": true marks the verdict of a new
    connection (who takes it) and the drop of anything else sent to a VIP. `out_of_split` maps
    the keys of backends taking no new connections to why ("out of health", "ejected"): a named
    backend says so ("out"), and a new connection's answer lists them ("out_of_split")."""
    out_of_split = out_of_split or {}
    m = f.match_dict()
    found = _service_of(services, m)
    if found is None:
        return None
    index, backend = found
    s = services[index]
    out: dict[str, Any] = {
        "kind": "service",
        "service": s.name,
        "vip": f"{s.vip}:{s.port}/{s.protocol}",
        "method": s.method,
    }
    if backend is not None:
        out["backend"] = _named(backend)
        if backend.key in out_of_split:
            out["backend"]["out"] = out_of_split[backend.key]
    if f.table == compiler.services_table:
        return {**out, **_services_table(s, f, backend)}
    if f.table != compiler.track:
        return None
    if NEW_PRIORITY <= f.priority < NEW_PRIORITY + 1 + len(s.routes) and "ipv4_dst" in m:
        gone = {b.endpoint: out_of_split[b.key] for b in s.backends if b.key in out_of_split}
        new = _new_connection(index, s, f, groups, ff.get(s.name, {}))
        return {**out, **new, **({"out_of_split": gone} if gone else {})}
    return {**out, **_track_table(s, f, backend)}


def _services_table(s: Service, f: Flow, backend: Backend | None) -> dict[str, Any]:
    if f.priority == ARP_PRIORITY:
        text = f"the controller answers ARP for the VIP, with {vip_mac(s.vip)}"
        return {"kind": "VIP ARP", "text": text}
    if f.priority == BACKEND_ARP_PRIORITY:
        return {"kind": "backend ARP", "text": "a copy of a backend's ARP: its MAC is learned"}
    if f.priority == VIP_PRIORITY and s.method == WAYPOINT:
        return {"text": "to the VIP's port: on to the waypoint's steering, untracked"}
    zone = next(
        (a[2] for ins in f.instructions if ins[0] == "apply" for a in ins[1] if a[0] == "ct"), None
    )
    if f.priority == VIP_PRIORITY and zone not in (None, CT_ZONE):
        return {"text": f"to the VIP's port: counted in conntrack zone {zone} (maxConnections)"}
    if f.priority == VIP_PRIORITY:
        return {"text": f"to the VIP's port: through conntrack zone {CT_ZONE} with NAT"}
    if f.priority == REPLY_PRIORITY:
        return {"kind": "reply", "text": "a backend's reply: through conntrack, back to the VIP"}
    if f.priority == HAIRPIN_PRIORITY:
        return {"kind": "hairpin", "text": "a backend's reply to itself as the VIP's client"}
    if f.priority == DROP_PRIORITY:
        return _dropped()
    if f.priority == HEALTH_PRIORITY:
        text = f"a backend's answer to a health check (to the VIP's port {HEALTH_PORT}): to the "
        return {"kind": "health check", "text": text + "controller, metered"}
    if f.priority == RESET_PRIORITY:
        text = "a backend's RST: a copy to the controller (outlier detection), then as a reply"
        return {"kind": "outlier detection", "text": text}
    return {}


def _track_table(s: Service, f: Flow, backend: Backend | None) -> dict[str, Any]:
    if f.priority == COUNTED_PRIORITY:
        return {"text": f"counted under the cap: through conntrack zone {CT_ZONE} with NAT"}
    if f.priority == REFUSED_PRIORITY:
        text = "refused: the service's connection cap (maxConnections) is reached"
        return {"kind": "connection cap", "action": "deny", "decides": True, "text": text}
    if f.priority in (COUNTED_REPLY_PRIORITY, COUNTED_HAIRPIN_PRIORITY):
        return {"kind": "reply", "text": "a counted reply: from the VIP's MAC"}
    if f.priority == STEER_PRIORITY and backend is not None:
        return {"text": f"a connection translated to {backend.endpoint}: to its MAC"}
    if f.priority == STEER_PRIORITY:
        return {"kind": "reply", "text": "a reply of a translated connection: from the VIP's MAC"}
    if f.priority == HAIRPIN_PRIORITY:
        return {"kind": "hairpin", "text": "a backend given itself: served as from the VIP"}
    if f.priority == DROP_PRIORITY:
        return _dropped()
    return {}


def _dropped() -> dict[str, Any]:
    return {
        "kind": "VIP drop",
        "action": "deny",
        "decides": True,
        "text": "anything else addressed to the VIP (another port or protocol, or no backend)",
    }


def _new_connection(
    index: int, s: Service, f: Flow, groups: dict[int, Group], ff: dict[str, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "new connection", "action": "allow", "decides": True}
    if s.method == "exact":
        return {**out, "backend": EXACT, "text": "the controller picks the backend"}
    gid = next((a[1] for ins in f.instructions if ins[0] == "apply" for a in ins[1]), None)
    g = groups.get(gid) if isinstance(gid, int) else None
    if s.method == WAYPOINT:
        replicas = [_replica(s, b.actions) for b in g.buckets] if g else []
        return {
            **out,
            "text": "steered to a waypoint replica (a select group), which routes each request",
            "waypoint": {"group": gid, "replicas": replicas},
        }
    route = s.routes[gid - select_group_id(index, 0)] if g else None
    by_ff = {group_id: key for key, group_id in ff.items()}
    buckets = [
        {**bucket_backend(s, b.actions, by_ff), "weight": b.weight}
        for b in (g.buckets if g else ())
    ]
    sources = None if route is None or route.sources is None else route.sources
    return {
        **out,
        "text": "a select group picks the backend (method switch)",
        "group": gid,
        "sources": None if sources is None else [str(n) for n in sources],
        "buckets": buckets,
    }


def bucket_backend(s: Service, actions: tuple, by_ff: dict[int, str]) -> dict[str, Any]:
    """The backend a select bucket commits to: through its fast-failover group, or a ct()
    whose nat names it."""
    for a in actions:
        if a[0] == "group" and a[1] in by_ff:
            return {"backend": _named(s.backend(by_ff[a[1]]))}
        if a[0] == "ct":
            for nested in a[4]:
                if nested[0] == "nat":
                    b = next((b for b in s.backends if (b.ip, b.port) == nested[2:]), None)
                    if b is not None:
                        return {"backend": _named(b)}
    return {"backend": None}


def _replica(s: Service, actions: tuple) -> dict[str, Any]:
    """The waypoint replica a bucket sends to (by the MAC it sets) and the port it leaves by."""
    mac = next((a[2] for a in actions if a[:2] == ("set_field", "eth_dst")), None)
    port = next((a[1] for a in actions if a[0] == "output"), None)
    b = next((b for b in s.backends if b.mac == mac), None)
    return {"endpoint": b.endpoint if b else None, "mac": mac, "port": port}
