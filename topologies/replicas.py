"""Replicas in a lab (docs/ha.md): controllers on one etcd whose switches connect to all of
them, the roles Open vSwitch gives each connection, and the failover round the tests, the
benchmark (scripts/bench_ha.py) and the main job's scene share: kill -9 a master under a
100 pps ping and measure the takeover."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from topologies.controller_process import Controller, free_port
from topologies.scrape import ping_counts
from topologies.wait import seconds_until, until

PROMOTED = r"master \(generation \d+\), reason"  # what a replica logs when a switch confirms it
REPAIR = re.compile(r"reconciled \(resync\): \+(\d+) ~(\d+) -(\d+) flows")


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


def promotions(replica: Controller) -> int:
    """How many times a replica has logged a switch confirming it as master."""
    return len(re.findall(PROMOTED, replica.log()))


def flow_mods(log: str, since: int = 0) -> int:
    """Flow adds, modifies and deletes in the repairs logged after character `since`."""
    return sum(int(a) + int(m) + int(d) for a, m, d in REPAIR.findall(log[since:]))


class ReplicaSet:
    """Replicas `names` of `apps` on the etcd at `etcd_url`, each with its own OpenFlow port,
    log in `log_dir` (a temporary one by default) and config: `config` for all, or
    `configs[name]` each. `start()` starts them, `connect(net)` points every bridge of a
    Mininet lab at all of them and waits for one master per switch, `stop()` stops every one
    started (by pid). A context manager: start on entry, stop on exit. `http[name]` is each
    replica's metrics port when `metrics` is set.

    Raises:
        RuntimeError (from Controller.start): a replica did not start; its log is in the text.
    """

    def __init__(
        self,
        etcd_url: str,
        names=("a", "b"),
        apps=("apps/l2_learning.py",),
        config: str | None = None,
        log_dir: str | None = None,
        configs: dict[str, str] | None = None,
        metrics: bool = False,
    ) -> None:
        log_dir = log_dir or tempfile.mkdtemp(prefix="osken-replicas-")
        self.http = {name: free_port() for name in names} if metrics else {}
        self.replicas = {
            name: Controller(
                list(apps),
                config=(configs or {}).get(name, config),
                log_path=os.path.join(log_dir, f"{name}.log"),
                extra=["--cluster", etcd_url, "--replica-id", name]
                + (["--prometheus-port", str(self.http[name])] if metrics else []),
            )
            for name in names
        }
        self.ports = {r.port: name for name, r in self.replicas.items()}
        self.bridges: list[str] = []

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ReplicaSet:
        """Start every replica (each waits for its OpenFlow port)."""
        for r in self.replicas.values():
            r.start()
        return self

    def stop(self) -> None:
        """Stop every replica still running."""
        for r in self.replicas.values():
            r.stop()

    def connect(self, net, timeout: float = 15.0) -> bool:
        """Point every bridge of Mininet lab `net` at every replica; True once Open vSwitch
        lists exactly one master on each within `timeout` seconds."""
        self.bridges = [s.name for s in net.net.switches]
        targets = [f"tcp:127.0.0.1:{p}" for p in self.ports]
        for b in self.bridges:
            subprocess.run(["ovs-vsctl", "set-controller", b, *targets], check=True)
        return until(lambda: all(len(m) == 1 for m in self.masters().values()), timeout)

    def masters(self) -> dict[str, list[int]]:
        """Per bridge, the ports of the replicas Open vSwitch lists as master."""
        return masters(self.bridges, self.ports)

    def master_of(self, bridge: str) -> str | None:
        """The name of the replica Open vSwitch lists as `bridge`'s master, if exactly one."""
        held = self.masters()[bridge]
        return self.ports[held[0]] if len(held) == 1 else None


@dataclass
class Failover:
    """One kill -9 of a master under a 100 pps ping (seconds; None: did not happen in 10 s)."""

    victim: str
    orphaned: list[str]
    takeover: float | None  # until the survivors logged a ROLE_REPLY MASTER per orphaned switch
    gap: float | None  # until a host pair never seen before reached each other
    lost: int  # pings of the 100 pps stream lost
    sent: int
    flow_mods: int  # sent by the survivors' repairs


def repairs(log: str, since: int = 0) -> int:
    """How many takeover repairs (resyncs) a replica logged after character `since`."""
    return len(REPAIR.findall(log[since:]))


def kill_master_under_ping(rs: ReplicaSet, net, bridge: str, stream, fresh, count=500):
    """Kill -9 the master of `bridge` while `stream` (a host pair) pings at 100 pps; then time
    a first ping between `fresh` (a pair the controller has not seen). A Failover.

    The fresh pair speaks only once the survivors have logged their repairs, so that what a
    repair writes is what it found to mend on the switch, not a host first heard meanwhile
    (learned, then installed on its switch and toward it on every other one). In a lab whose
    hosts are not quiet (`Lab(quiet=True)`) a host may still speak on its own in that window."""
    victim = rs.master_of(bridge)
    assert victim is not None, rs.masters()
    orphaned = [b for b in rs.bridges if rs.master_of(b) == victim]
    survivors = {n: r for n, r in rs.replicas.items() if n != victim}
    src, dst = (net.host(h) for h in stream)
    a, b = (net.host(h) for h in fresh)
    src.sendCmd(f"ping -i 0.01 -c {count} -W1 {dst.IP()}")
    time.sleep(1.0)
    before = {n: promotions(r) for n, r in survivors.items()}
    marks = {n: len(r.log()) for n, r in survivors.items()}
    killed = time.monotonic()
    rs.replicas[victim].stop(signal.SIGKILL)
    took = seconds_until(
        lambda: sum(promotions(r) - before[n] for n, r in survivors.items()) >= len(orphaned),
        10,
        0.02,
    )
    until(
        lambda: sum(repairs(r.log(), marks[n]) for n, r in survivors.items()) >= len(orphaned),
        10,
        0.005,
    )
    reached = until(lambda: ping_counts(a.cmd(f"ping -c1 -W0.3 {b.IP()}"))[0], 10, 0)
    gap = time.monotonic() - killed if reached else None
    received, sent = ping_counts(src.waitOutput())
    time.sleep(0.5)
    mods = sum(flow_mods(r.log(), marks[n]) for n, r in survivors.items())
    return Failover(victim, orphaned, took, gap, sent - received, sent, mods)
