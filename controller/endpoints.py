"""Endpoints: the hosts that policies, services and chains speak about, known by IP.

The config's `endpoints:` section belongs to the core, not to one app: microsegmentation, the
services and the service chains all read it, each through `parse_endpoints`. Its schema
is `ENDPOINTS_SCHEMA` (a Kubernetes EndpointSlice reduced to what a lab needs: name, namespace,
one address, an optional MAC, labels, named ports, and the Kubernetes ServiceAccount that gives
the workload its Istio principal `cluster.local/ns/<namespace>/sa/<service_account>`).

>>> from controller.config import Config
>>> config = Config(data={"endpoints": [{"name": "web", "ip": "10.0.0.1", "labels": {"app": "w"}}]})
>>> [(e.name, e.namespace, str(e.ip), e.labels) for e in parse_endpoints(config)]
[('web', 'default', '10.0.0.1', (('app', 'w'),))]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.config import LABELS, Config

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "default"  # Kubernetes' own default ServiceAccount
TRUST_DOMAIN = "cluster.local"  # Istio's default trust domain
Labels = tuple[tuple[str, str], ...]
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

ENDPOINTS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "ip"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            # Kubernetes ServiceAccount name (a DNS subdomain): the workload's Istio principal
            "service_account": {
                "type": "string",
                "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
            },
            "ip": {"type": "string"},
            "mac": {"type": "string"},
            "labels": LABELS,
            "ports": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                    },
                },
            },
        },
    },
}
NAMESPACES_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "labels": LABELS},
    },
}


def labels_of(mapping: Mapping | None) -> Labels:
    """Labels (checked: string values) as a sorted tuple of pairs (hashable, order-free)."""
    return tuple(sorted((str(k), v) for k, v in (mapping or {}).items()))


@dataclass(frozen=True)
class NamedPort:
    """A container port that policies may name (Kubernetes ContainerPort)."""

    name: str
    port: int
    protocol: str  # "tcp", "udp" or "sctp"


@dataclass(frozen=True)
class Endpoint:
    """One host: `ip` an IPv4 or IPv6 address, `mac` lower-case or None, `labels` sorted pairs."""

    name: str
    namespace: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    mac: str | None
    labels: Labels
    ports: tuple[NamedPort, ...] = ()
    service_account: str = DEFAULT_SERVICE_ACCOUNT

    @property
    def principal(self) -> str:
        """Istio's principal for the workload: cluster.local/ns/<namespace>/sa/<account>."""
        return f"{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def family(self) -> int:
        """The IP version of the endpoint's address: 4 or 6."""
        return self.ip.version

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of the port called `name` for `protocol` ("tcp"...), or None."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


def parse_endpoints(config: Config) -> list[Endpoint]:
    """The config's `endpoints`, in order (already checked against ENDPOINTS_SCHEMA).

    Raises:
        ConfigError: a name, address or MAC given twice, or an address or MAC that does not
            parse; located at the field.
    """
    out: list[Endpoint] = []
    names: set[str] = set()
    ips: dict[str, str] = {}
    macs: dict[str, str] = {}
    for i, spec in enumerate(config.section("endpoints") or []):
        at = ("endpoints", i)
        if spec["name"] in names:
            raise config.error(at + ("name",), f"endpoint {spec['name']!r} twice")
        names.add(spec["name"])
        try:
            ip = ipaddress.ip_address(spec["ip"])
        except ValueError:
            raise config.error(at + ("ip",), f"{spec['ip']!r} is not an IP address") from None
        if getattr(ip, "scope_id", None):
            raise config.error(at + ("ip",), f"{spec['ip']!r}: a zone (%...) is a host's")
        if str(ip) in ips:
            raise config.error(at + ("ip",), f"{ip} is also endpoint {ips[str(ip)]!r}'s address")
        ips[str(ip)] = spec["name"]
        mac = spec.get("mac")
        if mac is not None and not _MAC.match(mac):
            raise config.error(at + ("mac",), f"{mac!r} is not a MAC address")
        if mac is not None and mac.lower() in macs:
            raise config.error(at + ("mac",), f"{mac} is also endpoint {macs[mac.lower()]!r}'s MAC")
        if mac is not None:
            macs[mac.lower()] = spec["name"]
        ports = tuple(
            NamedPort(p.get("name", ""), p["port"], p.get("protocol", "TCP").lower())
            for p in spec.get("ports") or ()
        )
        out.append(
            Endpoint(
                spec["name"],
                spec.get("namespace", DEFAULT_NAMESPACE),
                ip,
                mac.lower() if mac else None,
                labels_of(spec.get("labels")),
                ports,
                spec.get("service_account", DEFAULT_SERVICE_ACCOUNT),
            )
        )
    return out
