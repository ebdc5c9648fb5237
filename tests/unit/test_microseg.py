"""Microsegmentation compiled onto fake switches: verdicts for real packets, flow counts, errors."""

import itertools
import os
import re
import textwrap

import pytest

from apps.l2_learning import L2Learning
from apps.microseg import Microseg
from apps.microseg.compile import COOKIE, CT_ZONE
from controller.config import ConfigError, load_config
from controller.core import Core
from controller.packets import source_ip as claimed_source
from controller.pipeline import PIPELINE
from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEED = os.path.join(DATA, "..", "..", "..", "shared", "seeds", "000_2d555abd2b5a208a.txt")
IP = {mac: f"10.0.0.{i}" for i, mac in enumerate(MACS, start=1)}
# Six hosts on three leaves: namespace x has a and b, y has a and b, z has a and b.
NAMES = ["x-a", "x-b", "y-a", "y-b", "z-a", "z-b"]
HOST = dict(zip(NAMES, MACS, strict=False))
ENDPOINTS = textwrap.dedent(
    """\
    namespaces:
      - {name: x, labels: {ns: x}}
      - {name: y, labels: {ns: y}}
      - {name: z, labels: {ns: z}}
    endpoints:
    """
) + "".join(
    f"  - {{name: {n}, namespace: {n[0]}, ip: {IP[HOST[n]]}, labels: {{pod: {n[2]}}},"
    f" ports: [{{name: serve-80-tcp, port: 80, protocol: TCP}}]}}\n"
    for n in NAMES
)


def make(tmp_path, policies: str = "", extra: str = "", now: float = 1000.0, outside=()):
    """`outside` names hosts that are on the network but are no endpoint (not in the config)."""
    (tmp_path / "policies.yaml").write_text(textwrap.dedent(policies))
    cfg = tmp_path / "lab.yaml"
    endpoints = "".join(
        line
        for line in ENDPOINTS.splitlines(True)
        if not any(f"{{name: {n}," in line for n in outside)
    )
    cfg.write_text(endpoints + "policies: [policies.yaml]\n" + extra)
    core = Core()
    core.add_app(L2Learning)
    ms = core.add_app(Microseg)
    core.configure(load_config(str(cfg)), now)
    net = leaf_spine(core)
    net.now = now
    net.start()
    for n in NAMES:  # each host announces itself, as ARP does: that binds it
        mac = HOST[n]
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")
    return net, ms, cfg


def reload(net, cfg, policies: str | None = None, config: str | None = None):
    if policies is not None:
        (cfg.parent / "policies.yaml").write_text(textwrap.dedent(policies))
    if config is not None:
        cfg.write_text(config)
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))


def send(net, src, dst, proto="tcp", port=80, sport=40000, ip_src=None):
    fields = {"ip_proto": {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}[proto]}
    if proto != "icmp":
        fields |= {f"{proto}_src": sport, f"{proto}_dst": port}
    got = net.send(
        HOST[src],
        HOST[dst],
        0x0800,
        ipv4_src=ip_src or IP[HOST[src]],
        ipv4_dst=IP[HOST[dst]],
        **fields,
    )
    return got.hosts == [HOST[dst]]


def reply(net, src, dst, proto="tcp", port=80, sport=40000):
    """dst answers a connection src opened to dst:port from sport."""
    fields = {"ip_proto": 6 if proto == "tcp" else 17, f"{proto}_src": port, f"{proto}_dst": sport}
    got = net.send(
        HOST[dst], HOST[src], 0x0800, ipv4_src=IP[HOST[dst]], ipv4_dst=IP[HOST[src]], **fields
    )
    return got.hosts == [HOST[src]]


def matrix(net, proto="tcp", port=80) -> dict[tuple[str, str], bool]:
    """Every pair, each probe a new connection (a fresh source port), as real probes are."""
    out = {}
    for a in NAMES:
        for b in NAMES:
            if a != b:
                out[(a, b)] = send(net, a, b, proto, port, sport=next(SOURCE_PORTS))
    return out


def allowed(m) -> set[tuple[str, str]]:
    return {k for k, v in m.items() if v}


SOURCE_PORTS = itertools.cycle(range(20000, 60000))
ALL = {(a, b) for a in NAMES for b in NAMES if a != b}

