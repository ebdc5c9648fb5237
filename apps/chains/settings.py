"""The `chains` config section: traffic classes and the deployments they go through, in order.

```yaml
chains:
  - name: web-via-firewall
    from: [10.0.0.0/24]            # client CIDRs; with from_labels, their union; none: any
    from_labels: {role: client}    # endpoints (by labels) whose addresses count as clients
    to: [10.0.0.2/32]              # server CIDRs, or to_labels; none: any
    protocol: tcp                  # tcp or udp (default tcp)
    ports: [80, 443, 22]           # server ports; none: every port
    through: [virtual-firewall]    # Deployment names, in order (1 to 4)
```
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controller.config import LABELS, Config
from controller.endpoints import parse_endpoints
from controller.matches import IP_PROTOCOLS

MAX_CHAINS, MAX_HOPS, MAX_REPLICAS = 15, 4, 16  # what the VLAN tag of a hop can name

_NETS = {"type": "array", "items": {"type": "string"}}
CHAINS_SCHEMA = {
    "type": "array",
    "maxItems": MAX_CHAINS,
    "items": {
        "type": "object",
        "required": ["name", "through"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "from": _NETS,
            "from_labels": LABELS,
            "to": _NETS,
            "to_labels": LABELS,
            "protocol": {"enum": ["tcp", "udp"]},
            "ports": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            "through": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_HOPS,
                "items": {"type": "string", "minLength": 1},
            },
        },
    },
}


@dataclass(frozen=True)
class Chain:
    name: str
    sources: tuple[ipaddress.IPv4Network, ...] | None  # None: any
    destinations: tuple[ipaddress.IPv4Network, ...] | None
    protocol: int
    ports: tuple[int, ...] | None
    through: tuple[str, ...]


def _side(config: Config, i: int, spec: dict, key: str, endpoints) -> tuple | None:
    nets = set()
    for j, text in enumerate(spec.get(key) or []):
        try:
            nets.add(ipaddress.IPv4Network(text, strict=False))
        except ValueError:
            raise config.error(("chains", i, key, j), f"{text!r} is not an IPv4 CIDR") from None
    labels = spec.get(f"{key}_labels")
    if labels is not None:
        want = {(str(k), v) for k, v in labels.items()}
        chosen = [e for e in endpoints if want <= set(e.labels) and e.ip.version == 4]
        if not chosen:
            raise config.error(("chains", i, f"{key}_labels"), "no endpoint has these labels")
        nets |= {ipaddress.IPv4Network(f"{e.ip}/32") for e in chosen}
    if not nets:
        return None
    return tuple(sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen)))


def parse_chains(section, config: Config) -> list[Chain]:
    endpoints = parse_endpoints(config)
    out: list[Chain] = []
    for i, spec in enumerate(section or []):
        if any(c.name == spec["name"] for c in out):
            raise config.error(("chains", i, "name"), f"chain {spec['name']!r} twice")
        ports = spec.get("ports")
        out.append(
            Chain(
                spec["name"],
                _side(config, i, spec, "from", endpoints),
                _side(config, i, spec, "to", endpoints),
                IP_PROTOCOLS[spec.get("protocol", "tcp")],
                tuple(sorted(set(ports))) if ports else None,
                tuple(spec["through"]),
            )
        )
    return out
