"""Traces against Open vSwitch's own ofproto/trace in Mininet (issue 16): the verdict agrees
with real traffic, and the deciding rule is named with its file and line (firewall rules,
NetworkPolicy rules), through `osken-trace` and `GET /api/v1/trace` on the metrics port."""

import json
import subprocess
import sys
import urllib.request

from topologies.controller_process import free_port
from topologies.linear import LinearTopo
from topologies.serviceslab import BACKENDS, IPS, PORT, VIP, service_config, services_lab

CONFIG = """\
namespaces:
  - {name: prod, labels: {team: a}}
endpoints:
  - {name: h1, namespace: prod, ip: 10.0.0.1, labels: {app: client}}
  - {name: h2, namespace: prod, ip: 10.0.0.2, labels: {app: web}}
  - {name: h3, namespace: prod, ip: 10.0.0.3, labels: {app: db}}
firewall:
  blocked_ips: [10.0.0.99]
  rules:
    - {action: deny, protocol: tcp, port: 22, source: 0.0.0.0/0}
    - {action: allow, protocol: tcp, port: "80-90"}
  xdp: {mode: "off"}
policies: [netpol.yaml]
"""
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: prod}
spec:
  podSelector:
    matchLabels: {app: db}
  ingress:
    - from:
        - podSelector:
            matchLabels: {app: web}
      ports:
        - {protocol: TCP, port: 5432}
