"""The network as the topology page draws it, and as `GET /api/v1/topology` answers.

Read in the core's event loop (`topology_of`): switches, discovered links with each end's load
(controller/portload.py, bits per second sent), hosts learned at edge ports with their
addresses and the load of their port, what each app adds (`SuiteApp.describe`: services with
their configured and observed split, VNF replicas and chains, waypoints when an app has them)
and the flow log's latest denies.

    {"time": 1764559553.1,
     "switches": [{"dpid": "0000000000000001", "name": "s1", "ports": 3, "ready": true}],
     "links": [{"a": "0000000000000001", "a_port": 2, "b": "0000000000000002", "b_port": 2,
                "a_to_b_bps": 8000.0, "b_to_a_bps": 0.0}],
     "hosts": [{"mac": "00:00:00:00:00:01", "ip": "10.0.0.1", "switch": "0000000000000001",
                "port": 1, "port_name": "s1-eth1", "to_host_bps": 0.0, "from_host_bps": 8000.0}],
     "services": [...], "vnfs": [...], "chains": [...],
     "denies": [flow log lines, newest first]}

A rate is null until two port counter polls have come back.
"""

from __future__ import annotations

from typing import Any

from controller.trace.tracer import described, view_of

RECENT_DENIES = 20


def topology_of(core, now: float) -> dict[str, Any]:
    """The page's data (see the module's docstring), read from a Core in its event loop.
    An app that fails to describe itself is counted and left out."""
    view = view_of(core)
    ips = {mac: ip for ip, mac in view.macs.items()}
    load = core.port_load

    def sent(dpid: int, port: int) -> float | None:
        rates = load.bps(dpid, port)
        return None if rates is None else rates[1]

    def received(dpid: int, port: int) -> float | None:
        rates = load.bps(dpid, port)
        return None if rates is None else rates[0]

    dpids = sorted(set(core.topology.switches()) | set(core.conns))
    out: dict[str, Any] = {
        "time": now,
        "switches": [
            {
                "dpid": f"{d:016x}",
                "ports": len(core.topology.live_ports(d)),
                "ready": core.ready(d),
            }
            for d in dpids
        ],
        "links": [
            {
                "a": f"{link.a:016x}",
                "a_port": link.a_port,
                "b": f"{link.b:016x}",
                "b_port": link.b_port,
                "a_to_b_bps": sent(link.a, link.a_port),
                "b_to_a_bps": sent(link.b, link.b_port),
            }
            for link in sorted(core.topology.links, key=lambda k: (k.a, k.a_port, k.b))
        ],
        "hosts": [
            {
                "mac": mac,
                "ip": ips.get(mac),
                "switch": f"{dpid:016x}",
                "port": port,
                "port_name": view.port_names.get(dpid, {}).get(port),
                "to_host_bps": sent(dpid, port),
                "from_host_bps": received(dpid, port),
            }
            for mac, (dpid, port) in sorted(view.hosts.items())
        ],
    }
    for kind, items in described(core).items():
        if kind not in ("switches", "links", "hosts"):
            out[kind] = items
    out["denies"] = list(reversed(core.flow_log.recent))[:RECENT_DENIES]
    return out
