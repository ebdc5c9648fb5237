"""Run a waypoint: Envoy replicas in containers (or namespaces), plugged into a switch, fed by file.

Each replica is a host on the fabric: one veth pair, `eth0` inside with its own address and a
MAC derived from it (`replica_mac`), `vw<key><nn>` on the switch. The services it serves own
their VIPs there: each VIP is a /32 on the replica's loopback, so Envoy accepts what the switches
steer to it (the switches answer ARP for VIPs; the replica never does: arp_ignore). Envoy
opens its own connections to the backends from the replica's address.

Configuration reaches Envoy only through the waypoint's folder (vnf/waypoint/files.py), which
every replica mounts at the same path: a new generation is swapped in atomically and Envoy
applies it without a restart. What runs is recorded in /run/osken-waypoint/<name>.json, so a
later process can stop it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from pyroute2 import IPRoute

from vnf.manifest import Container
from vnf.runtime import DockerRuntime, NamespaceRuntime
from vnf.waypoint import envoy, files

LOG = logging.getLogger("osken_suite.waypoint")
STATE_DIR = "/run/osken-waypoint"
IMAGE = "osken/waypoint:latest"
# The VIPs on the replica's loopback are for Envoy alone: never answer ARP for them, never
# speak ARP from them (the switches answer for VIPs).
SYSCTLS = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
# Sent from inside the replica's namespace: a gratuitous ARP, so the fabric learns where it is
# before the first client is steered to it.
_GARP = """
import socket, struct, sys
dev, ip = sys.argv[1], socket.inet_aton(sys.argv[2])
mac = bytes.fromhex(sys.argv[3].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\\0" * 6, ip)
for _ in range(2):
    s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + arp)