"""


def policy_lab(controller, lab, tmp_path, config: str):
    """The firewall and microseg on `config` (with POLICY beside it) over a three-switch
    line: (config path, metrics port, controller, lab)."""
    (tmp_path / "netpol.yaml").write_text(POLICY)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(config)
    port = free_port()
    ctl = controller(
        ["apps/firewall", "apps/microseg"],
        config=str(cfg),
        extra=["--prometheus-port", str(port)],
    )
    return cfg, port, ctl, lab(LinearTopo(3), ctl.port)


def test_trace_names_the_deciding_rule_and_agrees_with_traffic(controller, lab, tmp_path):
    cfg, port, ctl, net = policy_lab(controller, lab, tmp_path, CONFIG)
    net.serve("h3", "tcp:5432", "tcp:22")
    net.serve("h2", "tcp:85")
    assert net.wait_ping("h1", "h2"), ctl.log()[-2000:]
    net.ping("h2", "h3", count=1)  # policy drops it, but the ARP before it makes h3 heard

    def trace(src, dst, proto):
        cmd = [sys.executable, "-m", "controller.trace.cli", src, dst, proto, "--json"]
        done = subprocess.run(
            cmd + ["--prometheus-port", str(port)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # the firewall's deny, by its line in lab.yaml
    ssh = trace("10.0.0.1", "10.0.0.3", "tcp/22")
    assert ssh["verdict"] == "drop" and not net.connects("h1", "h3", "tcp", 22)
    rule = ssh["decided_by"]["rule"]
    assert (rule["kind"], rule["file"], rule["line"]) == ("rule", str(cfg), 10)
    assert rule["text"] == "{action: deny, protocol: tcp, port: 22, source: 0.0.0.0/0}"
    assert ssh["hops"][0]["source"] == "switch" and ssh["hops"][0]["switch"] == "s1"

    # microseg's default deny for the db, and its allow rule for the web tier
    denied = trace("10.0.0.1", "10.0.0.3", "tcp/5432")
    assert denied["verdict"] == "drop" and not net.connects("h1", "h3", "tcp", 5432)
    assert denied["decided_by"]["rule"]["policies"] == ["NetworkPolicy prod/db-from-web"]
    allowed = trace("10.0.0.2", "10.0.0.3", "tcp/5432")
    assert allowed["verdict"] == "forward" and net.connects("h2", "h3", "tcp", 5432)
    rule = allowed["decided_by"]["rule"]
    assert (rule["policy"], rule["rule"], rule["file"], rule["line"]) == (
        "prod/db-from-web",
        0,
        str(tmp_path / "netpol.yaml"),
        8,
    )
    assert [h["switch"] for h in allowed["hops"]] == ["s2", "s3"]
    assert allowed["hops"][-1]["outputs"][0]["hosts"] == ["00:00:00:00:00:03"]

    # the firewall's allow across two switches, and the plain-text answer
    web = trace("10.0.0.1", "10.0.0.2", "tcp/85")
    assert web["verdict"] == "forward" and net.connects("h1", "h2", "tcp", 85)
    url = f"http://127.0.0.1:{port}/api/v1/trace?src=10.0.0.1&dst=10.0.0.2&proto=tcp&dport=85"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert json.load(reply)["hops"][0]["tables"][1]["rule"]["line"] == 11
    text = subprocess.run(
        [sys.executable, "-m", "controller.trace.cli", "10.0.0.1", "10.0.0.3", "tcp/22"]
        + ["--prometheus-port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert text.startswith("10.0.0.1 -> 10.0.0.3 tcp/22: DROP\n  decided by s1 table 1")
    assert f"rule: rule at {cfg}:10:" in text


def test_a_vip_is_traced_to_the_backend_its_select_group_takes(tmp_path):
    """Method switch, all weight on v1-a: the switch's own select group takes v1-a, as a real
    connection does, and the trace names the service and the group's buckets."""
    weights = {"v1-a": 100, "v2-a": 0}
    with services_lab(tmp_path, weights) as env:
        env.apply(service_config(weights, method="switch"))
        assert env.lab.spread("h11", VIP, PORT, 4) == {BACKENDS["v1-a"]: 4}
        url = f"http://127.0.0.1:{env.metrics_port}/api/v1/trace?src=10.0.0.1&dst={VIP}"
        with urllib.request.urlopen(url + f"&proto=tcp&dport={PORT}", timeout=30) as reply:
            answer = json.load(reply)
    assert answer["verdict"] == "forward", json.dumps(answer, indent=1)
    # Open vSwitch hashes the select group in the datapath, where ofproto/trace stops: the
    # bucket and what follows it on that switch come from the model, the other switches answer
    first, *rest = answer["hops"]
    assert first["source"] == "switch+model" and "is hashed in the datapath" in first["notes"][0]
    assert {h["source"] for h in rest} == {"switch"}
    rule = answer["decided_by"]["rule"]
    assert (rule["service"], rule["method"], rule["kind"]) == (
        "user-service",
        "switch",
        "new connection",
    )
    assert [b["backend"]["endpoint"] for b in rule["buckets"]] == ["v1-a"]
    last = answer["hops"][-1]
    assert last["switch"] == "lf2" and last["outputs"][0]["hosts"], last
    steered = [t["rule"] for t in answer["hops"][0]["tables"] if "backend" in t.get("rule", {})]
    assert steered[-1]["backend"]["ip"] == IPS[BACKENDS["v1-a"]]


def test_an_exact_vip_is_traced_through_the_pick_the_next_connection_really_gets(tmp_path):
    """Method exact, 50/50: the controller picks each connection, so the trace goes on
    through the pick it would make next (the model, its turn not taken); a real connection
    made right after each trace lands on the backend the trace named."""
    weights = {"v1-a": 50, "v2-a": 50}
    with services_lab(tmp_path, weights) as env:
        env.apply(service_config(weights))
        assert sum(env.lab.spread("h11", VIP, PORT, 1).values()) == 1  # h11 is heard
        url = f"http://127.0.0.1:{env.metrics_port}/api/v1/trace?src=10.0.0.1&dst={VIP}"
        picked = []
        for _ in range(4):
            with urllib.request.urlopen(url + f"&proto=tcp&dport={PORT}", timeout=30) as reply:
                answer = json.load(reply)
            assert answer["verdict"] == "forward", json.dumps(answer, indent=1)
            first = answer["hops"][0]
            assert first["source"] == "switch+model", first
            backend = first["picked"]["backend"]["endpoint"]
            host = BACKENDS[backend]
            assert answer["hops"][-1]["outputs"][0]["hosts"], answer["hops"][-1]
            assert env.lab.spread("h11", VIP, PORT, 1) == {host: 1}
            picked.append(backend)
    assert sorted(picked) == ["v1-a", "v1-a", "v2-a", "v2-a"], picked


