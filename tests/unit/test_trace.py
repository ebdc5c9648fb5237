"""Traces (issue 16): ofproto/trace's text read, and a trace on the fake network naming the
rule (file, line, text) or policy (namespace/name, rule index) that decided."""

import json
import os
from collections import Counter
from dataclasses import replace

import pytest

from apps.firewall import Firewall
from apps.l2_learning import L2Learning
from apps.microseg import Microseg
from controller.config import load_config, load_document
from controller.core import Core
from controller.trace.ovs import Step, SwitchTrace, SwitchUnreachable, parse_trace
from controller.trace.packet import ovs_flow, parse_ovs_flow, probe
from controller.trace.tracer import TraceError, Tracer
from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

TRACES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ofproto-trace")
IP = {mac: f"10.0.0.{i}" for i, mac in enumerate(MACS[:6], start=1)}


def recorded(name: str) -> SwitchTrace:
    with open(os.path.join(TRACES, name + ".txt")) as f:
        return parse_trace(f.read())


# --- Open vSwitch's text (recorded from ovs-vswitchd 3.1 on a Mininet lab) ----------------------


def test_a_firewall_drop_reads_as_two_steps_and_no_output():
    t = recorded("s1-tcp22-firewall-deny")
    assert [(s.table, s.priority, s.cookie) for s in t.steps] == [
        (0, 200, 0x0200000000000000),
        (1, 40344, 0x0300000000009D98),
    ]
    assert t.steps[1].match == "tcp,metadata=0/0x1,tp_dst=22"
    assert t.steps[1].actions == ("drop",)
    assert (t.outputs, t.controller) == ((), False)


def test_recirculation_is_followed_and_metadata_kept_per_step():
    t = recorded("s2-tcp5432-microseg-allow")
    assert [s.table for s in t.steps] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11]
    ingress = t.steps[7]
    assert (ingress.table, ingress.priority) == (6, 2000)
    # written in tables 2 and 3 before the recirculation, seen by table 6 after it
    assert ingress.packet["metadata"] == 0x2000300
    assert ingress.packet["ct_state"] == 0x21  # trk|new, as ofproto/trace resumes conntrack
    assert t.steps[2].packet.get("metadata", 0) == 0  # table 2 saw it before its own write
    assert t.outputs == (3,)


def test_a_fabric_hop_and_a_blocked_source():
    assert recorded("s3-fabric-forward").outputs == (1,)
    blocked = recorded("s1-blocked-ip")
    assert blocked.steps[-1].cookie & 0xFFFF == 0xFFFF and blocked.outputs == ()


def test_text_that_is_not_a_trace_is_refused():
    with pytest.raises(ValueError, match="not an ofproto/trace answer"):
        parse_trace("ovs-appctl: no such bridge\n")


def test_the_packet_as_ovs_spells_it_and_back():
    pkt = probe("10.0.0.1", "10.0.0.2", "udp", 53, 5000, MACS[0], MACS[1])
    text = ovs_flow({**pkt, "in_port": 3})
    assert text == (
        "udp,in_port=3,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,"
        "nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=5000,tp_dst=53"
    )
    back = parse_ovs_flow(text)
    assert {k: back[k] for k in pkt} == pkt


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("10.0.0.1", "nope", "tcp", 80, None), "dst: 'nope' is not an IPv4 or IPv6 address"),
        (("10.0.0.1", "fd00::2", "tcp", 80, None), "one is IPv4, the other IPv6"),
        (("10.0.0.1", "10.0.0.2", "gre", 80, None), "proto: 'gre' is not one of"),
        (("10.0.0.1", "10.0.0.2", "tcp", None, None), "dport: None is not a port"),
        (("10.0.0.1", "10.0.0.2", "udp", 70000, None), "dport: 70000 is not a port"),
    ],
)
def test_a_packet_that_cannot_be_built_says_why(args, message):
    with pytest.raises(ValueError, match=message):
        probe(*args, MACS[0], MACS[1])


# --- rule sources: the YAML marks of the text as read ----------------------------------------


