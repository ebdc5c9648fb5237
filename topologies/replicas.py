"""Replicas in a lab: the roles Open vSwitch gives each controller connection, and the line a
replica logs when a switch confirms it as master (controller/roles.py)."""

from __future__ import annotations

import subprocess

PROMOTED = r"master \(generation \d+\), reason"


def roles(bridge: str) -> dict[int, str]:
    """Controller port -> the role Open vSwitch gives that connection on `bridge`."""
    mine = subprocess.run(
        ["ovs-vsctl", "get", "bridge", bridge, "controller"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = subprocess.run(
        ["ovs-vsctl", "--columns=_uuid,target,role", "--format=csv", "--no-headings"]
        + ["list", "controller"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = {}
    for row in rows.splitlines():
        uuid, target, role = [c.strip('"') for c in row.split(",")]
        if uuid in mine:
            got[int(target.rsplit(":", 1)[1])] = role
    return got


def masters(bridges, ports) -> dict[str, list[int]]:
    """Per bridge, which of the controller `ports` Open vSwitch lists as master."""
    return {b: [p for p, r in roles(b).items() if r == "master" and p in ports] for b in bridges}