DENY_X_A = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-all, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress: []
"""


def test_no_policy_leaves_everyone_unaffected(tmp_path):
    net, _, _ = make(tmp_path)
    assert allowed(matrix(net)) == ALL


def test_ingress_default_deny_isolates_only_the_selected_endpoint_and_replies_pass(tmp_path):
    net, _, _ = make(tmp_path, DENY_X_A)
    assert allowed(matrix(net)) == {p for p in ALL if p[1] != "x-a"}
    # x-a's own connections are not ingress to x-a: the replies come back.
    assert send(net, "x-a", "y-a", sport=5555) and reply(net, "x-a", "y-a", sport=5555)
    # ...but a reply-shaped packet for a connection that never was is new, and dropped.
    assert not reply(net, "x-a", "y-b", sport=6666)


def test_allow_from_a_namespace_to_one_port(tmp_path):
    net, _, _ = make(
        tmp_path,
        DENY_X_A
        + """\
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: from-y, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress:
        - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
          ports: [{port: 80}]
    """,
    )
    m80, m81 = matrix(net, port=80), matrix(net, port=81)
    assert allowed(m80) == {p for p in ALL if p[1] != "x-a"} | {("y-a", "x-a"), ("y-b", "x-a")}
    assert allowed(m81) == {p for p in ALL if p[1] != "x-a"}
    assert not send(net, "y-a", "x-a", "udp", 80)  # protocol defaults to TCP


def test_pod_and_namespace_selector_in_one_peer_mean_and_in_two_peers_mean_or(tmp_path):
    head = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress:
        - from:
"""
    net, _, cfg = make(
        tmp_path,
        head
        + """\
            - namespaceSelector: {matchLabels: {ns: y}}
              podSelector: {matchLabels: {pod: b}}
    """,
    )
    into = {a for (a, b) in allowed(matrix(net)) if b == "x-a"}
    assert into == {"y-b"}
    reload(
        net,
        cfg,
        head
        + """\
            - namespaceSelector: {matchLabels: {ns: y}}
            - podSelector: {matchLabels: {pod: b}}
    """,
    )
    into = {a for (a, b) in allowed(matrix(net)) if b == "x-a"}
    assert into == {"y-a", "y-b", "x-b"}  # podSelector alone: the policy's namespace


def test_egress_and_ingress_must_both_allow(tmp_path):
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: egress-to-z, namespace: x}
    spec:
      podSelector: {}
      policyTypes: [Egress]
      egress:
        - to: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [z]}]}}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: z-a-from-nobody, namespace: z}
    spec:
      podSelector: {matchLabels: {pod: a}}
    """,
    )
    m = matrix(net)
    from_x = {b for (a, b) in allowed(m) if a == "x-a"}
    assert from_x == {"z-b"}  # egress allows z; z-a's ingress allows nobody
    assert ("y-a", "x-a") in allowed(m)  # an egress-only policy leaves ingress alone


def test_ipblock_with_except_and_port_range(tmp_path):
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: cidr, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress:
        - from: [{ipBlock: {cidr: 10.0.0.0/29, except: [10.0.0.4/30]}}]
          ports: [{protocol: UDP, port: 1000, endPort: 2000}]
    """,
    )
    assert send(net, "y-a", "x-a", "udp", 1000) and send(net, "x-b", "x-a", "udp", 2000)
    assert not send(net, "y-a", "x-a", "udp", 2001) and not send(net, "y-a", "x-a", "udp", 999)
    assert not send(net, "y-b", "x-a", "udp", 1500)  # 10.0.0.4 is in the except
    assert not send(net, "y-a", "x-a", "tcp", 1500)