def test_a_rule_is_located_and_quoted_as_written(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(
        '{"rules": [\n  {"action": "allow", "port": 80},\n  {"action": "deny",\n'
        '   "port": 22}\n]}\n'
    )
    doc = load_document(str(path), json_only=True)
    assert doc.source(("rules", 0)) == (2, '{"action": "allow", "port": 80}')
    assert doc.source(("rules", 1)) == (3, '{"action": "deny",\n   "port": 22}')
    assert doc.source(("rules", 5)) == (None, "")
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  rules:\n    - action: deny\n      protocol: tcp\n")
    assert load_config(str(cfg)).source(("firewall", "rules", 0)) == (
        3,
        "action: deny\n      protocol: tcp",
    )


# --- a trace on the fake network ------------------------------------------------------------


class FakeSwitches:
    """The fake switches asked as ofproto/trace asks Open vSwitch: their tables, walked."""

    def __init__(self, net, unreachable=()):
        self.net, self.unreachable = net, set(unreachable)

    def bridge(self, dpid):
        return f"s{dpid}"

    def trace(self, dpid, pkt):
        if dpid in self.unreachable:
            raise SwitchUnreachable(f"no Open vSwitch bridge here has datapath id {dpid:016x}")
        result = self.net.switches[dpid].lookup(dict(pkt))
        steps = tuple(
            Step(e.flow.table, e.priority, e.cookie, "", ("goto",), {}, e.flow)
            for e in result.matched
        )
        final = result.outputs[0][1] if result.outputs else pkt
        return SwitchTrace(steps, tuple(result.ports()), bool(result.to_controller), final)


POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-x, namespace: z}
spec:
  podSelector: {}
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {ns: y}}
      ports: [{protocol: TCP, port: 8080}]
    - from:
        - namespaceSelector: {matchLabels: {ns: x}}
      ports: [{protocol: TCP, port: 80}]
"""
CONFIG = """\
namespaces:
  - {name: x, labels: {ns: x}}
  - {name: y, labels: {ns: y}}
  - {name: z, labels: {ns: z}}
endpoints:
  - {name: x-a, namespace: x, ip: 10.0.0.1}
  - {name: x-b, namespace: x, ip: 10.0.0.2}
  - {name: y-a, namespace: y, ip: 10.0.0.3}
  - {name: y-b, namespace: y, ip: 10.0.0.4}
  - {name: z-a, namespace: z, ip: 10.0.0.5}
  - {name: z-b, namespace: z, ip: 10.0.0.6}
firewall:
  rules_file: rules.json
  blocked_ips: [10.0.0.4]
