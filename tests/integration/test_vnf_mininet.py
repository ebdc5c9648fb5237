"""VNFs in Mininet: the seed's Deployment as real containers in a chain, with real TCP.

Linear lab: h1 on s1, h2 on s2. The seed's virtual-firewall (2 replicas) is plugged into s1;
the chain sends h1 -> h2 on ports 80, 443 and 22 through it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from scapy.all import ICMP, IP, TCP, Dot1Q, Ether, IPv6, sendp

from controller.pipeline import PIPELINE
from tests.integration.conftest import require_lab
from tests.vlanlab import Answer, Case, cases, expected, fake_answer, fake_vnf_lab
from topologies.harness import ofctl
from topologies.vnflab import CHAIN, ENDPOINTS, captured, vnf_lab
from topologies.wait import until
from vnf import runtime
from vnf.deploy import Deployer
from vnf.manifest import load_manifest
from vnf.runtime import DockerRuntime


def require_docker() -> None:
    if not DockerRuntime.available():
        if os.environ.get("CI"):
            pytest.fail("no Docker daemon (scripts/setup.sh starts one)")
        pytest.skip("no Docker daemon")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    require_docker()
    with vnf_lab(tmp_path_factory.mktemp("vnf")) as lab:
        yield lab


def test_replicas_run_with_the_seeds_limits(env):
    status = env.deployer.status("virtual-firewall")
    assert status["runtime"] == "docker" and len(status["replicas"]) == 2
    for r in status["replicas"]:
        state = r["state"]
        assert state["running"] and r["ports_present"]
        assert state["memory"] == 512 * 2**20 and state["nano_cpus"] == 500_000_000
        inspect = json.loads(
            subprocess.run(["/usr/bin/docker", "inspect", r["name"]], capture_output=True).stdout
        )[0]["HostConfig"]
        assert inspect["MemoryReservation"] == 256 * 2**20 and inspect["CapAdd"] == ["NET_ADMIN"]
        cg = f"/sys/fs/cgroup/memory/docker/{state['id']}/memory.limit_in_bytes"
        with open(cg) as fh:
            assert int(fh.read()) == 512 * 2**20
        with open(f"/sys/fs/cgroup/cpu/docker/{state['id']}/cpu.cfs_quota_us") as fh:
            assert int(fh.read()) == 50_000  # of a 100 ms period: half a core
        assert r["agent"]["ok"] and r["agent"]["rules"] == 3


def test_the_seed_rules_are_enforced_by_the_vnf_inside_the_chain(env):
    before = sum(ofctl_count("s1", p, "rx") for p in vnf_ports(env))
    assert env.open_ports() == {80: True, 443: True, 22: False}
    assert sum(ofctl_count("s1", p, "rx") for p in vnf_ports(env)) > before  # through them


def test_each_connection_crosses_one_replica_both_ways(env):
    """Both ends hash with Open vSwitch's symmetric L4 dp_hash over the same replicas in the
    same order, so a connection and its replies meet the same replica (a stateful VNF's need)."""
    replicas = env.deployer.load("virtual-firewall")["replicas"]
    used = set()
    for _ in range(20):
        before = {p: ofctl_count("s1", p, "rx") for r in replicas for p in r["ports"]}
        assert env.lab.connects("h1", "h2", "tcp", 80)
        grew = {p for r in replicas for p in r["ports"] if ofctl_count("s1", p, "rx") > before[p]}
        forward = [i for i, r in enumerate(replicas) if r["ports"][1] in grew]  # left by side b
        back = [i for i, r in enumerate(replicas) if r["ports"][0] in grew]  # left by side a
        assert forward == back and len(forward) == 1, (forward, back)
        used.add(forward[0])
    assert used == {0, 1}  # and the connections do spread


def test_a_changed_configmap_is_applied_without_a_restart_and_bad_rules_change_nothing(env):
    started = [r["state"]["started"] for r in env.deployer.status("virtual-firewall")["replicas"]]
    path = env.folder / "vnf.yml"
    seed = path.read_text()
    try:
        path.write_text(seed.replace('"port": 443', '"port": 8443'))  # 443 no longer allowed...
        path.write_text(path.read_text().replace('"port": 22', '"port": 443'))  # ...but denied
        env.deployer.deploy(load_manifest(str(path)), "s1")
        env.wait_open(443, False)
        assert env.open_ports() == {80: True, 443: False, 22: True}
        path.write_text(seed.replace('"rules": [', '"rules": [ oops'))
        env.deployer.deploy(load_manifest(str(path)), "s1")
        time.sleep(1.5)
        assert env.open_ports() == {80: True, 443: False, 22: True}  # the old rules hold
        agents = [r["agent"] for r in env.deployer.status("virtual-firewall")["replicas"]]
        assert all(not a["ok"] and "not JSON" in a["error"] for a in agents)
    finally:
        path.write_text(seed)
        env.deployer.deploy(load_manifest(str(path)), "s1")
    env.wait_open(22, False)
    now = [r["state"]["started"] for r in env.deployer.status("virtual-firewall")["replicas"]]
    assert now == started  # never restarted


def test_a_syn_from_an_allowed_port_to_a_denied_one_does_not_pass(env):
    """`nmap --source-port 80`: a stateless filter lets replies out by their source port; a
    stateful one judges each new connection by where it goes."""
    sent = [(80, 22, "S"), (443, 22, "S"), (80, 80, "S"), (40001, 443, "S")]
    assert env.crossing("h1", "h2", "tcp", sent) == {(80, 80), (40001, 443)}


def test_tcp_packets_of_no_connection_do_not_pass_either_way(env):
    """Conntrack's view: a connection opens with a SYN; a bare ACK, a FIN, an RST or a SYN-ACK
    that answers nothing is dropped, even on an allowed port, in both directions."""
    to_server = [(40010, 80, "A"), (40011, 80, "SA"), (40012, 443, "F"), (40013, 80, "R")]
    to_client = [(80, 40020, "SA"), (443, 40021, "A"), (80, 40022, "PA")]
    seen = {
        "to server": env.crossing("h1", "h2", "tcp", [*to_server, (40014, 80, "S")]),
        "to client": env.crossing("h2", "h1", "tcp", to_client),
    }
    assert seen == {"to server": {(40014, 80)}, "to client": set()}
    assert env.open_ports() == {80: True, 443: True, 22: False}  # real connections still do


UDP_CHAIN = """\
  - name: dns-via-firewall
    from_labels: {role: client}
    to_labels: {role: web}
    protocol: udp
    ports: [53, 123]
    through: [virtual-firewall]
"""
DENY_BUT_WEB_AND_DNS = """\
{"default": "deny", "rules": [
  {"action": "allow", "protocol": "tcp", "port": 80},
  {"action": "allow", "protocol": "tcp", "port": 443},
  {"action": "allow", "protocol": "udp", "port": 53}
]}
"""


def test_udp_replies_pass_by_conntrack_never_by_source_port(env):
    env.lab.serve("h2", "udp:53", "udp:123")
    env.reconfigure(ENDPOINTS + CHAIN + UDP_CHAIN)
    env.set_rules(DENY_BUT_WEB_AND_DNS)
    try:
        env.wait_open(53, True, proto="udp")  # a request and its answer, once steered
        assert not env.lab.connects("h1", "h2", "udp", 123)  # the default: deny
        seen = {
            "to server": env.crossing("h1", "h2", "udp", [(53, 123, ""), (40030, 53, "")]),
            "to client": env.crossing("h2", "h1", "udp", [(53, 40031, "")]),  # asked nothing
        }
        assert seen == {"to server": {(40030, 53)}, "to client": set()}
        assert env.open_ports() == {80: True, 443: True, 22: False}
    finally:
        env.set_rules(None)
        env.reconfigure(ENDPOINTS + CHAIN)


def test_a_rules_change_applies_to_open_connections_too(env):
    """A reply passes only while its connection is allowed: revoking port 443 stops the
    connections already open to it (port 80's go on)."""
    web = env.lab.hold("h1", "10.0.0.2", 80, 4, seconds=6)
    tls = env.lab.hold("h1", "10.0.0.2", 443, 4, seconds=6)
    try:
        env.set_rules(
            '{"rules": [{"action": "allow", "protocol": "tcp", "port": 80},'
            ' {"action": "deny", "protocol": "tcp", "port": 443}]}'
        )
        web_out, tls_out = (
            json.loads(p.communicate(timeout=20)[0].splitlines()[-1]) for p in (web, tls)
        )
    finally:
        env.set_rules(None)
    assert web_out["broken"] == 0 and tls_out["broken"] == 4, (web_out, tls_out)
    env.wait_open(443, True)


def through_replica(env, into: str, frame, bpf: str) -> str:
    """The VNF alone, no switch: `frame` sent into replica 0 by its switch-side port `into`
    ("a" or "b"); tcpdump's lines for what leaves it by the other one and matches `bpf`."""
    a, b = env.deployer.load("virtual-firewall")["replicas"][0]["ports"]
    send_on, watch = (a, b) if into == "a" else (b, a)
    return captured(
        subprocess.Popen, watch, bpf, lambda: sendp(frame, iface=send_on, verbose=False)
    )


def lab_frames(env, reply: bool = False):
    """Ether/IP from h1 to h2 (from h2 to h1 if `reply`), with their real addresses."""
    src, dst = (env.lab.host(h) for h in (("h2", "h1") if reply else ("h1", "h2")))
    return Ether(src=src.MAC(), dst=dst.MAC()) / IP(src=src.IP(), dst=dst.IP())


def test_icmp_errors_pass_for_a_tracked_connection_only(env):
    syn = TCP(sport=40050, dport=80, flags="S", seq=1000)
    assert "Flags [S]" in through_replica(env, "a", lab_frames(env) / syn, "tcp port 40050")

    def unreachable(quoting) -> bool:
        error = (
            ICMP(type=3, code=3)
            / IP(src=env.lab.host("h1").IP(), dst=env.lab.host("h2").IP())
            / quoting
        )
        frame = lab_frames(env, reply=True) / error
        return "unreachable" in through_replica(env, "b", frame, "icmp")

    seen = {
        "about the connection": unreachable(syn),
        "about nothing": unreachable(TCP(sport=40051, dport=80, flags="S", seq=1000)),
    }
    assert seen == {"about the connection": True, "about nothing": False}


def test_only_ipv4_and_arp_cross_the_vnf(env):
    """The rules are IPv4: IPv6, or IPv4 behind a VLAN tag, would go unjudged, so neither
    crosses (even with the seed's default, allow)."""
    ether, ip = lab_frames(env), lab_frames(env)[IP]
    mac = Ether(src=ether.src, dst=ether.dst)
    frames = {
        "ipv4": (ether / TCP(sport=40060, dport=80, flags="S"), "tcp port 40060"),
        "ipv6": (mac / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40061, dport=80), "ip6"),
        "vlan": (
            mac / Dot1Q(vlan=5) / ip / TCP(sport=40062, dport=80),
            "port 40062 or (vlan and port 40062)",
        ),
    }
    seen = {k: "Flags [S]" in through_replica(env, "a", f, bpf) for k, (f, bpf) in frames.items()}
    assert seen == {"ipv4": True, "ipv6": False, "vlan": False}


