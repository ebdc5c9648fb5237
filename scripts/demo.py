#!/usr/bin/env python3
"""The main job: a fat-tree lab under the controller, each feature shown with real traffic.

Starts osken-manager with the suite's apps, builds a k=4 fat-tree (20 switches, 16 hosts) in
Mininet on OVS's userspace datapath, then shows: full connectivity, TCP across the fabric, a
link failure on the path in use and the reroute, the link's return, the firewall (the seed's
rules.json, a rate limit under a UDP flood, a source blocked by a live reload), zero trust (the
seed's NetworkPolicy, unmodified, and a spoofed address that gains nothing), a canary behind a
virtual IP (the seed's Istio VirtualService, then a live shift to 50/50 and a backend's link
cut), a service chain through the seed's firewall VNF running as containers (a live ConfigMap
edit, a replica killed) and what the controller reports on /metrics. Then two smaller labs: an
L7 waypoint (leaf-spine, Envoy in a container that the controller runs and feeds; the seed's
routing file, unmodified: a `canary: true` header reaches v2 every time, other requests split
90/10 per request, then a live shift to 50/50 without restarting Envoy), and two replicas of
the firewall on etcd, the master of a switch killed under a ping. Prints a short report,
cleans up, exits 0 only if every check passed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.config import dump_documents, load_documents  # noqa: E402
from topologies.etcdlab import EtcdLab  # noqa: E402
from topologies.fattree import FatTreeTopo  # noqa: E402
from topologies.harness import ROOT, Controller, Lab, free_port, metric, ping_counts  # noqa: E402
from topologies.linear import LinearTopo  # noqa: E402
from topologies.replicas import ReplicaSet, kill_master_under_ping  # noqa: E402
from topologies.wait import until  # noqa: E402
from topologies.waypointlab import BACKENDS as WAYPOINT_BACKENDS  # noqa: E402
from topologies.waypointlab import FIFTY_FIFTY, shares, waypoint_lab  # noqa: E402
from topologies.waypointlab import VIP as WAYPOINT_VIP  # noqa: E402
from vnf.deploy import Deployer  # noqa: E402
from vnf.manifest import load_manifest  # noqa: E402

APPS = ["apps/firewall", "apps/microseg", "apps/services", "apps/chains"]  # + L2 learning
RATE_PPS = 500
CANARY_VIP = "10.0.100.10"
CANARY_CLIENTS = ["h1", "h3", "h6", "h11"]  # not h15: the firewall scene blocks it
CANARY_BACKENDS = {"h5": "v1-a", "h14": "v2-a", "h7": "v1-b"}
CONFIG = f"""endpoints:                        # whom the seed policy speaks about
  - {{name: api, namespace: production, ip: 10.0.0.9, mac: "00:00:00:00:00:09",
     labels: {{app: api-server}}}}
  - {{name: web, namespace: production, ip: 10.0.0.10, mac: "00:00:00:00:00:0a",
     labels: {{app: web-server}}}}
  - {{name: db, namespace: production, ip: 10.0.0.12, mac: "00:00:00:00:00:0c",
     labels: {{app: database}}}}
  - {{name: batch, namespace: production, ip: 10.0.0.13, mac: "00:00:00:00:00:0d",
     labels: {{app: batch}}}}
  - {{name: v1-a, ip: 10.0.0.5, labels: {{app: user-service, version: v1}}}}
  - {{name: v2-a, ip: 10.0.0.14, labels: {{app: user-service, version: v2}}}}
  - {{name: v1-b, ip: 10.0.0.7, labels: {{app: user-service, version: v1-standby}}}}
  - {{name: shop, ip: 10.0.0.3, labels: {{role: shopper}}}}
  - {{name: store, ip: 10.0.0.8, labels: {{role: storefront}}}}
policies: [policies]              # empty until the zero-trust scene puts the seed's policy in
services:                         # the canary: VIP in front, split by the routing file
  - name: user-service
    vip: {CANARY_VIP}
    port: 80
    backends: [{{endpoint: v1-b, backup: true}}]
routing: [routing]                # the seed's Istio VirtualService + DestinationRule
chains:                           # shop -> store web traffic through the seed's firewall VNF
  - {{name: shop-via-firewall, from_labels: {{role: shopper}}, to_labels: {{role: storefront}},
     ports: [80, 443, 22], through: [virtual-firewall]}}