def test_named_port_resolves_on_the_destination(tmp_path):
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: named, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress: [{ports: [{port: serve-80-tcp}]}]
    """,
    )
    assert send(net, "z-a", "x-a", port=80) and not send(net, "z-a", "x-a", port=81)


@pytest.mark.parametrize(
    ("spec", "isolated"),
    [
        ("{}", {"ingress"}),  # no policyTypes, no egress: Ingress
        ("{egress: []}", {"ingress"}),  # an empty egress list is no egress rule
        ("{egress: }", {"ingress"}),  # null: absent
        ("{egress: [{to: [{podSelector: {}}]}]}", {"ingress", "egress"}),
        ("{policyTypes: []}", {"ingress"}),  # empty policyTypes: defaulted, not "nothing"
        ("{policyTypes: , egress: []}", {"ingress"}),
        ("{policyTypes: [], egress: [{ports: [{port: 53}]}]}", {"ingress", "egress"}),
        ("{policyTypes: [Egress]}", {"egress"}),
        ("{policyTypes: [Egress], ingress: []}", {"egress"}),
        ("{policyTypes: [Ingress, Egress]}", {"ingress", "egress"}),
    ],
)
def test_policy_types_default_as_the_api_server_does(tmp_path, spec, isolated):
    """SetDefaults_NetworkPolicy: len(policyTypes) == 0 gives Ingress, plus Egress when
    len(egress) != 0. The policy selects x-a; its rules (if any) allow only what is asked."""
    net, _, _ = make(
        tmp_path,
        f"""\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: p, namespace: x}}
    spec: {{podSelector: {{matchLabels: {{pod: a}}}}, {spec[1:]}
    """,
    )
    got = set()
    if not send(net, "z-a", "x-a", "tcp", 81):
        got.add("ingress")
    if not send(net, "x-a", "z-a", "tcp", 81):
        got.add("egress")
    assert got == isolated


def test_a_null_peer_selector_is_an_absent_one(tmp_path):
    """`namespaceSelector: null` beside a podSelector: the policy's own namespace, not all."""
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress: [{from: [{podSelector: {matchLabels: {pod: b}}, namespaceSelector: null}]}]
    """,
    )
    assert {a for (a, b) in allowed(matrix(net)) if b == "x-a"} == {"x-b"}


def test_allow_all_rule_versus_no_rules(tmp_path):
    policy = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec:
      podSelector: {}
      ingress: RULES
    """
    net, _, cfg = make(tmp_path, policy.replace("RULES", "[{}]"))
    assert allowed(matrix(net)) == ALL
    reload(net, cfg, policy.replace("RULES", "[]"))
    assert allowed(matrix(net)) == {p for p in ALL if p[1] not in ("x-a", "x-b")}


def test_cilium_deny_beats_every_allow_and_missing_protocol_means_any(tmp_path):
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: allow-all, namespace: x}
    spec:
      podSelector: {}
      ingress: [{}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: deny-y, namespace: x}
    spec:
      endpointSelector: {matchLabels: {pod: a}}
      ingressDeny:
        - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]
          toPorts: [{ports: [{port: "80"}]}]
    """,
    )
    assert not send(net, "y-a", "x-a", "tcp", 80) and not send(net, "y-a", "x-a", "udp", 80)
    assert send(net, "y-a", "x-a", "tcp", 81) and send(net, "z-a", "x-a", "tcp", 80)


CILIUM_CIDR = """\
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: cidr, namespace: x}
    spec:
      endpointSelector: {matchLabels: {pod: a}}
      SECTION:
        - PEERS