def test_without_br_netfilter_the_vnf_passes_nothing(env, monkeypatch):
    """No conntrack, no rules: with net.bridge.bridge-nf-call-iptables off in its namespace,
    bridged IPv4 would never reach the rules, so the agent fails closed and says why."""
    env.deployer.delete("virtual-firewall")
    monkeypatch.setattr(runtime, "SYSCTLS", ("net.bridge.bridge-nf-call-iptables=0",))
    try:
        env.deploy()

        def reported() -> list:
            """Every replica's agent status, once each has one (else [])."""
            found = [r["agent"] for r in env.deployer.status("virtual-firewall")["replicas"]]
            return found if all(found) else []

        agents = until(reported, 10, interval=0.2) or [
            r["agent"] for r in env.deployer.status("virtual-firewall")["replicas"]
        ]
        assert all(not a["ok"] and "bridge-nf-call-iptables" in a["error"] for a in agents)
        assert env.open_ports() == {80: False, 443: False, 22: False}
    finally:
        env.deployer.delete("virtual-firewall")
        monkeypatch.undo()
        env.deploy()
    env.wait_open(80, True)


def test_a_killed_replica_is_taken_out_and_traffic_recovers_within_2_s(env):
    victim = env.deployer.status("virtual-firewall")["replicas"][0]["name"]
    subprocess.run(["/usr/bin/docker", "kill", victim], check=True, capture_output=True)
    start = time.time()
    ok_in_a_row = 0
    while ok_in_a_row < 10:  # fresh connections, so flows hash anew each time
        ok_in_a_row = ok_in_a_row + 1 if env.lab.connects("h1", "h2", "tcp", 80, 0.5) else 0
        assert time.time() - start < 10
    recovered = time.time() - start - 10 * 0.05  # less the ten checks' own time, roughly
    assert recovered < 2.0, recovered
    assert env.open_ports()[22] is False  # still through the firewall, never around it
    env.deployer.deploy(load_manifest(env.manifest_path), "s1")  # back to two
    assert all(r["state"]["running"] for r in env.deployer.status("virtual-firewall")["replicas"])