firewall:
  default: allow
  rules_file: rules.json          # the seed's rules.json: 80 and 443 open, 22 closed
  rules:
    - {{name: udp-5201-limit, action: rate_limit, protocol: udp, port: 5201,
       rate_limit: {{pps: {RATE_PPS}, burst: 50}}}}
    - {{name: udp-9-flood, action: deny, protocol: udp, port: 9}}
  stats_interval: 2
  xdp: {{mode: auto}}                # deny rules XDP can express are dropped before the switch
"""
SPOOF_CMD = (
    "import socket; s = socket.socket(); s.settimeout(1); s.bind(('{fake}', 0)); "
    "print(s.connect_ex(('{dst}', 8080)))"
)
FLOOD = 20000
FLOOD_CMD = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "[s.sendto(b'x' * 18, ('{ip}', 9)) for _ in range({n})]"
)


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []

    def add(self, what: str, ok: bool, detail: str) -> None:
        self.rows.append((what, ok, detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {what}: {detail}", flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.rows)


def connectivity(lab: Lab, report: Report, what: str, timeout: float) -> None:
    took = lab.wait_connected(timeout=timeout)
    n = len(lab.net.hosts)
    detail = (
        f"{n * (n - 1)} pings, 0 lost, after {took:.1f} s"
        if took is not None
        else f"still losing pings after {timeout:.0f} s"
    )
    report.add(what, took is not None, detail)


def tcp(lab: Lab, report: Report, src: str, dst: str) -> None:
    server = lab.host(dst).popen("iperf3 -s -1")
    try:
        time.sleep(0.5)
        out = lab.host(src).cmd(f"iperf3 -c {lab.host(dst).IP()} -t 2 -J")
        bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
        report.add(f"TCP {src} -> {dst}", bps > 0, f"iperf3 {bps / 1e6:.0f} Mbit/s")
    except (ValueError, KeyError) as exc:
        report.add(f"TCP {src} -> {dst}", False, f"iperf3 failed: {exc}")
    finally:
        server.terminate()
        server.wait()


def link_failure(lab: Lab, report: Report, src: str, dst: str) -> None:
    """Cut the busiest aggregation-core link a src->dst ping crosses, under a 100 pps ping."""
    used = lab.links_used(src, dst)
    agg, core = next(
        (a, b) if b.startswith("c") else (b, a)
        for a, b, _ in used
        if a.startswith("c") or b.startswith("c")
    )
    interval, count = 0.01, 300
    result: dict = {}

    def pinger() -> None:
        result["out"] = lab.host(src).cmd(
            f"ping -i {interval} -c {count} -W 1 {lab.host(dst).IP()}"
        )

    thread = threading.Thread(target=pinger)
    thread.start()
    time.sleep(1.0)
    lab.link(agg, core, "down")
    thread.join(timeout=30)
    received, sent = ping_counts(result.get("out", ""))
    lost = sent - received if sent else count
    now_used = {frozenset((a, b)) for a, b, _ in lab.links_used(src, dst)}
    report.add(
        f"link {agg}-{core} down (on the {src}->{dst} path)",
        frozenset((agg, core)) not in now_used and lost <= 10,
        f"traffic moved to the other equal-cost paths; {lost} of {count} pings lost "
        f"(~{lost * interval * 1000:.0f} ms at {1 / interval:.0f} pps)",
    )
    connectivity(lab, report, "all pairs after the failure", 20)
    lab.link(agg, core, "up")
    time.sleep(1.5)
    connectivity(lab, report, f"link {agg}-{core} back up, all pairs", 20)


def firewall(lab: Lab, report: Report, ctl: Controller, cfg: str, src: str, dst: str) -> None:
    lab.serve(dst, "tcp:80", "tcp:443", "tcp:22")
    verdicts = {port: lab.connects(src, dst, "tcp", port) for port in (80, 443, 22)}
    report.add(
        "firewall: the seed's rules.json",
        verdicts == {80: True, 443: True, 22: False},
        ", ".join(f"tcp {p} {'open' if ok else 'blocked'}" for p, ok in verdicts.items()),
    )
    server = lab.host(dst).popen("iperf3 -s -1")
    try:
        time.sleep(0.5)
        out = lab.host(src).cmd(f"iperf3 -u -c {lab.host(dst).IP()} -b 4M -l 200 -t 3 -J")
        end = json.loads(out)["end"]["sum"]
        offered = end["packets"] / end["seconds"]
        got = (end["packets"] - end["lost_packets"]) / end["seconds"]
        report.add(
            f"firewall: rate limit udp 5201 at {RATE_PPS} pps",
            abs(got - RATE_PPS) <= 0.1 * RATE_PPS,
            f"offered {offered:.0f} pps, delivered {got:.0f} pps",
        )
    except (ValueError, KeyError) as exc:
        report.add("firewall: rate limit", False, f"iperf3 failed: {exc}")
    finally:
        server.kill()
        server.wait()
    blocked = "h15"
    with open(cfg, "a") as fh:
        fh.write(f"  blocked_ips: [{lab.host(blocked).IP()}]\n")
    ctl.proc.send_signal(signal.SIGHUP)
    ctl.wait_log(r"config reloaded", timeout=10)
    time.sleep(0.3)
    others_ok = lab.connects("h14", dst, "tcp", 80)
    blocked_ok = lab.connects(blocked, dst, "tcp", 80)
    report.add(
        f"firewall: {blocked} blocked by a live reload",
        others_ok and not blocked_ok,
        f"{blocked} -> {dst}:80 {'open' if blocked_ok else 'blocked'}, "
        f"h14 -> {dst}:80 {'open' if others_ok else 'blocked'}",
    )


def zero_trust(lab: Lab, report: Report, ctl: Controller, cfg: str) -> None:
    """The seed's microsegmentation.yml, unmodified: api-server takes 8080 from web-server and
    mobile-gateway only, and may reach only the database (5432) and DNS."""
    shutil.copy(
        os.path.join(ROOT, "tests", "data", "seed-policies", "microsegmentation.yml"),
        os.path.join(os.path.dirname(cfg), "policies"),
    )
    ctl.proc.send_signal(signal.SIGHUP)
    ctl.wait_log(r"config reloaded", count=2, timeout=10)
    time.sleep(0.5)
    api, web, db, batch = "h9", "h10", "h12", "h13"
    lab.serve(api, "tcp:8080", "tcp:22")
    lab.serve(db, "tcp:5432", "tcp:80")
    checks = {
        "web -> api:8080": (lab.connects(web, api, "tcp", 8080), True),
        "batch -> api:8080": (lab.connects(batch, api, "tcp", 8080), False),
        "web -> api:22": (lab.connects(web, api, "tcp", 22), False),
        "api -> db:5432": (lab.connects(api, db, "tcp", 5432), True),
        "api -> db:80": (lab.connects(api, db, "tcp", 80), False),
    }
    report.add(
        "zero trust: the seed's NetworkPolicy",
        all(got == want for got, want in checks.values()),
        ", ".join(f"{k} {'open' if got else 'blocked'}" for k, (got, _) in checks.items()),
    )
    spoofer, fake = lab.host(batch), lab.host(web).IP()
    intf = spoofer.defaultIntf()
    spoofer.cmd(f"ip addr add {fake}/32 dev {intf}")
    try:
        code = SPOOF_CMD.format(fake=fake, dst=lab.host(api).IP())
        spoofed = spoofer.cmd(f'/usr/bin/python3 -c "{code}"').strip() == "0"
    finally:
        spoofer.cmd(f"ip addr del {fake}/32 dev {intf}")
    report.add(
        "zero trust: batch borrows web's address",
        not spoofed and lab.connects(web, api, "tcp", 8080),
        f"spoofed -> api:8080 {'open' if spoofed else 'blocked'} (bound to web's port and MAC)",
    )


def canary_spread(lab: Lab, n: int) -> dict[str, int]:
    """`n` new connections to the VIP, from four clients at once: count per backend."""
    got = lab.spread_from(CANARY_CLIENTS, CANARY_VIP, 80, n)
    return {CANARY_BACKENDS.get(host, host): k for host, k in got.items()}


def canary(lab: Lab, report: Report, ctl: Controller, cfg: str, metrics_port: int) -> None:
    """The seed's VirtualService (90/10 over subsets v1/v2) in front of a VIP; then a live
    shift to 50/50 while connections opened before it keep talking to their backend."""
    for host, name in CANARY_BACKENDS.items():
        lab.serve(host, "tcp:80", name=name)

    def in_health() -> bool:  # no server answered their health checks until now
        return all(
            metric(metrics_port, "osken_services_backend_healthy", backend=name) == 1
            for name in CANARY_BACKENDS.values()
        )

    until(in_health, 10.0)
    routing = os.path.join(os.path.dirname(cfg), "routing", "traffic-routing.yml")
    n = 1000
    got = canary_spread(lab, n)
    report.add(
        "canary: the seed's VirtualService, 90/10",
        got == {"v1-a": 900, "v2-a": 100},
        f"{n} new connections to {CANARY_VIP}: "
        + ", ".join(f"{k} {v * 100 / n:.1f}%" for k, v in sorted(got.items())),
    )
    held = lab.hold("h2", CANARY_VIP, 80, 10, seconds=6)
    with open(routing) as fh:
        text = fh.read()
    with open(routing, "w") as fh:  # the operator's edit: the default route goes 50/50
        fh.write(text.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))
    ctl.wait_log(r"v1-a:80 50.0%, v2-a:80 50.0%", timeout=10)
    got = canary_spread(lab, n)
    out, _ = held.communicate(timeout=30)
    kept = json.loads(out.strip().splitlines()[-1])
    report.add(
        "canary: live shift to 50/50",
        got == {"v1-a": 500, "v2-a": 500} and kept["moved"] == 0 and kept["broken"] == 0,
        ", ".join(f"{k} {v * 100 / n:.1f}%" for k, v in sorted(got.items()))
        + f"; {sum(kept['started'].values())} connections opened before the shift: "
        f"{kept['moved']} moved, {kept['broken']} broke",
    )
    lab.link("h5", lab.host("h5").intfs[0].link.intf2.node.name, "down")
    time.sleep(0.5)
    got = canary_spread(lab, 200)
    lab.link("h5", lab.host("h5").intfs[0].link.intf2.node.name, "up")
    report.add(
        "canary: v1-a's link down",
        got == {"v2-a": 200},
        "new connections: " + ", ".join(f"{k} {v}" for k, v in sorted(got.items())),
    )


def chain(lab: Lab, report: Report, folder: str) -> None:
    """The seed's vnf-deployment.yml as containers on shop's edge switch, in the chain."""
    manifest = os.path.join(folder, "vnf-deployment.yml")
    shutil.copy(os.path.join(ROOT, "tests", "data", "seed-vnf", "vnf-deployment.yml"), manifest)
    deployer = Deployer()
    shop, store = "h3", "h8"
    edge = lab.host(shop).intfs[0].link.intf2.node.name
    lab.serve(store, "tcp:80", "tcp:443", "tcp:22")

    def open_ports() -> tuple[str, dict[int, bool]]:
        got = {p: lab.connects(shop, store, "tcp", p) for p in (80, 443, 22)}
        return ", ".join(f"{p} {'open' if ok else 'blocked'}" for p, ok in got.items()), got

    def wait(port: int, want: bool) -> float:
        start = time.time()
        until(lambda: lab.connects(shop, store, "tcp", port, 0.5) == want, 10, interval=0)
        return time.time() - start

    try:
        start = time.time()
        deployer.deploy(load_manifest(manifest), edge)
        wait(80, True)
        first = time.time() - start  # deploy, then the first connection through it
        status = deployer.status("virtual-firewall")
        text, got = open_ports()
        limits = status["replicas"][0]["state"]
        report.add(
            "chain: the seed's Deployment as containers",
            got == {80: True, 443: True, 22: False} and status["runtime"] == "docker",
            f"{len(status['replicas'])} replicas on {edge} ({status['runtime']}, "
            f"{limits.get('memory', 0) // 2**20} MiB, {limits.get('nano_cpus', 0) / 1e9:g} cpu); "
            f"first connection through the chain {first:.1f} s after deploy; shop -> store {text}",
        )
        started = [r["state"]["started"] for r in status["replicas"]]
        docs = [d.data for d in load_documents(manifest)]  # the operator's edit: deny 443 too
        configmap = next(d for d in docs if d["kind"] == "ConfigMap")
        rules = json.loads(configmap["data"]["rules.json"])
        for rule in rules["rules"]:
            if rule["port"] == 443:
                rule["action"] = "deny"
        configmap["data"]["rules.json"] = json.dumps(rules, indent=2)
        with open(manifest, "w") as fh:
            fh.write(dump_documents(docs))
        deployer.deploy(load_manifest(manifest), edge)
        wait(443, False)
        text, got = open_ports()
        now = [r["state"]["started"] for r in deployer.status("virtual-firewall")["replicas"]]
        report.add(
            "chain: ConfigMap edited (deny 443)",
            got == {80: True, 443: False, 22: False} and now == started,
            f"{text}; re-applied in place, containers not restarted",
        )
        victim = status["replicas"][0]["name"]
        subprocess.run(["/usr/bin/docker", "kill", victim], capture_output=True, check=True)
        start = time.time()
        ok = 0
        while ok < 5 and time.time() - start < 10:
            ok = ok + 1 if lab.connects(shop, store, "tcp", 80, 0.5) else 0
        report.add(
            "chain: a replica killed",
            ok == 5,
            f"{victim} killed; connections through the other replica again after "
            f"{time.time() - start:.1f} s",
        )
    finally:
        if deployer.load("virtual-firewall"):
            deployer.delete("virtual-firewall")


def xdp_flood(lab: Lab, report: Report, ctl: Controller, metrics_port: int, dst: str) -> None:
    """A UDP flood at a denied port: dropped by XDP on the switch port, OpenFlow never sees it."""
    rule = "5"  # udp-9-flood: the seed's 3 rules, the rate limit, then this one
    before = metric(metrics_port, "osken_firewall_rule_xdp_packets", rule=rule)
    lab.host("h2").cmd(f'/usr/bin/python3 -c "{FLOOD_CMD.format(ip=lab.host(dst).IP(), n=FLOOD)}"')
    time.sleep(4.5)  # two stats intervals
    xdp_now = metric(metrics_port, "osken_firewall_rule_xdp_packets", rule=rule)
    in_xdp = xdp_now - before
    in_openflow = metric(metrics_port, "osken_firewall_rule_packets", rule=rule) - xdp_now
    on = "XDP: attached" in ctl.log()
    report.add(
        "XDP fast path: UDP flood at a denied port",
        on and in_xdp >= FLOOD * 0.99,
        f"{FLOOD} sent, {in_xdp:.0f} dropped in XDP before the switch, "
        f"{in_openflow:.0f} reached OpenFlow"
        if on
        else "off (see the log for why)",
    )


def waypoint(report: Report, folder: str) -> None:
    """The seed's traffic-routing.yml, unmodified, in a small lab with `mesh.waypoint`
    (topologies/waypointlab.py): its `canary` header rule needs L7, so the controller runs Envoy
    in a container as the service's waypoint and steers the VIP to it. Real HTTP, a new
    connection per request; then a live weight edit that reaches the same Envoy."""
    print("waypoint: leaf-spine lab (2 spines, 3 leaves, 9 hosts), apps/services, Envoy on lf3")
    url, n = f"http://{WAYPOINT_VIP}/", 1000

    def answers(got: dict[str, int]) -> str:
        return ", ".join(f"{WAYPOINT_BACKENDS.get(h, h)} {k}" for h, k in sorted(got.items()))

    def split(got: dict[str, int], v1: float, v2: float) -> tuple[bool, str]:
        pct = shares(got)
        ok = "fail" not in got and abs(pct["v1"] - v1) <= 2 and abs(pct["v2"] - v2) <= 2
        return ok, f"v1 {pct['v1']:.1f}%, v2 {pct['v2']:.1f}% ({answers(got)})"

    lab_dir = pathlib.Path(folder, "waypoint")
    lab_dir.mkdir()
    start = time.time()
    try:
        with waypoint_lab(lab_dir) as env:
            took = time.time() - start
            got = env.get("h11", url, 100, {"canary": "true"})
            report.add(
                "waypoint: requests with canary: true",
                got == {"h31": 100},
                f"100 to {WAYPOINT_VIP}: {answers(got)} (Envoy serving {took:.0f} s after start)",
            )
            got = env.get("h12", url, n)
            ok, text = split(got, 90, 10)
            report.add("waypoint: the others split 90/10 per request", ok, f"{n} requests: {text}")
            before, start = env.replica(), time.time()
            with env.routing_edited(FIFTY_FIFTY):
                took = time.time() - start
                got = env.get("h13", url, 200)
                same = env.replica() == before
            ok, text = split(got, 50, 50)
            report.add(
                "waypoint: live shift to 50/50",
                ok and same and before["running"],
                f"in force {took:.1f} s after the edit, Envoy "
                f"{'not restarted' if same else 'restarted'}; 200 requests: {text}",
            )
    except RuntimeError as exc:
        report.add("waypoint: Envoy in front of the VIP", False, str(exc).splitlines()[0])


def failover(report: Report, folder: str) -> None:
    """Two replicas of the firewall on a lab etcd, two switches connected to both; the master
    of the second switch is killed (-9) under a 100 pps ping."""
    cfg = os.path.join(folder, "replicas.yaml")
    with open(cfg, "w") as fh:
        fh.write("firewall:\n  default: allow\n  rules_file: rules.json\n")
    print("replicas: etcd on loopback, osken-manager --cluster ... --replica-id a|b apps/firewall")
    with (
        EtcdLab() as etcd,
        ReplicaSet(etcd.url, apps=["apps/firewall"], config=cfg, log_dir=folder) as rs,
        Lab(LinearTopo(n=2, hosts_per_switch=2), rs.replicas["a"].port, quiet=True) as net,
    ):
        if not (rs.connect(net) and until(lambda: net.ping("h1x1", "h2x1", count=1)[0], 20)):
            report.add("replicas: one master per switch", False, f"OVS lists {rs.masters()}")
            return
        held = {b: rs.master_of(b) for b in rs.bridges}
        f = kill_master_under_ping(rs, net, rs.bridges[1], ("h1x1", "h2x1"), ("h2x2", "h1x2"))
        survivor = next(n for n in rs.replicas if n != f.victim)
        after = until(lambda: all(rs.master_of(b) == survivor for b in rs.bridges), 10)
        report.add(
            "replicas: kill -9 of a master under ping",
            after
            and f.takeover is not None
            and f.takeover <= 3
            and f.gap is not None
            and f.gap <= 3
            and f.lost <= 5
            and f.flow_mods == 0,
            f"masters {held}; {f.victim} killed: {survivor} took {', '.join(f.orphaned)} in "
            f"{f.takeover:.2f} s"
            if f.takeover is not None
            else "no takeover within 10 s",
        )
        report.add(
            "replicas: traffic across the takeover",
            f.gap is not None and f.lost <= 5,
            f"{f.lost}/{f.sent} pings of 100 pps lost, a new host pair through "
            f"{f.gap:.2f} s after the kill, {f.flow_mods} flow-mods in the repair"
            if f.gap is not None
            else f"{f.lost}/{f.sent} pings lost, a new host pair never got through",
        )


def main() -> int:
    report = Report()
    topo = FatTreeTopo(4)
    metrics_port = free_port()
    print("fat-tree k=4 lab: 20 switches, 16 hosts, OVS userspace datapath, OpenFlow 1.3")
    print(f"controller: osken-manager {' '.join(APPS)}  (metrics on :{metrics_port})")
    folder = tempfile.mkdtemp(prefix="osken-demo-")
    shutil.copy(
        os.path.join(ROOT, "tests", "data", "seed-rules.json"), os.path.join(folder, "rules.json")
    )
    cfg = os.path.join(folder, "lab.yaml")
    with open(cfg, "w") as fh:
        fh.write(CONFIG)
    os.makedirs(os.path.join(folder, "policies"))
    os.makedirs(os.path.join(folder, "routing"))
    shutil.copy(
        os.path.join(ROOT, "tests", "data", "seed-routing", "traffic-routing.yml"),
        os.path.join(folder, "routing"),
    )
    ctl = Controller(APPS, config=cfg, extra=["--prometheus-port", str(metrics_port)])
    with ctl, Lab(topo, ctl.port) as lab:
        connectivity(lab, report, "connectivity from a cold start", 60)
        tcp(lab, report, "h1", "h16")
        link_failure(lab, report, "h1", "h16")
        firewall(lab, report, ctl, cfg, "h1", "h16")
        zero_trust(lab, report, ctl, cfg)
        xdp_flood(lab, report, ctl, metrics_port, "h16")
        canary(lab, report, ctl, cfg, metrics_port)
        chain(lab, report, folder)
        time.sleep(5.5)  # one stats interval: per-rule counters reach /metrics
        names = (
            "switches",
            "links",
            "hosts",
            "flows",
            "packet_ins",
            "of_errors",
            "firewall_rule_packets",
        )
        m = {f"osken_{n}": metric(metrics_port, f"osken_{n}") for n in names}
        report.add(
            "controller metrics",
            m.get("osken_switches") == 20,
            f"{m.get('osken_switches', 0):.0f} switches, {m.get('osken_links', 0):.0f} "
            f"links, {m.get('osken_hosts', 0):.0f} hosts, {m.get('osken_flows', 0):.0f} "
            f"flows, {m.get('osken_packet_ins', 0):.0f} packet-ins, "
            f"{m.get('osken_of_errors', 0):.0f} switch errors, "
            f"{m.get('osken_firewall_rule_packets', 0):.0f} packets counted by rules",
        )
    waypoint(report, folder)
    failover(report, folder)
    print()
    print("report")
    for what, ok, detail in report.rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {what:45s} {detail}")
    print(f"{'all checks passed' if report.ok else 'SOME CHECKS FAILED'}; log: {ctl.log_path}")
    if report.ok:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"the lab's files are kept for a look: {folder}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