"""


@pytest.mark.parametrize(
    "peers",
    [
        "toCIDR: [10.0.0.0/16]",
        "toCIDRSet: [{cidr: 10.0.0.0/16}]",
        "toCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.0.5/32]}]",
    ],
)
def test_cilium_egress_cidr_reaches_only_addresses_that_are_not_endpoints(tmp_path, peers):
    """z-b is on the network but no endpoint: inside the CIDR. x-b, y-a... are endpoints inside
    it too, and a CIDR rule does not select them (Cilium's layer 3 policy docs)."""
    policy = CILIUM_CIDR.replace("SECTION", "egress").replace("PEERS", peers)
    net, _, _ = make(tmp_path, policy, outside=("z-b",))
    assert send(net, "x-a", "z-b", "tcp", 80) and send(net, "x-a", "z-b", "udp", 53)
    assert {b for (a, b) in allowed(matrix(net)) if a == "x-a"} == {"z-b"}
    assert send(net, "z-b", "x-a")  # x-a's ingress is not isolated


@pytest.mark.parametrize(
    "peers",
    ["fromCIDR: [10.0.0.0/16]", "fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]"],
)
def test_cilium_ingress_cidr_admits_only_addresses_that_are_not_endpoints(tmp_path, peers):
    policy = CILIUM_CIDR.replace("SECTION", "ingress").replace("PEERS", peers)
    net, _, _ = make(tmp_path, policy, outside=("z-b",))
    assert send(net, "z-b", "x-a")
    assert {a for (a, b) in allowed(matrix(net)) if b == "x-a"} == {"z-b"}


def test_cilium_cidr_except_still_holds_for_non_endpoints(tmp_path):
    peers = "toCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.0.6/32]}]"
    policy = CILIUM_CIDR.replace("SECTION", "egress").replace("PEERS", peers)
    net, _, _ = make(tmp_path, policy, outside=("z-b",))
    assert not send(net, "x-a", "z-b")


@pytest.mark.parametrize(
    ("entities", "reached"),
    [
        ("[world]", {"z-b"}),
        ("[cluster]", set(NAMES) - {"x-a", "z-b"}),
        ("[all]", set(NAMES) - {"x-a"}),
        ("[none]", set()),
    ],
)
def test_cilium_entities_split_endpoints_from_the_world(tmp_path, entities, reached):
    """world: addresses that are no endpoint (z-b here); cluster: every endpoint; all: both."""
    policy = CILIUM_CIDR.replace("SECTION", "egress").replace("PEERS", f"toEntities: {entities}")
    net, _, _ = make(tmp_path, policy, outside=("z-b",))
    assert {b for (a, b) in allowed(matrix(net)) if a == "x-a"} == reached


def test_kubernetes_ipblock_still_selects_endpoints_inside_it(tmp_path):
    """Unlike Cilium's CIDR rules, ipBlock matches pod addresses too (upstream e2e tests do)."""
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: cidr, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      policyTypes: [Egress]
      egress: [{to: [{ipBlock: {cidr: 10.0.0.0/30}}]}]
    """,
        outside=("z-b",),
    )
    assert {b for (a, b) in allowed(matrix(net)) if a == "x-a"} == {"x-b", "y-a"}
    assert not send(net, "x-a", "z-b")


def test_cilium_seed_policies_work_as_written(tmp_path):
    """The seed's CiliumNetworkPolicies, verbatim: database takes 5432 from backup and api."""
    seeds = os.path.join(DATA, "seed-policies")
    endpoints = "".join(
        f"  - {{name: {name}, ip: {IP[MACS[i]]}, labels: {{app: {name}}}}}\n"
        for i, name in enumerate(
            ["database", "backup-service", "api-service", "frontend", "user-api", "admin-panel"]
        )
    )
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(f"endpoints:\n{endpoints}policies: [{seeds}]\n")
    core = Core()
    core.add_app(L2Learning)
    core.add_app(Microseg)
    core.configure(load_config(str(cfg)), 1000.0)
    net = leaf_spine(core)
    net.now = 1000.0
    net.start()
    for mac in MACS[:6]:
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")

    def ok(i, j, port):
        fields = {"ip_proto": 6, "tcp_src": 33000 + port, "tcp_dst": port}
        got = net.send(
            MACS[i], MACS[j], 0x0800, ipv4_src=IP[MACS[i]], ipv4_dst=IP[MACS[j]], **fields
        )
        return got.hosts == [MACS[j]]

    assert ok(1, 0, 5432) and ok(2, 0, 5432)  # backup-service, api-service -> database
    assert not ok(3, 0, 5432) and not ok(1, 0, 22)
    assert ok(3, 4, 8080) and ok(5, 4, 8080)  # frontend, admin-panel -> user-api (L4 part)
    assert not ok(1, 4, 8080) and not ok(3, 4, 80)
    assert ok(0, 3, 80)  # frontend is selected by nothing


def test_seed_policy_files_are_the_seeds_verbatim():
    if not os.path.exists(SEED):
        pytest.skip("shared/seeds is not beside this checkout")
    with open(SEED) as fh:
        seed = fh.read()
    for name in os.listdir(os.path.join(DATA, "seed-policies")):
        with open(os.path.join(DATA, "seed-policies", name)) as fh:
            assert fh.read() in seed, name


def test_a_spoofed_source_address_gains_nothing(tmp_path):
    net, _, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: only-x-b, namespace: y}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress:
        - from:
            - namespaceSelector: {matchLabels: {ns: x}}
              podSelector: {matchLabels: {pod: b}}
    """,
    )
    assert send(net, "x-b", "y-a")
    assert not send(net, "z-a", "y-a")
    assert not send(net, "z-a", "y-a", ip_src=IP[HOST["x-b"]])  # z-a borrowing x-b's address
    assert not send(net, "z-a", "z-b", ip_src=IP[HOST["x-b"]])  # dropped wherever it goes


def test_an_endpoint_is_bound_where_it_is_first_seen_and_unbound_when_its_port_goes(tmp_path):
    net, ms, _ = make(tmp_path)
    dpid, port = net.hosts[HOST["x-a"]]
    assert ms.bindings[IP[HOST["x-a"]]] == (dpid, port)
    net.set_link(dpid, port, False)
    net.advance(1)
    assert IP[HOST["x-a"]] not in ms.bindings
    net.plug(HOST["x-a"], 203, 4)  # moved to another leaf
    # Its first packet from the new place is held for the controller, which binds it.
    send(net, "x-a", "y-a")
    assert ms.bindings[IP[HOST["x-a"]]] == (203, 4)
    assert send(net, "x-a", "y-a")


def test_packet_in_address_parsing():
    head = bytes.fromhex("0001080006040001")  # Ethernet/IPv4 ARP, as a switch parses it
    arp = bytes(12) + b"\x08\x06" + head + bytes(6) + bytes([10, 0, 0, 7]) + bytes(10)
    assert claimed_source(arp) == "10.0.0.7"
    assert claimed_source(arp[:14] + bytes(8) + arp[22:]) is None  # no hardware/protocol types
    assert claimed_source(b"\x00" * 10) is None
    assert claimed_source(bytes(12) + b"\x08\x00" + bytes(4)) is None  # truncated


def _ms_flows(net):
    return sum(
        1 for sw in net.switches.values() for t in sw.tables for e in t if e.flow.cookie == COOKIE
    )


def test_flows_grow_with_identities_not_endpoint_pairs(tmp_path):
    """Six endpoints, two identities (pod=a, pod=b in x) ... the policy flows count per identity."""
    net, ms, _ = make(
        tmp_path,
        """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec:
      podSelector: {}
      ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 80}, {port: 443}]}]
    """,
    )
    sw = net.switches[201]
    ingress = ms.compiler.ingress
    # x-a and x-b: two identities, each allowing 6 peer identities on 2 ports, and a default.
    assert len(sw.tables[ingress]) == 2 * 6 * 2 + 2 + 2 + 1  # + commit (v4, v6) + miss
    assert len(sw.tables[ms.compiler.egress]) == 1  # the miss: nobody is egress-isolated


def test_a_label_change_sends_only_the_flows_that_depend_on_it(tmp_path):
    net, ms, cfg = make(tmp_path, DENY_X_A.replace("namespace: x", "namespace: z"))
    assert send(net, "y-a", "z-b") and not send(net, "y-a", "z-a")
    before = sum(net.messages_sent.values())
    old = "name: z-b, namespace: z, ip: 10.0.0.6, labels: {pod: b}"
    reload(net, cfg, config=cfg.read_text().replace(old, old.replace("pod: b", "pod: a")))
    sent = sum(net.messages_sent.values()) - before
    # z-b joins z-a's identity: its source entry (on its leaf) and its destination entry (on
    # every switch) change; no policy flow does. Each switch gets one bundle.
    assert 0 < sent <= 1 + 6 * len(net.switches), sent
    assert not send(net, "y-a", "z-b", sport=40001)  # a new connection
    assert not send(net, "y-a", "z-b")  # the open one too: its packets are judged again
    assert reply(net, "y-a", "z-b")  # though what z-b still sends back reaches y-a...
    net.advance(1)
    assert all(sw.ct_flushes == 1 for sw in net.switches.values())
    # ...until the change is in force: then conntrack forgets connections made under the old.
    assert not any(zone == CT_ZONE for sw in net.switches.values() for zone, _ in sw.connections)
    assert len(ms.world.identities) == 5


@pytest.mark.parametrize(
    "policy, where, message",
    [
        (
            "spec:\n  podSelector:\n    matchExpressions: [{key: a, operator: Has}]\n",
            r"policies.yaml:6: spec.podSelector.matchExpressions\[0\].operator",
            "is not one of",
        ),
        (
            "spec:\n  ingress: [{ports: [{endPort: 90}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].ports\[0\].endPort",
            "endPort needs a port",
        ),
        (
            "spec:\n  ingress:\n    - from:\n"
            "      - ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/16]}\n",
            r"policies.yaml:7: spec.ingress\[0\].from\[0\].ipBlock.except\[0\]",
            "not strictly inside",
        ),
        (
            "spec:\n  podSelector: {}\n  ingres: []\n",
            r"policies.yaml:6: spec.ingres",
            "unknown key",
        ),
        (
            "spec:\n  ingress: [{ports: [{port: 80, endPort: 70}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].ports\[0\].endPort",
            "between 80 and 65535",
        ),
        (  # YAML 1.1 read this as the port 1350 (base 60); in YAML 1.2 it is no port
            "spec:\n  ingress:\n    - ports:\n        - port: 22:30\n",
            r"policies.yaml:7: spec.ingress\[0\].ports\[0\].port",
            "'22:30' is neither a port number nor a valid port name",
        ),
        (
            "spec:\n  policyTypes: [Ingress, Egress, Ingress]\n",
            r"policies.yaml:5: spec.policyTypes",
            "is too long",
        ),
        (  # IANA_SVC_NAME: at most 15 characters
            "spec:\n  ingress: [{ports: [{port: a-very-long-port-name}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].ports\[0\].port",
            "neither a port number nor a valid port name",
        ),
        (  # IANA_SVC_NAME: no two hyphens in a row
            "spec:\n  ingress: [{ports: [{port: web--http}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].ports\[0\].port",
            "neither a port number nor a valid port name",
        ),
        (  # label values are strings: 1.10 read as a number would be 1.1
            "spec:\n  podSelector: {matchLabels: {version: 1.10}}\n",
            r"policies.yaml:5: spec.podSelector.matchLabels.version",
            "1.1 is not a string: quote it",
        ),
        (  # an IPv6 zone names one host's interface: no switch matches it (netaddr cannot
            # even encode it: the flows failed at send time, unlocated)
            "spec:\n  ingress: [{from: [{ipBlock: {cidr: 'fe80::%eth0/64'}}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].from\[0\].ipBlock.cidr",
            "a zone (%...) is a host's",
        ),
        (
            "spec:\n  ingress:\n    - from:\n"
            "        - ipBlock: {cidr: 'fe80::/64', except: ['fe80::%1/96']}\n",
            r"policies.yaml:\d+: spec.ingress\[0\].from\[0\].ipBlock.except\[0\]",
            "a zone (%...) is a host's",
        ),
        (  # null selectors are absent ones: this peer selects nothing, as the API server says
            "spec:\n  ingress: [{from: [{podSelector: null, namespaceSelector: null}]}]\n",
            r"policies.yaml:5: spec.ingress\[0\].from\[0\]",
            "a peer needs podSelector, namespaceSelector or ipBlock",
        ),
    ],
)
def test_invalid_policy_is_rejected_located_and_nothing_changes(tmp_path, policy, where, message):
    net, _, cfg = make(tmp_path, DENY_X_A)
    flows = {
        d: sorted(map(repr, (e.flow for t in s.tables for e in t))) for d, s in net.switches.items()
    }
    head = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: bad, namespace: x}\n"
    )
    (tmp_path / "policies.yaml").write_text(head + policy)
    with pytest.raises(ConfigError) as err:
        load_and_check(cfg)
    assert re.search(where, str(err.value)) and message in str(err.value), str(err.value)
    reload(net, cfg)
    assert flows == {
        d: sorted(map(repr, (e.flow for t in s.tables for e in t))) for d, s in net.switches.items()
    }
    assert not send(net, "y-a", "x-a")


def load_and_check(cfg):
    core = Core()
    core.add_app(L2Learning)
    core.add_app(Microseg)
    core.parse(load_config(str(cfg)))


def test_cilium_fields_beyond_l4_are_named(tmp_path):
    (tmp_path / "policies.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: f}\nspec:\n"
        "  endpointSelector: {}\n  egress:\n    - toFQDNs: [{matchName: example.com}]\n"
    )
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("policies: [policies.yaml]\n")
    with pytest.raises(
        ConfigError, match=r"policies.yaml:7: spec.egress\[0\].toFQDNs: not supported"
    ):
        load_and_check(cfg)


def _generation(net) -> set:
    """The policy generation each switch's conntrack entry flow loads into reg0."""
    out = set()
    for sw in net.switches.values():
        for e in sw.tables[PIPELINE.table("microseg_dst")]:
            for ins in e.flow.instructions:
                if ins[0] == "apply" and ins[1] and ins[1][0][:2] == ("set_field", "reg0"):
                    out.add(ins[1][0][2])
    return out


def test_each_policy_change_freezes_a_new_generation(tmp_path):
    """Open vSwitch caches datapath flows after a conntrack recirculation by the state frozen
    with it; a new generation in a register makes that state new, so no stale entry matches."""
    net, _, cfg = make(tmp_path, DENY_X_A)
    assert _generation(net) == {0}
    reload(net, cfg, DENY_X_A.replace("ingress: []", "ingress: [{}]"))
    assert _generation(net) == {1}
    reload(net, cfg)  # the same policies again: nothing changes
    assert _generation(net) == {1}
