"""Open vSwitch bridges and interfaces a lab makes: create one, and remove only what a lab left.

Cleanup is targeted: it deletes bridges and interfaces that did not exist before the lab and are
named after the lab's own nodes. It never runs `mn -c`.
"""

from __future__ import annotations

import subprocess


def fresh_bridge(name: str, *ports: str) -> None:
    """An OVS bridge on the userspace datapath, OpenFlow 1.3, fail-secure, with these ports.

    An existing bridge of that name is deleted first (ovs-vsctl(8), 10 s timeout per call).

    Raises
    ------
    subprocess.CalledProcessError
        ovs-vsctl failed (a port that does not exist, the database unreachable).
    """
    subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", name], check=True)
    cmd = [
        "ovs-vsctl",
        "--timeout=10",
        "add-br",
        name,
        "--",
        "set",
        "bridge",
        name,
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    ]
    for port in ports:
        cmd += ["--", "add-port", name, port]
    subprocess.run(cmd, check=True)


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True)
    return set(out.stdout.split())


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def snapshot() -> tuple[set[str], set[str]]:
    """The bridges and interface names that exist now, so cleanup can spare them."""
    return _bridges(), _links()


def remove_leftovers(topo, before_bridges: set[str], before_links: set[str]) -> None:
    """Delete what a lab of `topo` left behind: new bridges and interfaces named after its nodes.

    Parameters
    ----------
    topo : mininet.topo.Topo
        The lab's topology; only its switch and host names are deleted.
    before_bridges, before_links : set of str
        What `snapshot` saw before the lab started.
    """
    for bridge in (_bridges() - before_bridges) & set(topo.switches()):
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
    nodes = set(topo.switches()) | set(topo.hosts())
    for link in _links() - before_links:
        if link.split("-eth")[0] in nodes:
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