"""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def replica_mac(ip: str) -> str:
    """A replica's MAC: locally administered, from its address, known before it ever speaks.

    >>> replica_mac("10.0.0.250")
    '02:77:0a:00:00:fa'
    """
    return "02:77:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def port_name(name: str, replica: int) -> str:
    """The switch side of replica `replica`'s veth (10 characters: fits IFNAMSIZ).

    >>> port_name("waypoint", 0)
    'vw69b28e00'
    """
    return f"vw{hashlib.sha1(name.encode()).hexdigest()[:6]}{replica:02d}"


@dataclass(frozen=True)
class Spec:
    """Where a waypoint runs: its name, the OVS bridge its replicas plug into, one interface
    address ("10.0.0.250/8") per replica, Envoy's worker threads, and "docker", "namespace"
    or None (Docker when a daemon answers)."""

    name: str
    bridge: str
    addresses: tuple[str, ...]
    concurrency: int = 1
    runtime: str | None = None

    def replica(self, i: int) -> str:
        return f"osken-waypoint-{self.name}-{i}"


class Runner:
    """Starts, feeds and stops one waypoint's replicas. Not thread-safe: one caller at a time."""

    def __init__(self, spec: Spec, state_dir: str = STATE_DIR) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.folder = os.path.join(state_dir, spec.name)
        use_docker = spec.runtime == "docker" or (
            spec.runtime is None and DockerRuntime.available()
        )
        self.runtime = DockerRuntime() if use_docker else NamespaceRuntime(self.folder)
        self.vips: set[str] = set()

    # --- paths ---------------------------------------------------------------------------------

    def admin_socket(self, i: int) -> str:
        return os.path.join(self.folder, self.spec.replica(i), "admin.sock")

    def _state_file(self) -> str:
        return os.path.join(self.state_dir, f"{self.spec.name}.json")

    # --- life ----------------------------------------------------------------------------------

    def bridge_exists(self) -> bool:
        """Whether the Open vSwitch bridge the replicas plug into exists (yet)."""
        return _run("ovs-vsctl", "br-exists", self.spec.bridge, check=False).returncode == 0

    def start(self) -> None:
        """Every replica running, wired and announced; a leftover of the same name is
        replaced. Raises RuntimeError (or CalledProcessError) if a replica cannot start."""
        self.stop()
        if not self.bridge_exists():
            raise RuntimeError(
                f"no Open vSwitch bridge {self.spec.bridge!r} (mesh.waypoint.bridge)"
            )
        os.makedirs(self.folder, exist_ok=True)
        if files.in_force(self.folder) is None:
            empty = envoy.discovery_file("0", [])
            files.write_generation(self.folder, "0", empty, empty)
        try:
            self._start_replicas()
        except Exception:
            self.stop()  # nothing half-started is left behind
            raise
        self._save()
        LOG.info(
            "waypoint %s: %d replicas on %s (%s)",
            self.spec.name,
            len(self.spec.addresses),
            self.spec.bridge,
            self.runtime.kind,
        )

    def _start_replicas(self) -> None:
        env_bin = {} if self.runtime.kind == "docker" else {"ENVOY_BIN": envoy.envoy_binary() or ""}
        for i, address in enumerate(self.spec.addresses):
            name = self.spec.replica(i)
            os.makedirs(os.path.dirname(self.admin_socket(i)), exist_ok=True)
            boot = os.path.join(self.folder, f"bootstrap-{i}.json")
            with open(boot, "w") as fh:
                fh.write(
                    envoy.bootstrap(
                        name,
                        self.admin_socket(i),
                        os.path.join(self.folder, files.LDS),
                        os.path.join(self.folder, files.CDS),
                        self.folder,
                    )
                )
            env = {
                "WAYPOINT_BOOTSTRAP": boot,
                "WAYPOINT_CONCURRENCY": str(self.spec.concurrency),
                **env_bin,
            }
            started = self.runtime.start(
                name, Container(name, IMAGE), env, self.folder, volumes=(self.folder,)
            )
            self._wire(started.netns, i, address)

    def _wire(self, netns: str, i: int, address: str) -> None:
        outer = port_name(self.spec.name, i)
        ip = address.split("/", 1)[0]
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=outer):
                ipr.link("del", ifname=outer)
            ipr.link("add", ifname=outer, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns})
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], state="up")
        ns = ("ip", "netns", "exec", netns)
        _run("ethtool", "-K", outer, "tx", "off", check=False)
        _run(*ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        _run(*ns, "sysctl", "-qw", *SYSCTLS)
        _run("ip", "-n", netns, "link", "set", "eth0", "address", replica_mac(ip))
        _run("ip", "-n", netns, "addr", "add", address, "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        _run("ovs-vsctl", "--may-exist", "add-port", self.spec.bridge, outer)
        self.announce(i)

    def announce(self, i: int) -> None:
        """Replica `i` sends a gratuitous ARP, so the fabric learns where it is (a port on
        probation when it was plugged in does not count)."""
        ip = self.spec.addresses[i].split("/", 1)[0]
        netns = self.spec.replica(i)
        _run(
            "ip",
            "netns",
            "exec",
            netns,
            "/usr/bin/python3",
            "-c",
            _GARP,
            "eth0",
            ip,
            replica_mac(ip),
            check=False,
        )

    def configure(self, lds: str, cds: str, version: str, vips: tuple[str, ...]) -> None:
        """Put a config in force: the VIPs on every replica's loopback (new ones added before
        the files, old ones removed after), then the generation swapped in."""
        added, gone = set(vips) - self.vips, self.vips - set(vips)
        self.vips = set(vips)
        self._loopback("replace", added)
        files.write_generation(self.folder, version, lds, cds)
        self._loopback("del", gone)

    def _loopback(self, verb: str, vips: set[str]) -> None:
        for i in range(len(self.spec.addresses)):
            for vip in sorted(vips):
                _run(
                    "ip",
                    "-n",
                    self.spec.replica(i),
                    "addr",
                    verb,
                    f"{vip}/32",
                    "dev",
                    "lo",
                    check=False,
                )

    def serving(self, i: int, version: str) -> bool:
        """Whether replica `i` is live and serves config `version` (its listeners and clusters)."""
        sock = self.admin_socket(i)
        try:
            status, body = files.admin_get(sock, "/ready", timeout=0.5)
        except OSError:
            return False
        if status != 200 or body.strip() != "LIVE":
            return False
        got = files.stats(sock, "")
        return (
            got.get("listener_manager.lds.version_text") == version
            and got.get("cluster_manager.cds.version_text") == version
        )

    def running(self) -> list[bool]:
        """Per replica: is its container (or namespace process) running."""
        return [
            self.runtime.state(self.spec.replica(i))["running"]
            for i in range(len(self.spec.addresses))
        ]

    def stop(self) -> None:
        """Stop every replica this waypoint has (as recorded, or as named now) and remove its
        ports and folder; only what it made."""
        recorded = self._load() or {}
        names = set(recorded.get("replicas", [])) | {
            self.spec.replica(i) for i in range(len(self.spec.addresses))
        }
        bridge = recorded.get("bridge", self.spec.bridge)
        with IPRoute() as ipr:
            for i in range(max(len(names), len(self.spec.addresses))):
                port = port_name(self.spec.name, i)
                _run("ovs-vsctl", "--if-exists", "del-port", bridge, port, check=False)
                if ipr.link_lookup(ifname=port):
                    ipr.link("del", ifname=port)
        for name in sorted(names):
            self.runtime.stop(name)
        if os.path.exists(self._state_file()):
            os.remove(self._state_file())
        shutil.rmtree(self.folder, ignore_errors=True)
        if os.path.isdir(self.state_dir) and not os.listdir(self.state_dir):
            os.rmdir(self.state_dir)
        self.vips = set()

    def _save(self) -> None:
        state = {
            "name": self.spec.name,
            "bridge": self.spec.bridge,
            "runtime": self.runtime.kind,
            "replicas": [self.spec.replica(i) for i in range(len(self.spec.addresses))],
        }
        with open(self._state_file() + ".tmp", "w") as fh:
            json.dump(state, fh, indent=1)
        os.replace(self._state_file() + ".tmp", self._state_file())

    def _load(self) -> dict | None:
        try:
            with open(self._state_file()) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None
