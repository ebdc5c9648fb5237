"""Run labs from Python: a controller process, a Mininet network, traffic checks, clean teardown.

Used by the integration tests, the main demo and the benchmarks. Cleanup is targeted: the lab
removes only the bridges and interfaces its own topology created, and stops only the processes it
started, by pid. It never runs `mn -c` or kills anything by name.

    with Controller(["apps/l2_learning.py"]) as ctl, Lab(LeafSpineTopo(), ctl.port) as lab:
        assert lab.wait_connected(timeout=30) is not None
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from topologies.wait import seconds_until, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "topologies", "probe.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_listening(port: int, timeout: float) -> bool:
    return bool(until(lambda: listening(port), timeout))


class Controller:
    """osken-manager in a child process, with its log in a file."""

    def __init__(
        self,
        apps: list[str],
        port: int | None = None,
        config: str | None = None,
        log_path: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.apps = apps
        self.port = port or free_port()
        self.config = config
        self.log_path = log_path or tempfile.mktemp(prefix="osken-", suffix=".log")
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> Controller:
        cmd = [
            sys.executable,
            "-m",
            "controller.cli",
            *self.apps,
            "--ofp-tcp-listen-port",
            str(self.port),
            "--prometheus-port",
            "0",
            *self.extra,
        ]
        if self.config:
            cmd += ["--config", self.config]
        log = open(self.log_path, "a")  # noqa: SIM115 (the child keeps it open)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_listening(self.port, 20):
            self.stop()
            raise RuntimeError(f"controller did not start; see {self.log_path}:\n{self.log()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code, self.proc = self.proc.returncode, None
        return code

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to clean anything up."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            with open(self.log_path) as fh:
                return fh.read()
        except OSError:
            return ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> bool:
        return bool(until(lambda: len(re.findall(pattern, self.log())) >= count, timeout, 0.1))

    def rewrite_config(self, text: str, timeout: float = 10.0) -> bool:
        """Replace the config file it runs with; True once it has reloaded it (the file watch
        picks the change up, no signal needed)."""
        before = len(re.findall("config reloaded", self.log()))
        with open(self.config, "w") as fh:
            fh.write(text)
        return self.wait_log("config reloaded", count=before + 1, timeout=timeout)

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ping_counts(output: str) -> tuple[int, int]:
    """(received, sent) from ping's summary line; (0, 0) if there is none."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    return (int(m.group(2)), int(m.group(1))) if m else (0, 0)


def metric(port: int, name: str, /, **labels: str) -> float:
    """Sum of the samples of `name` on a controller's /metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in (name, f"{name}_total") and labels.items() <= s.labels.items()
    )


def ofctl(command: str, switch: str, *args: str, options: tuple[str, ...] = ()) -> str:
    """ovs-ofctl's output for one command on one switch, in OpenFlow 1.3."""
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", *options, command, switch, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def tx_packets(switch: str) -> dict[int, int]:
    """Packets each port of a switch has sent."""
    out = ofctl("dump-ports", switch)
    return {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(r"port\s+(\d+):.*?tx pkts=(\d+)", out, re.S)
    }


def fresh_bridge(name: str, *ports: str) -> None:
    """An OVS bridge on the userspace datapath, OpenFlow 1.3, fail-secure, with these ports."""
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
    """The bridges and interfaces that exist now, so cleanup can spare them."""
    return _bridges(), _links()


def remove_leftovers(topo, before_bridges: set[str], before_links: set[str]) -> None:
    """Delete what a lab of `topo` left behind: new bridges and interfaces named after its nodes."""
    for bridge in (_bridges() - before_bridges) & set(topo.switches()):
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
    nodes = set(topo.switches()) | set(topo.hosts())
    for link in _links() - before_links:
        if link.split("-eth")[0] in nodes:
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


class Lab:
    """A Mininet network on OVS's userspace datapath, pointed at a controller on localhost."""

    def __init__(self, topo, controller_port: int, protocol: str = "tcp") -> None:
        """`protocol`: how the switches reach the controller, "tcp" or "ssl" (OpenFlow over
        TLS; Open vSwitch's own key and certificates are set with `ovs-vsctl set-ssl`)."""
        self.topo = topo
        self.controller_port = controller_port
        self.protocol = protocol
        self.net = None
        self._servers: list = []

    def start(self) -> Lab:
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
        self.net.start()
        return self

    def stop(self) -> None:
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
        return self.net.get(name)

    def pingall(self, wait: float = 1.0) -> tuple[int, int]:
        """Every host pings every other once, all hosts at the same time: (lost, sent)."""
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
        """(received, sent) for `count` pings from src to dst."""
        received, sent = ping_counts(
            self.host(src).cmd(f"ping -c{count} -i{interval:g} -W1 {self.host(dst).IP()}")
        )
        return received, sent or count

    def wait_ping(self, src: str, dst: str, timeout: float = 30.0) -> bool:
        """Ping once at a time until one gets through; False if none did within `timeout`."""
        return bool(until(lambda: self.ping(src, dst, count=1)[0] == 1, timeout, interval=0))

    def serve(self, host: str, *specs: str, name: str | None = None) -> None:
        """Start TCP/UDP servers in a host (e.g. "tcp:80", "udp:53"); stopped with the lab.
        TCP servers greet every connection with `name` (the host's name by default)."""
        proc = self.host(host).popen(
            ["/usr/bin/python3", PROBE, "serve", *specs, "--name", name or host],
            stdout=subprocess.PIPE,
            text=True,
        )
        proc.stdout.readline()  # "serving ..." once every socket is bound
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
        ("fail": connections that did not open)."""
        out = self.host(src).cmd(
            f"/usr/bin/python3 {PROBE} spread {ip} {port} {n} --parallel {parallel} "
            f"--timeout {timeout}"
        )
        return json.loads(out.strip().splitlines()[-1])

    def hold(self, src: str, ip: str, port: int, n: int, seconds: float):
        """Start `n` long connections from `src` that keep checking who answers; returns the
        process once they are open. Its last output line is JSON (see probe.py hold)."""
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
        """Does a TCP connection open (or a UDP datagram come back) from src to dst:port?"""
        out = self.host(src).cmd(
            f"/usr/bin/python3 {PROBE} {proto} {self.host(dst).IP()} "
            f"{port} --timeout {timeout}; echo rc=$?"
        )
        return "rc=0" in out

    def reachability(
        self, hosts: list[str], specs: list[str], timeout: float = 1.0
    ) -> dict[tuple[str, str, str], bool]:
        """Every host probes every other on every "proto:port" spec, all hosts at once.

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
        pings sent, pings lost, milliseconds of loss at the rate ping really achieved)."""
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
        """The switch's flows without counters, sorted: comparable before and after a restart."""
        out = ofctl("dump-flows", switch, options=("--no-stats",))
        return sorted(line.strip() for line in out.splitlines() if "reply" not in line)
