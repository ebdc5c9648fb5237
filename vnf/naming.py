"""Names shared by the VNF runtime and the chaining app: how a replica's ports are called.

A replica is a bump in the wire with two ports on the switch: side "a" faces the traffic's
source, side "b" its destination. Their names carry the deployment (a short hash of its name),
the replica number and the side, so the controller finds a deployment's replicas among any
switch's ports by name alone, whoever plugged them in.

>>> port_name("virtual-firewall", 0, "a")
'vf2e98be00a'
>>> parse_port("vf2e98be00a") == (deployment_key("virtual-firewall"), 0, "a")
True
"""

from __future__ import annotations

import hashlib
import re

_PORT = re.compile(r"^vf([0-9a-f]{6})([0-9]{2})([ab])$")


def deployment_key(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:6]


def port_name(deployment: str, replica: int, side: str) -> str:
    """The switch-side interface of one side of a replica (11 characters: fits IFNAMSIZ)."""
    return f"vf{deployment_key(deployment)}{replica:02d}{side}"


def parse_port(name: str) -> tuple[str, int, str] | None:
    """(deployment key, replica, side) of a replica's port name, or None."""
    m = _PORT.match(name)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def replica_name(deployment: str, replica: int) -> str:
    """The container's (and network namespace's) name."""
    return f"osken-vnf-{deployment}-{replica}"
