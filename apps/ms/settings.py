"""The config the microsegmentation app reads: `namespaces`, `endpoints` and `policies`.

`policies` lists files or folders (every *.yaml / *.yml in them, in name order) of YAML
documents, used unmodified. Each file and folder is watched: editing, adding or removing a
policy file reloads the config.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from apps.ms.model import DEFAULT_NAMESPACE, Endpoint, NamedPort, labels_of
from apps.ms.policy import Policy, check_unique, parse_policy
from controller.config import Config, parsed_documents, register_schema

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

register_schema("policies", {"type": "array", "items": {"type": "string"}})


@dataclass
class MicrosegSettings:
    namespaces: dict[str, tuple] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)


def parse_namespaces(config: Config) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for i, spec in enumerate(config.section("namespaces") or []):
        if spec["name"] in out:
            raise config.error(("namespaces", i, "name"), f"namespace {spec['name']!r} twice")
        out[spec["name"]] = labels_of(spec.get("labels"))
    return out


def parse_endpoints(config: Config) -> list[Endpoint]:
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
            )
        )
    return out


def parse_microseg(section, config: Config) -> MicrosegSettings:
    """Everything checked; the first problem is raised, located."""
    settings = MicrosegSettings(parse_namespaces(config), parse_endpoints(config))
    for _, path in config.listed_files("policies"):
        settings.policies += parsed_documents(path, parse_policy)
    check_unique(settings.policies)
    return settings