policies: [netpol.yaml]
"""
RULES = (
    '{"rules": [\n  {"action": "allow", "protocol": "tcp", "port": 80},\n'
    '  {"action": "deny", "protocol": "tcp", "port": 22}\n]}\n'
)


def fake_lab(tmp_path, config: str = CONFIG):
    """The fake leaf-spine with L2, the firewall and microseg on `config` (lab.yaml, beside
    netpol.yaml and rules.json in `tmp_path`), every host heard once."""
    (tmp_path / "netpol.yaml").write_text(POLICY)
    (tmp_path / "rules.json").write_text(RULES)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(config)
    core = Core()
    for app in (L2Learning, Firewall, Microseg):
        core.add_app(app)
    core.configure(load_config(str(cfg)), 1000.0)
    net = leaf_spine(core)
    net.now = 1000.0
    net.start()
    for mac, ip in IP.items():  # each host ARPs once: bound, learned, its address heard
        net.send(mac, BROADCAST, 0x0806, arp_spa=ip, arp_tpa="10.0.0.254")
    return net


@pytest.fixture
def lab(tmp_path):
    net = fake_lab(tmp_path)
    return net, Tracer(net.core, FakeSwitches(net), lambda fn: fn()), tmp_path


def delivered(net, src, dst, proto, port):
    fields = {"ip_proto": {"tcp": 6, "icmp": 1}[proto]}
    if proto == "tcp":
        fields |= {"tcp_src": 40000, "tcp_dst": port, "tcp_flags": 0x002}
    got = net.send(src, dst, 0x0800, ipv4_src=IP[src], ipv4_dst=IP[dst], **fields)
    return dst in got.hosts


def test_a_firewall_deny_names_the_rules_file_line_and_text(lab):
    net, tracer, tmp = lab
    answer = tracer.trace("10.0.0.1", "10.0.0.3", "tcp", 22)
    assert answer["verdict"] == "drop"
    assert not delivered(net, MACS[0], MACS[2], "tcp", 22)
    decided = answer["decided_by"]
    assert (decided["switch"], decided["stage"], decided["app"]) == ("s201", "firewall", "firewall")
    assert decided["rule"] == {
        "kind": "rule",
        "index": 2,
        "action": "deny",
        "decides": True,
        "description": "deny tcp port 22",
        "file": str(tmp / "rules.json"),
        "line": 3,
        "text": '{"action": "deny", "protocol": "tcp", "port": 22}',
    }
    assert [h["switch"] for h in answer["hops"]] == ["s201"]


def test_a_microseg_allow_names_the_policy_and_rule_index_and_crosses_the_fabric(lab):
    net, tracer, tmp = lab
    answer = tracer.trace("10.0.0.1", "10.0.0.5", "tcp", 80)
    assert answer["verdict"] == "forward"
    assert delivered(net, MACS[0], MACS[4], "tcp", 80)
    decided = answer["decided_by"]
    assert decided["stage"] == "microseg_ingress"
    assert decided["rule"] == {
        "kind": "NetworkPolicy",
        "policy": "z/web-from-x",
        "direction": "ingress",
        "rule": 1,
        "action": "allow",
        "decides": True,
        "file": str(tmp / "netpol.yaml"),
        "line": 10,
    }
    switches = [h["switch"] for h in answer["hops"]]
    assert switches[0] == "s201" and switches[-1] == "s203" and len(switches) == 3
    assert answer["hops"][-1]["outputs"] == [{"port": 3, "name": "s203-eth3", "hosts": [MACS[4]]}]
    firewall = answer["hops"][0]["tables"][1]
    assert firewall["rule"]["line"] == 2 and firewall["rule"]["action"] == "allow"


def test_default_deny_names_the_isolating_policy(lab):
    net, tracer, tmp = lab
    answer = tracer.trace("10.0.0.2", "10.0.0.6", "tcp", 8080)
    assert answer["verdict"] == "drop"
    assert not delivered(net, MACS[1], MACS[5], "tcp", 8080)
    rule = answer["decided_by"]["rule"]
    assert rule["kind"] == "default deny"
    assert rule["policies"] == ["NetworkPolicy z/web-from-x"]
    assert (rule["file"], rule["line"]) == (str(tmp / "netpol.yaml"), 1)


def test_a_blocked_source_is_named_as_such(lab):
    net, tracer, tmp = lab
    answer = tracer.trace("10.0.0.4", "10.0.0.1", "icmp")
    assert answer["verdict"] == "drop"
    rule = answer["decided_by"]["rule"]
    assert rule["kind"] == "blocked_ips" and rule["source"] == "10.0.0.4/32"
    assert (rule["file"], rule["line"], rule["text"]) == (str(tmp / "lab.yaml"), 14, "10.0.0.4")


def test_unknown_addresses_and_unreachable_switches(lab):
    net, tracer, _ = lab
    with pytest.raises(TraceError, match="dst 10.0.0.99: no host known") as err:
        tracer.trace("10.0.0.1", "10.0.0.99", "icmp")
    assert err.value.status == 404
    tracer.switches.unreachable = {201}
    del net.core.desired.flows[201]  # nor does the controller hold a model of it
    answer = tracer.trace("10.0.0.1", "10.0.0.5", "tcp", 80)
    assert answer["verdict"] == "unknown"
    error = answer["hops"][0]["error"]
    assert "no Open vSwitch bridge here" in error and "the controller holds no flows" in error


@pytest.mark.parametrize(
    "args",
    [
        ("10.0.0.1", "10.0.0.5", "tcp", 80),  # microseg allows, across the fabric
        ("10.0.0.1", "10.0.0.3", "tcp", 22),  # the firewall's rule denies
        ("10.0.0.2", "10.0.0.6", "tcp", 8080),  # default deny
        ("10.0.0.4", "10.0.0.1", "icmp"),  # a blocked source
    ],
)
def test_a_switch_that_cannot_be_asked_is_traced_from_the_model_and_says_so(lab, args):
    net, tracer, _ = lab
    asked = tracer.trace(*args)
    tracer.switches.unreachable = set(net.switches)
    modelled = tracer.trace(*args)
    assert {h["source"] for h in asked["hops"]} == {"switch"}
    assert {h["source"] for h in modelled["hops"]} == {"model"}
    assert all("no Open vSwitch bridge" in h["unasked"] for h in modelled["hops"])
    assert modelled["verdict"] == asked["verdict"]
    by_ip = {ip: mac for mac, ip in IP.items()}
    proto, port = args[2], (args[3] if len(args) > 3 else None)
    assert (modelled["verdict"] == "forward") == delivered(
        net, by_ip[args[0]], by_ip[args[1]], proto, port
    )
    for key in ("switch", "stage", "app", "rule"):
        assert modelled["decided_by"][key] == asked["decided_by"][key]
    assert [h["switch"] for h in modelled["hops"]][0] == asked["hops"][0]["switch"]
    if args[:2] == ("10.0.0.2", "10.0.0.6"):  # microseg's conntrack: the +new branch
        assert "ct: assumed new" in modelled["hops"][0]["notes"]


def test_only_the_switch_that_cannot_be_asked_is_modelled(lab):
    net, tracer, _ = lab
    tracer.switches.unreachable = {203}
    answer = tracer.trace("10.0.0.1", "10.0.0.5", "tcp", 80)
    assert [(h["switch"], h["source"]) for h in answer["hops"]][::2] == [
        ("s201", "switch"),
        ("s203", "model"),
    ]
    assert answer["verdict"] == "forward"
    assert answer["hops"][-1]["outputs"] == [{"port": 3, "name": "s203-eth3", "hosts": [MACS[4]]}]


# --- the HTTP answer and osken-trace -----------------------------------------------------------


def get(app, query: str):
    from io import BytesIO

    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"QUERY_STRING": query, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
    body = b"".join(app(environ, start_response))
    return int(seen["status"].split()[0]), seen["headers"]["Content-Type"], json.loads(body)


def test_the_api_answers_json_with_400_and_404_for_bad_asks(lab):
    from controller.metrics import Metrics
    from controller.web import Web

    net, tracer, _ = lab
    metrics = Metrics()
    Web(net.core, lambda fn: fn(), FakeSwitches(net)).mount(metrics)
    status, kind, body = get(
        lambda e, s: metrics.wsgi({**e, "PATH_INFO": "/api/v1/trace"}, s),
        "src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=22",
    )
    assert (status, kind, body["verdict"]) == (200, "application/json", "drop")
    seen = []
    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    scrape = b"".join(metrics.wsgi(environ, lambda status, headers: seen.append(status)))
    assert seen == ["200 OK"] and b"osken_switches" in scrape  # /metrics as before
    trace = metrics._mounted("/api/v1/trace")
    assert get(trace, "src=10.0.0.1&dst=10.0.0.3")[::2] == (400, {"error": "missing proto"})
    assert get(trace, "src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=x")[0] == 400
    assert get(trace, "src=10.0.0.1&dst=10.0.0.77&proto=icmp")[0] == 404


def test_osken_trace_prints_the_verdict_and_the_rule(lab, capsys, monkeypatch):
    from controller.trace import cli

    net, tracer, tmp = lab
    answer = tracer.trace("10.0.0.1", "10.0.0.3", "tcp", 22)
    text = cli.render(json.loads(json.dumps(answer)))
    assert text.splitlines()[:3] == [
        "10.0.0.1 -> 10.0.0.3 tcp/22: DROP",
        "  decided by s201 table 1 (firewall, firewall)",
        f'  rule: rule at {tmp}/rules.json:3: {{"action": "deny", "protocol": "tcp", "port": 22}}',
    ]
    args = cli.parse_args(["10.0.0.1", "10.0.0.3", "TCP/22", "--sport", "5"])
    assert (args.proto, args.dport, args.sport) == ("tcp", 22, 5)
    with pytest.raises(SystemExit):
        cli.parse_args(["10.0.0.1", "10.0.0.3", "tcp/ssh"])
    assert cli.main(["10.0.0.1", "10.0.0.3", "icmp", "--prometheus-port", "1"]) == 1
    assert "cannot ask the controller" in capsys.readouterr().err


# --- services and chains name their flows; a VIP is traced to its backend ----------------------


def services_lab(tmp_path, method: str):
    from tests.unit.test_services import make, service

    net, app, _ = make(tmp_path, service(90, 10, method=method))
    return net, Tracer(net.core, FakeSwitches(net), lambda fn: fn())


def services_rules(hop: dict) -> list[dict]:
    return [t["rule"] for t in hop["tables"] if t["app"] == "services" and "rule" in t]


def test_a_vip_is_traced_through_its_select_group_to_a_backend_with_the_service_named(tmp_path):
    from apps.services.compile import vip_mac
    from tests.unit.test_services import C1, V1A, V2A, VIP
    from tests.unit.test_services import IP as SIP

    net, tracer = services_lab(tmp_path, "switch")
    answers = [tracer.trace(SIP[C1], VIP, "tcp", 80, sport) for sport in range(40000, 40020)]
    hosts = [a["hops"][-1]["outputs"][0]["hosts"][0] for a in answers]
    got = Counter(hosts)
    assert set(got) == {V1A, V2A} and got[V1A] > got[V2A]  # hashed, mostly the 90%
    answer = answers[hosts.index(V1A)]
    assert answer["packet"]["dst_mac"] == vip_mac(VIP)  # the VIP's MAC: no host's
    assert answer["verdict"] == "forward"
    decided = answer["decided_by"]
    assert (decided["switch"], decided["stage"]) == ("s201", "services_track")
    rule = decided["rule"]
    assert (rule["kind"], rule["service"], rule["vip"], rule["method"]) == (
        "new connection",
        "user-service",
        f"{VIP}:80/tcp",
        "switch",
    )
    assert [(b["backend"]["endpoint"], b["weight"]) for b in rule["buckets"]] == [
        ("v1-a", 229),  # 230 of 256 hash values in two buckets (weights.switch_buckets)
        ("v1-a", 1),
        ("v2-a", 26),
    ]
    assert rule["group"] in net.switches[201].groups
    steered = services_rules(answer["hops"][0])[-1]
    assert steered["backend"] == {"endpoint": "v1-a", "ip": SIP[V1A], "port": 80}


def test_an_exact_vip_names_the_controller_as_the_one_that_picks(tmp_path):
    from tests.unit.test_services import C1, VIP
    from tests.unit.test_services import IP as SIP

    net, tracer = services_lab(tmp_path, "exact")
    answer = tracer.trace(SIP[C1], VIP, "tcp", 80)
    assert answer["verdict"] == "forward"  # on through the controller's pick: the next test
    rule = answer["decided_by"]["rule"]
    assert rule["backend"] == "picked per connection by the controller (method exact)"
    assert rule["service"] == "user-service" and rule["decides"]
    other_port = tracer.trace(SIP[C1], VIP, "tcp", 81)
    assert other_port["verdict"] == "drop"
    assert other_port["decided_by"]["rule"]["kind"] == "VIP drop"


def test_a_chain_names_its_hop_deployment_and_replica_group(tmp_path):
    from apps.chains.compile import group_id
    from tests.unit.test_chains import IP as CIP
    from tests.unit.test_chains import TWO_HOPS, C, S, make

    net, app, _ = make(tmp_path, TWO_HOPS)
    for mac in (C, S):
        net.core.neighbours.heard(CIP[mac], mac)
    answer = Tracer(net.core, FakeSwitches(net), lambda fn: fn()).trace(CIP[C], CIP[S], "tcp", 80)
    decided = answer["decided_by"]
    assert decided["stage"] == "chains"
    rule = decided["rule"]
    assert (rule["kind"], rule["chain"], rule["hop"], rule["deployment"]) == (
        "classification",
        "web-via-firewall",
        0,
        "virtual-firewall",
    )
    assert rule["group"] == group_id(0, 0, "a")
    assert [(r["replica"], r["switch"][-1], r["port"]) for r in rule["replicas"]] == [
        (0, "1", 3),
        (1, "2", 3),
    ]
    # Leaving replica 0 of the firewall (its side b, port 4): on to the ids hop's group.
    leaving = next(
        f
        for f in net.core.desired.flows[1].values()
        if f.table == app.compiler.table and f.match_dict().get("in_port") == 4 and f.priority > 200
    )
    named = app.explain(1, leaving)
    assert (named["kind"], named["from_hop"], named["hop"], named["deployment"]) == (
        "exit",
        0,
        1,
        "ids",
    )
    # The group hashed this connection to replica 1, on s2: carried there by its tag.
    last = answer["hops"][-1]
    assert (last["switch"], last["outputs"][0]["port"]) == ("s2", 3)
    tagged = last["tables"][-1]["rule"]
    assert (tagged["kind"], tagged["replica"], tagged["deployment"]) == (
        "tag",
        1,
        "virtual-firewall",
    )


def test_a_vip_traced_from_the_model_commits_to_a_backend_and_reaches_it(tmp_path):
    from controller.trace import cli
    from tests.unit.test_services import C1, V1A, VIP
    from tests.unit.test_services import IP as SIP

    net, tracer = services_lab(tmp_path, "switch")
    tracer.switches.unreachable = set(net.switches)
    answer = tracer.trace(SIP[C1], VIP, "tcp", 80)
    assert answer["verdict"] == "forward"
    assert answer["hops"][-1]["outputs"][0]["hosts"] == [V1A]
    first = answer["hops"][0]
    assert first["source"] == "model"
    assert "ct: assumed new" in first["notes"]
    assert any(n.startswith("select group") for n in first["notes"])
    steered = services_rules(first)[-1]  # translated by the commit's nat, then steered
    assert steered["backend"]["endpoint"] == "v1-a"
    text = cli.render(json.loads(json.dumps(answer)))
    assert "new connection of service user-service (10.0.100.10:80/tcp, switch)" in text
    assert "    assumed: ct: assumed new" in text.splitlines()


def test_a_select_group_hashed_in_the_datapath_is_where_ofproto_trace_stops():
    # recorded from ovs-vswitchd 3.1: the group's bucket is chosen after a dp_hash
    # recirculation that ofproto/trace does not follow ("no live bucket" though one is live)
    t = recorded("select-group-hashed")
    assert t.hashed_group == 5 and t.outputs == ()
    assert (t.steps[-1].table, t.steps[-1].packet["ct_state"]) == (1, 0x21)
    assert recorded("s3-fabric-forward").hashed_group is None


def test_the_rest_of_a_hashed_select_group_comes_from_the_model(tmp_path):
    from apps.services.compile import CT_ZONE
    from tests.unit.test_services import C1, V1A, VIP
    from tests.unit.test_services import IP as SIP

    net, tracer = services_lab(tmp_path, "switch")
    fake = tracer.switches
    group = next(
        gid for gid, g in net.switches[201].groups.items() if g.type == "select" and gid >> 24 == 5
    )

    class StopsAtTheGroup:
        """Switch 201 answers as Open vSwitch does: up to the select group it hashes, the
        packet there as the recirculation after ct() left it."""

        bridge = staticmethod(fake.bridge)

        def trace(self, dpid, pkt):
            whole = fake.trace(dpid, pkt)
            if dpid != 201:
                return whole
            at = next(i for i, s in enumerate(whole.steps) if s.flow.priority == 201)
            there = {**pkt, "ct_state": 0x21, "ct_zone": CT_ZONE, "ct_mark": 0}
            cut = tuple(replace(s, flow=None) for s in whole.steps[:at])
            cut += (replace(whole.steps[at], flow=None, packet=there),)
            return SwitchTrace(cut, (), False, dict(pkt), hashed_group=group)

    tracer.switches = StopsAtTheGroup()
    answer = tracer.trace(SIP[C1], VIP, "tcp", 80)
    first = answer["hops"][0]
    assert first["source"] == "switch+model"
    assert first["notes"][0].startswith(f"select group {group} is hashed in the datapath")
    assert "ct: assumed new" in first["notes"]
    assert answer["verdict"] == "forward"
    assert answer["hops"][-1]["outputs"][0]["hosts"] == [V1A]
    assert services_rules(first)[-1]["backend"]["endpoint"] == "v1-a"
    # the next switches get the packet translated to the backend: no service of theirs takes it
    picked = [h["switch"] for h in answer["hops"] for r in services_rules(h) if "method" in r]
    assert set(picked) == {"s201"}


def test_an_exact_vip_is_traced_on_through_the_controllers_next_pick_without_taking_it(tmp_path):
    from controller.trace import cli
    from tests.unit.test_services import C1, V1A, V2A, VIP, connect
    from tests.unit.test_services import IP as SIP

    net, tracer = services_lab(tmp_path, "exact")
    hosts = {"v1-a": V1A, "v2-a": V2A}
    seen = []
    for sport in range(30000, 30012):  # 90/10: v2-a's turn comes once in ten
        answers = [tracer.trace(SIP[C1], VIP, "tcp", 80) for _ in range(2)]
        assert answers[0] == answers[1]  # tracing took no turn
        answer = answers[0]
        assert answer["verdict"] == "forward"
        first = answer["hops"][0]
        assert first["source"] == "switch+model" and first["result"] == "forward"
        assert any("controller's model" in n for n in first["notes"])
        picked = first["picked"]["backend"]
        assert picked["ip"] == SIP[hosts[picked["endpoint"]]] and picked["port"] == 80
        assert answer["hops"][-1]["outputs"][0]["hosts"] == [hosts[picked["endpoint"]]]
        steered = services_rules(first)[-1]  # translated by the commit, then steered there
        assert steered["backend"]["endpoint"] == picked["endpoint"]
        assert connect(net, sport=sport)[0] == hosts[picked["endpoint"]]  # as traced
        seen.append(picked["endpoint"])
    assert seen.count("v2-a") in (1, 2) and seen.count("v1-a") >= 10, seen
    text = cli.render(json.loads(json.dumps(answer)))
    assert f"    picked: {seen[-1]}: the controller's next pick for a new connection" in text


# --- IPv6 ----------------------------------------------------------------------------------------

CONFIG6 = f"""\
namespaces:
  - {{name: x, labels: {{ns: x}}}}
  - {{name: y, labels: {{ns: y}}}}
  - {{name: z, labels: {{ns: z}}}}