def test_removing_the_chain_restores_the_direct_path(env):
    env.reconfigure(ENDPOINTS)
    try:
        env.wait_open(22, True)  # the firewall VNF would have dropped it: it is bypassed
        assert env.open_ports() == {80: True, 443: True, 22: True}
        steering = [
            line
            for line in ofctl("dump-flows", "s1", f"table={PIPELINE.table('chains')}").splitlines()
            if "group:" in line
        ]
        assert steering == []
    finally:
        env.reconfigure(ENDPOINTS + CHAIN)
    env.wait_open(22, False)


def test_without_docker_the_replicas_run_as_namespace_hosts(env, tmp_path, caplog):
    env.deployer.delete("virtual-firewall")
    plain = Deployer(state_dir=str(tmp_path / "state"), use_docker=False)
    try:
        plain.deploy(load_manifest(env.manifest_path), "s1")
        assert "namespace host" in caplog.text
        env.wait_open(80, True)
        assert env.open_ports() == {80: True, 443: True, 22: False}
        assert all(r["state"]["running"] for r in plain.status("virtual-firewall")["replicas"])
    finally:
        plain.delete("virtual-firewall")
    env.deployer.deploy(load_manifest(env.manifest_path), "s1")


def test_tagged_frames_from_a_host_go_nowhere_and_the_fake_network_agrees(env, tmp_path):
    """Every tag stack (the chain's own VIDs 1-4 included) on TCP 22, 80 and 8080 from h1, and
    the untagged frames as a control: Open vSwitch, the fake network and the promise agree."""
    env.wait_open(22, False)  # the replicas' rules are in force
    tagged_drops = classify_tag_drops("s1")
    every = cases()
    real = real_answers(env, every)
    fake = fake_vnf_lab(tmp_path)
    wrong = [
        (str(c), real[c], fake_answer(fake, c), expected(c))
        for c in every
        if not real[c] == fake_answer(fake, c) == expected(c)
    ]
    assert wrong == []  # (case, Open vSwitch, fake, promise)
    sent_tagged = 3 * sum(1 for c in every if c.tags)
    assert classify_tag_drops("s1") - tagged_drops >= sent_tagged  # the core's entry did it