CONFIG6 = """\
namespaces:
  - {name: prod, labels: {team: a}}
endpoints:
  - {name: h1, namespace: prod, ip: "fd00::1", mac: "00:00:00:00:00:01", labels: {app: client}}
  - {name: h2, namespace: prod, ip: "fd00::2", mac: "00:00:00:00:00:02", labels: {app: web}}
  - {name: h3, namespace: prod, ip: "fd00::3", mac: "00:00:00:00:00:03", labels: {app: db}}
firewall:
  rules:
    - {action: deny, protocol: tcp, port: 22, source: "::/0"}
  xdp: {mode: "off"}
policies: [netpol.yaml]
"""
LISTEN6 = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6)\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('::',int(sys.argv[1])))\n"
    "s.listen(16)\n"
    "print('serving',flush=True)\n"
    "while True: s.accept()[0].close()\n"
)
CONNECT6 = "import socket,sys; socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1)"


def test_ipv6_is_traced_on_the_switches_and_agrees_with_traffic(controller, lab, tmp_path):
    """IPv6 addresses: the firewall's deny, the policy's allow and its default deny and plain
    L2 forwarding, each answered by the switches' own ofproto/trace and each as real IPv6
    traffic goes."""
    cfg, port, ctl, net = policy_lab(controller, lab, tmp_path, CONFIG6)
    for i in (1, 2, 3):
        net.host(f"h{i}").cmd(f"ip -6 addr add fd00::{i}/64 dev h{i}-eth0 nodad")
    for name, listen in (("h3", 22), ("h3", 5432)):
        net.run_server(name, ["/usr/bin/python3", "-c", LISTEN6, str(listen)])
    assert net.wait_ping("h1", "h2"), ctl.log()[-2000:]  # the IPv4 fabric is up
    for src, dst in (("h1", "fd00::2"), ("h2", "fd00::3"), ("h3", "fd00::1")):
        net.host(src).cmd(f"ping -6 -c 2 -W 1 {dst}")  # each host heard over IPv6

    def connects(src: str, dst: str, dport: int) -> bool:
        out = net.host(src).cmd(f"/usr/bin/python3 -c '{CONNECT6}' {dst} {dport}; echo rc=$?")
        return "rc=0" in out

    def trace(src: str, dst: str, proto: str, dport: int | None = None) -> dict:
        query = f"src={src}&dst={dst}&proto={proto}" + (f"&dport={dport}" if dport else "")
        url = f"http://127.0.0.1:{port}/api/v1/trace?{query}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.load(reply)

    ssh = trace("fd00::1", "fd00::3", "tcp", 22)
    assert ssh["verdict"] == "drop" and not connects("h1", "fd00::3", 22), ssh
    assert (ssh["decided_by"]["rule"]["file"], ssh["decided_by"]["rule"]["line"]) == (str(cfg), 9)
    assert {h["source"] for h in ssh["hops"]} == {"switch"}

    denied = trace("fd00::1", "fd00::3", "tcp", 5432)
    assert denied["verdict"] == "drop" and not connects("h1", "fd00::3", 5432), denied
    assert denied["decided_by"]["rule"]["policies"] == ["NetworkPolicy prod/db-from-web"]
    allowed = trace("fd00::2", "fd00::3", "tcp", 5432)
    assert allowed["verdict"] == "forward" and connects("h2", "fd00::3", 5432), allowed
    assert allowed["decided_by"]["rule"]["policy"] == "prod/db-from-web"
    assert {h["source"] for h in allowed["hops"]} == {"switch"}
    assert allowed["hops"][-1]["outputs"][0]["hosts"] == ["00:00:00:00:00:03"]

    ping = trace("fd00::1", "fd00::2", "icmp")
    assert ping["verdict"] == "forward", ping
    assert ", 0% packet loss" in net.host("h1").cmd("ping -6 -c 1 -W 1 fd00::2")
    assert [h["switch"] for h in ping["hops"]] == ["s1", "s2"]
