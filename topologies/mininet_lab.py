"""A Mininet network on Open vSwitch's userspace datapath, and the traffic checks run in it.

The lab points its switches at a controller on localhost, runs pings and TCP/UDP probes
(topologies/probe.py) inside its hosts, reads paths from the switches' tables and port counters,
and on exit removes only the bridges and interfaces its own topology created and stops only the
processes it started, by pid.

    with Controller(["apps/l2_learning.py"]) as ctl, Lab(LeafSpineTopo(), ctl.port) as lab:
        assert lab.wait_connected(timeout=30) is not None
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

from topologies.bridges import remove_leftovers, snapshot
from topologies.paths import PROBE
from topologies.scrape import dump_flows, ping_counts, tx_packets
from topologies.wait import seconds_until, until


def quiet(host) -> None:
    """Turn IPv6 off in Mininet host `host` (every interface): it then sends nothing it is not
    asked to. Otherwise Linux sends MLD reports and router solicitations (RFC 4861, 6.3.7) on
    its own schedule, again about 4 s after the first and then backing off, so the controller
    first hears a host at a moment no test chose."""
    host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


class Lab:
    """A Mininet network on OVS's userspace datapath, pointed at a controller on localhost.

    Parameters
    ----------
    topo : mininet.topo.Topo
        The topology (topologies/*.py); its switch names must not exist yet.
    controller_port : int
        The controller's OpenFlow port on 127.0.0.1.
    protocol : str
        How the switches reach the controller, "tcp" or "ssl" (OpenFlow over TLS; Open
        vSwitch's own key and certificates are set with `ovs-vsctl set-ssl`).
    quiet : bool
        Hosts send only what the test makes them send (`quiet`), from before the switches
        start: a host is first heard when the test makes it speak.

    As a context manager it starts on entry and stops on exit. Times are in seconds.
    """

    def __init__(
        self, topo, controller_port: int, protocol: str = "tcp", quiet: bool = False
    ) -> None:
        self.topo = topo
        self.controller_port = controller_port
        self.protocol = protocol
        self.quiet = quiet
        self.net = None
        self._servers: list = []

    def start(self) -> Lab:
        """Build and start the network; switches connect to the controller in the background.

        Raises
        ------
        RuntimeError
            A bridge named like one of the topology's switches already exists (another lab).
        """
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import OVSSwitch

        from topologies.lab import LabController

        setLogLevel("error")
        self._before_bridges, self._before_links = snapshot()
        mine = set(self.topo.switches())
        clash = mine & self._before_bridges
        if clash:
            raise RuntimeError(f"bridges {sorted(clash)} already exist: another lab is running")
        ctl = LabController("c0", ip="127.0.0.1", port=self.controller_port, protocol=self.protocol)
        self.net = Mininet(
            topo=self.topo, switch=OVSSwitch, controller=ctl, autoSetMacs=True, waitConnected=False
        )
        if self.quiet:  # before the switches start: no frame of theirs can reach a controller
            for host in self.net.hosts:
                quiet(host)
        self.net.start()
        return self

    def stop(self) -> None:
        """Stop the servers started in hosts, the network, and remove what it left behind."""
        for proc in self._servers:  # what we started in the hosts, by pid
            proc.kill()
            proc.wait()
        self._servers = []
        if self.net is not None:
            self.net.stop()
            self.net = None
        remove_leftovers(self.topo, self._before_bridges, self._before_links)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- traffic -------------------------------------------------------------------------------

    def host(self, name: str):
        """The Mininet host (or switch) called `name`."""
        return self.net.get(name)

    def pingall(self, wait: float = 1.0) -> tuple[int, int]:
        """Every host pings every other once, all hosts at the same time, each reply awaited
        `wait` seconds: (lost, sent)."""
        hosts = self.net.hosts
        for h in hosts:
            targets = " ".join(o.IP() for o in hosts if o is not h)
            h.sendCmd(
                f"for ip in {targets}; do ping -c1 -W{wait:g} $ip >/dev/null 2>&1 "
                f"&& echo ok || echo lost; done"
            )
        lost = sent = 0
        for h in hosts:
            out = h.waitOutput()
            sent += out.count("ok") + out.count("lost")
            lost += out.count("lost")
        return lost, sent

    def wait_connected(self, timeout: float = 30.0) -> float | None:
        """Seconds until one pingall has no loss, or None if that never happens in time."""

        def clean() -> bool:
            lost, sent = self.pingall()
            return bool(sent and not lost)

        return seconds_until(clean, timeout, interval=0)

    def ping(self, src: str, dst: str, count: int = 3, interval: float = 0.2) -> tuple[int, int]:
        """(received, sent) for `count` pings from src to dst, `interval` seconds apart."""
        received, sent = ping_counts(
            self.host(src).cmd(f"ping -c{count} -i{interval:g} -W1 {self.host(dst).IP()}")
        )
        return received, sent or count

    def wait_ping(self, src: str, dst: str, timeout: float = 30.0) -> bool:
        """Ping once at a time until one gets through; False if none did within `timeout` s."""
        return bool(until(lambda: self.ping(src, dst, count=1)[0] == 1, timeout, interval=0))

    def serve(self, host: str, *specs: str, name: str | None = None) -> None:
        """Start TCP/UDP servers in a host (e.g. "tcp:80", "udp:53"); stopped with the lab.
        TCP servers greet every connection with `name` (the host's name by default)."""
        self.run_server(host, ["/usr/bin/python3", PROBE, "serve", *specs, "--name", name or host])

    def run_server(self, host: str, argv: list[str]) -> None:
        """Start a server process in a host, waiting for its first line ("serving ...", once it
        is bound); stopped with the lab."""
        proc = self.host(host).popen(argv, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        self._servers.append(proc)

    def spread_from(
        self, clients: list[str], ip: str, port: int, n: int, parallel: int = 8
    ) -> dict[str, int]:
        """`n` new TCP connections to ip:port shared by `clients`, all at once: how many each
        server greeted, in total."""
        results: dict[str, dict] = {}

        def run(client: str) -> None:
            results[client] = self.spread(client, ip, port, n // len(clients), parallel)

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        totals: dict[str, int] = {}
        for got in results.values():
            for name, count in got.items():
                totals[name] = totals.get(name, 0) + count
        return totals

    def spread(
        self, src: str, ip: str, port: int, n: int, parallel: int = 10, timeout: float = 2.0
    ) -> dict[str, int]:
        """Open `n` new TCP connections from `src` to ip:port: how many each server greeted
        ("fail": connections that did not open within `timeout` seconds)."""
        out = self.host(src).cmd(
            f"/usr/bin/python3 {PROBE} spread {ip} {port} {n} --parallel {parallel} "
            f"--timeout {timeout}"
        )
        return json.loads(out.strip().splitlines()[-1])

    def hold(self, src: str, ip: str, port: int, n: int, seconds: float):
        """Start `n` long connections from `src` that keep checking who answers; returns the
        process once they are open. Its last output line is JSON (see probe.py hold).

        Raises RuntimeError if they do not all open.
        """
        proc = self.host(src).popen(
            ["/usr/bin/python3", PROBE, "hold", ip, str(port), str(n), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.stdout.readline().strip() != "held":
            proc.kill()
            raise RuntimeError(f"{src} could not open {n} connections to {ip}:{port}")
        return proc

    def connects(self, src: str, dst: str, proto: str, port: int, timeout: float = 1.0) -> bool:
        """Does a TCP connection open (or a UDP datagram come back) from src to dst:port within
        `timeout` seconds?"""
        out = self.host(src).cmd(
            f"/usr/bin/python3 {PROBE} {proto} {self.host(dst).IP()} "
            f"{port} --timeout {timeout}; echo rc=$?"
        )
        return "rc=0" in out

    def reachability(
        self, hosts: list[str], specs: list[str], timeout: float = 1.0
    ) -> dict[tuple[str, str, str], bool]:
        """Every host probes every other on every "proto:port" spec, all hosts at once, each
        probe given `timeout` seconds: (src, dst, spec) to whether it got through.

        Loopback is left out, as in the upstream network-policy tests."""
        procs = {}
        for src in hosts:
            targets = ",".join(self.host(h).IP() for h in hosts if h != src)
            procs[src] = self.host(src).popen(
                ["/usr/bin/python3", PROBE, "matrix", targets, *specs, "--timeout", str(timeout)],
                stdout=subprocess.PIPE,
                text=True,
            )
        by_ip = {self.host(h).IP(): h for h in hosts}
        out = {}
        for src, proc in procs.items():
            text, _ = proc.communicate(timeout=timeout * 4 + 30)
            for line in text.splitlines():
                ip, spec, verdict = line.split()
                out[(src, by_ip[ip], spec)] = verdict == "ok"
        return out

    def link(self, a: str, b: str, status: str) -> None:
        """Set the link between nodes `a` and `b` "up" or "down" (both ends)."""
        self.net.configLinkStatus(a, b, status)

    def next_hop(self, switch: str, dst_mac: str) -> str | None:
        """The node `switch` forwards frames for `dst_mac` to, read from its flow table."""
        for line in self.dump_flows(switch):
            if f"dl_dst={dst_mac}" in line:
                m = re.search(r"actions=output:(\d+)", line)
                if m:
                    link = self.net.get(switch).intfs[int(m.group(1))].link
                    ends = (link.intf1.node.name, link.intf2.node.name)
                    return ends[1] if ends[0] == switch else ends[0]
        return None

    def path(self, src: str, dst: str) -> list[str]:
        """Switches a frame from host src to host dst crosses, as the flow tables say."""
        dst_mac = self.host(dst).MAC()
        node = self.host(src).intfs[0].link.intf2.node.name
        hops = [node]
        while node != dst and len(hops) < 32:
            node = self.next_hop(node, dst_mac)
            if node is None:
                break
            hops.append(node)
        return hops[:-1] if hops[-1] == dst else hops

    def links_used(self, src: str, dst: str, count: int = 100) -> list[tuple[str, str, int]]:
        """Switch-to-switch links a ping from src to dst really crosses, busiest first: (switch,
        neighbour, packets it sent that way). Read from port counters, so it holds where
        select groups spread flows over equal-cost paths."""
        switches = [sw.name for sw in self.net.switches]
        before = {sw: tx_packets(sw) for sw in switches}
        self.ping(src, dst, count=count, interval=0.005)
        used = []
        for sw in switches:
            after = tx_packets(sw)
            for port, n in after.items():
                sent = n - before[sw].get(port, 0)
                intf = self.net.get(sw).intfs.get(port)
                if intf is None or intf.link is None or sent < count // 2:
                    continue
                ends = (intf.link.intf1.node, intf.link.intf2.node)
                peer = ends[1] if ends[0].name == sw else ends[0]
                if peer.name in switches:
                    used.append((sw, peer.name, sent))
        return sorted(used, key=lambda u: -u[2])

    def cut_under_ping(
        self, src: str, dst: str, which, seconds: int = 4
    ) -> tuple[str, str, int, int, float]:
        """Ping src -> dst every millisecond and cut, 1.5 s in, the busiest link it uses for
        which `which(switch, neighbour)` holds; put it back after. Returns (switch, neighbour,
        pings sent, pings lost, milliseconds of loss at the rate ping really achieved).

        Raises
        ------
        StopIteration
            No link the ping uses satisfies `which`.
        RuntimeError
            ping printed no summary.
        """
        a, b = next((x, y) for x, y, _ in self.links_used(src, dst) if which(x, y))
        ping = self.host(src).popen(
            ["ping", "-i", "0.001", "-w", str(seconds), "-q", self.host(dst).IP()],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        try:
            self.link(a, b, "down")
            out, _ = ping.communicate(timeout=seconds + 30)
        finally:
            self.link(a, b, "up")
        m = re.search(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms", out, re.S)
        if m is None:
            raise RuntimeError(f"no ping summary: {out}")
        sent, received, elapsed = map(int, m.groups())
        return a, b, sent, sent - received, (sent - received) * elapsed / sent

    def dump_flows(self, switch: str) -> list[str]:
        """The switch's flows without counters, sorted (see `topologies.scrape.dump_flows`)."""
        return dump_flows(switch)