def test_an_802_1ad_tag_from_a_host_is_dropped_too(env):
    before = classify_tag_drops("s1")
    case = Case((5,), 8080, 43000)
    assert real_answers(env, [case], tpid=0x88A8)[case] == Answer(False, False, False)
    assert classify_tag_drops("s1") - before >= 3


SENDER = """
import json, sys
from scapy.all import IP, TCP, Dot1AD, Dot1Q, Ether, sendp

frames = []
for tags, sport, dport in json.loads(sys.argv[1]):
    f = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
    for i, vid in enumerate(tags):
        f = f / (Dot1AD if i == 0 and sys.argv[2] == str(0x88A8) else Dot1Q)(vlan=vid)
    frames.append(f / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=dport, flags="S"))
sendp(frames * 3, iface="h1-eth0", inter=0.005, verbose=False)
"""


def real_answers(env, every: list[Case], tpid: int = 0x8100) -> dict[Case, Answer]:
    """Send each case's SYN from h1 three times (scapy: the kernel has no 802.1Q devices) and
    read tcpdump on h2 and on every replica port (frames that came out of a VNF)."""
    replica_ports = vnf_ports(env)
    h2 = env.lab.host("h2")
    captures = [h2.popen(tcpdump("h2-eth0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    captures += [
        subprocess.Popen(tcpdump(p, "in"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in replica_ports
    ]
    for proc in captures:
        said = b""
        while b"listening on" not in said:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"tcpdump did not start: {said.decode()}")
            said += line
    spec = json.dumps([[c.tags, c.sport, c.dport] for c in every])
    sender = env.lab.host("h1").popen([sys.executable, "-c", SENDER, spec, str(tpid)])
    assert sender.wait(timeout=60) == 0
    time.sleep(1.0)
    seen = []
    for proc in captures:
        proc.send_signal(signal.SIGINT)
        seen.append(proc.communicate(timeout=10)[0].decode())
    at_h2, out_of_vnfs = seen[0], "".join(seen[1:])
    return {
        c: Answer(
            f"10.0.0.1.{c.sport} > 10.0.0.2.{c.dport}:" in at_h2,
            f"10.0.0.2.{c.dport} > 10.0.0.1.{c.sport}:" in at_h2,
            f"10.0.0.1.{c.sport} > 10.0.0.2.{c.dport}:" in out_of_vnfs,
        )
        for c in every
    }


def tcpdump(interface: str, direction: str = "inout") -> list[str]:
    """Every frame, tagged or not, headers only; stops at SIGINT (or after 60 s)."""
    return ["timeout", "60", "tcpdump", "-l", "-n", "-e", "-Q", direction, "-i", interface]


def classify_tag_drops(switch: str) -> int:
    """Packets the core's classify entry for tagged frames has dropped."""
    flows = ofctl("dump-flows", switch, "table=0,vlan_tci=0x1000/0x1000")
    return sum(int(n) for n in re.findall(r"n_packets=(\d+).*actions=drop", flows))


def vnf_ports(env) -> list[str]:
    return [p for r in env.deployer.load("virtual-firewall")["replicas"] for p in r["ports"]]


def ofctl_count(switch: str, port_name: str, direction: str) -> int:
    """Packets the switch sent to ("tx") or got from ("rx") one port."""
    out = ofctl("dump-ports", switch, port_name)
    m = re.search(rf"{direction} pkts=(\d+)", out)
    return int(m.group(1)) if m else 0