endpoints:
  - {{name: x-a, namespace: x, ip: "fd00::1", mac: "{MACS[0]}"}}
  - {{name: y-a, namespace: y, ip: "fd00::3", mac: "{MACS[2]}"}}
  - {{name: z-a, namespace: z, ip: "fd00::5", mac: "{MACS[4]}"}}
firewall:
  rules_file: rules.json
policies: [netpol.yaml]
"""
IP6 = {MACS[0]: "fd00::1", MACS[2]: "fd00::3", MACS[4]: "fd00::5"}


def delivered6(net, src, dst, proto, port=None):
    fields = {"ip_proto": {"tcp": 6, "icmp": 58}[proto]}
    if proto == "tcp":
        fields |= {"tcp_src": 40000, "tcp_dst": port, "tcp_flags": 0x002}
    else:
        fields |= {"icmpv6_type": 128, "icmpv6_code": 0}
    got = net.send(src, dst, 0x86DD, ipv6_src=IP6[src], ipv6_dst=IP6[dst], **fields)
    return dst in got.hosts


@pytest.fixture
def lab6(tmp_path):
    net = fake_lab(tmp_path, CONFIG6)
    for mac, ip in IP6.items():  # each host speaks IPv6 once: bound, located and heard
        others = [m for m in IP6 if m != mac]
        net.send(
            mac,
            others[0],
            0x86DD,
            ipv6_src=ip,
            ipv6_dst=IP6[others[0]],
            ip_proto=17,
            udp_src=5353,
            udp_dst=5353,
        )
    return net, Tracer(net.core, FakeSwitches(net), lambda fn: fn()), tmp_path


def test_ipv6_is_traced_to_the_firewall_rule_the_policy_rule_and_the_default_deny(lab6):
    net, tracer, tmp = lab6
    ssh = tracer.trace("fd00::1", "fd00:0::3", "tcp", 22)  # any spelling of the address
    assert ssh["packet"]["src"] == "fd00::1" and ssh["packet"]["dst"] == "fd00::3"
    assert ssh["verdict"] == "drop" and not delivered6(net, MACS[0], MACS[2], "tcp", 22)
    rule = ssh["decided_by"]["rule"]
    assert (rule["kind"], rule["index"], rule["file"]) == ("rule", 2, str(tmp / "rules.json"))

    web = tracer.trace("fd00::1", "fd00::5", "tcp", 80)
    assert web["verdict"] == "forward" and delivered6(net, MACS[0], MACS[4], "tcp", 80)
    rule = web["decided_by"]["rule"]
    assert (rule["policy"], rule["direction"], rule["rule"]) == ("z/web-from-x", "ingress", 1)
    assert web["hops"][-1]["outputs"][0]["hosts"] == [MACS[4]]

    denied = tracer.trace("fd00::3", "fd00::5", "tcp", 80)
    assert denied["verdict"] == "drop" and not delivered6(net, MACS[2], MACS[4], "tcp", 80)
    assert denied["decided_by"]["rule"]["policies"] == ["NetworkPolicy z/web-from-x"]

    ping = tracer.trace("fd00::1", "fd00::3", "icmp")  # L2 on to y-a: nothing isolates it
    assert ping["verdict"] == "forward" and delivered6(net, MACS[0], MACS[2], "icmp")
    assert ping["packet"]["proto"] == "icmp"
    assert ping["hops"][-1]["outputs"][0]["hosts"] == [MACS[2]]
