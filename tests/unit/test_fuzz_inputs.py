"""Property-based fuzzing of every input the controller reads (issue 12, item 6).

Inputs: the config file, the firewall's rules.json, NetworkPolicy and CiliumNetworkPolicy files,
Istio and Gateway API routing files (all seeds, mutated), and frames from hosts (packet-ins).
Each generated config is either applied whole or refused with file:line, never a traceback and
never half-applied; no frame makes any app raise.

Mutations start from a valid lab that uses every app and the seed's own documents: values
replaced by others of any type, keys deleted or added, items duplicated, or the text itself
cut, shifted or spliced (YAML syntax errors, duplicate keys, wrong indentation).
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import tempfile
import textwrap
from functools import cache

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.chains import ServiceChains
from apps.firewall import Firewall
from apps.l2_learning import L2Learning
from apps.microseg import Microseg
from apps.services import Services
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.fakenet import BROADCAST, frame, payload_for
from tests.unit.test_l2 import MACS, leaf_spine
from tests.unit.test_reload import desired_snapshot

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
IP = {mac: f"10.0.0.{i}" for i, mac in enumerate(MACS, start=1)}
CONFIG = textwrap.dedent(
    f"""\
    namespaces:
      - {{name: production, labels: {{env: prod}}}}
    endpoints:
      - {{name: api, namespace: production, ip: {IP[MACS[0]]}, mac: "{MACS[0]}",
         labels: {{app: api-server}}, ports: [{{name: http, port: 8080, protocol: TCP}}]}}
      - {{name: web, namespace: production, ip: {IP[MACS[1]]}, labels: {{app: web-server}}}}
      - {{name: db, namespace: production, ip: {IP[MACS[2]]}, labels: {{app: database}}}}
      - {{name: v1-a, ip: {IP[MACS[3]]}, labels: {{app: user-service, version: v1}}}}
      - {{name: v2-a, ip: {IP[MACS[4]]}, labels: {{app: user-service, version: v2}}}}
      - {{name: shop, ip: {IP[MACS[5]]}, labels: {{role: shopper}}}}
    firewall:
      default: allow
      rules_file: rules.json
      rules:
        - {{action: deny, protocol: udp, port: 9, source: 10.0.0.0/8}}
        - {{action: allow, protocol: tcp, port: "8000-8080", destination: 10.0.0.0/24}}
        - {{name: lim, action: rate_limit, protocol: udp, port: 5201,
           rate_limit: {{pps: 500, burst: 50}}}}
        - {{action: deny, protocol: tcp, port: 23,
           schedule: {{start: "22:00", end: "06:00", timezone: UTC}}}}
      blocked_ips: [192.168.1.100]
    policies: [policies]
    services:
      - name: user-service
        vip: 10.0.100.10
        port: 80
        backends: [{{endpoint: v1-a, weight: 90}}, {{endpoint: v2-a, weight: 10}}]
      - name: other
        vip: 10.0.100.11
        port: 53
        protocol: udp
        method: switch
        backends: [{{endpoint: web, weight: 1}}]
    routing: [routing]
    chains:
      - {{name: via-fw, from_labels: {{role: shopper}}, to_labels: {{app: web-server}},
         ports: [80, 443], through: [virtual-firewall]}}
    l2: {{mac_age: 300}}
    discovery: {{probation: 1.0, lldp_interval: 5.0}}
    controller: {{packet_in_rate: 1000, packet_in_burst: 200}}
    """
)
# name in the lab folder -> (text, a data tree to mutate, how to write a tree back)
TREE_FILES = ["lab.yaml", "rules.json", "policies/policy.yml", "routing/routes.yml"]
TRICKY = [
    "", "/", "*", "-", "~", "null", "yes", "no", "on", "0x10", "010", "1e3", "-1", "0", "65536",
    "20:21", "22:00", "8000-8080", "80-", "http", "TCP", "10.0.0.0/33", "300.1.1.1", "::1",
    "0.0.0.0/0", "fe80::/10", "a" * 300, "\u00e9", "{", "[", ":",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(TRICKY)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(TRICKY), inner, max_size=3)
    ),
    max_leaves=6,
)


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


@cache
def lab_folder() -> str:
    """The base lab on disk: the config, the seed's rules.json, policies and routing files."""
    folder = tempfile.mkdtemp(prefix="osken-fuzz-")
    atexit.register(shutil.rmtree, folder, True)  # one per test run, gone with it
    os.makedirs(f"{folder}/policies")
    os.makedirs(f"{folder}/routing")
    with open(f"{folder}/lab.yaml", "w") as fh:
        fh.write(CONFIG)
    shutil.copy(f"{DATA}/seed-rules.json", f"{folder}/rules.json")
    shutil.copy(f"{DATA}/seed-policies/microsegmentation.yml", f"{folder}/policies/policy.yml")
    routing = [
        _read(f"{DATA}/seed-routing/{n}") for n in sorted(os.listdir(f"{DATA}/seed-routing"))
    ]
    with open(f"{folder}/routing/routes.yml", "w") as fh:
        fh.write("\n---\n".join(r.strip("-\n") for r in routing) + "\n")
    return folder


BASE = {name: _read(os.path.join(lab_folder(), name)) for name in TREE_FILES}


def _trees(text: str, name: str) -> list:
    return [json.loads(text)] if name.endswith(".json") else list(yaml.safe_load_all(text))


def _text(trees: list, name: str) -> str:
    if name.endswith(".json"):
        return json.dumps(trees[0], indent=2)
    return yaml.safe_dump_all(trees, sort_keys=False, allow_unicode=True)


def _paths(node, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, at + (i,))
    return out


def _parent(tree, path: tuple):
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def tree_mutation(draw, name: str) -> str:
    """The file's data with 1-3 values replaced, deleted, added, wrapped or duplicated."""
    trees = copy.deepcopy(_trees(BASE[name], name))
    for _ in range(draw(st.integers(1, 3))):
        d = draw(st.integers(0, len(trees) - 1))
        path = draw(st.sampled_from(_paths(trees[d])))
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap", "duplicate"]))
        if not path:
            trees[d] = draw(VALUES) if op == "replace" else [trees[d]]
            continue
        parent, key = _parent(trees[d], path), path[-1]
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8) | st.sampled_from(TRICKY))] = draw(VALUES)
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    return _text(trees, name)


@st.composite
def text_mutation(draw, name: str) -> str:
    """The file's text with a line deleted, duplicated, shifted or spliced with a token."""
    lines = BASE[name].splitlines()
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "splice"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        else:
            cut = draw(st.integers(0, len(lines[i])))
            token = draw(st.sampled_from(TRICKY) | st.text(max_size=6))
            lines[i] = lines[i][:cut] + token + lines[i][cut:]
    return "\n".join(lines) + "\n"


MUTATED_FILE = st.sampled_from(TREE_FILES).flatmap(
    lambda name: st.tuples(st.just(name), tree_mutation(name) | text_mutation(name))
)


def fresh_network():
    """Every app on a small leaf-spine, the base lab applied, each host heard once."""
    core = Core()
    for app in (L2Learning, Firewall, Microseg, Services, ServiceChains):
        core.add_app(app)
    core.configure(load_config(f"{lab_folder()}/lab.yaml"), 1000.0)
    net = leaf_spine(core)
    net.now = 1000.0
    net.start()
    for mac in MACS[:6]:
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")
    return net


network = cache(fresh_network)  # shared by the fuzz tests here; others take a fresh one


def app_errors(core: Core) -> float:
    return sum(
        s.value
        for m in core.metrics.app_errors.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


def reload(net, path: str) -> dict:
    return net.core.reload(lambda: load_config(path), net.now)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(MUTATED_FILE)
def test_every_config_is_applied_whole_or_refused_with_its_place(mutation):
    name, text = mutation
    net, folder = network(), lab_folder()
    path, cfg = os.path.join(folder, name), os.path.join(folder, "lab.yaml")
    core = net.core
    before, settings_before, errors = desired_snapshot(core), core.settings, app_errors(core)
    with open(path, "w") as fh:
        fh.write(text)
    try:
        try:
            core.parse(load_config(cfg))
        except ConfigError as exc:
            assert exc.line is not None, f"not located: {exc}"
            assert reload(net, cfg) == {}
            assert desired_snapshot(core) == before and core.settings is settings_before
        else:
            net.deliver(reload(net, cfg))
            assert core.settings is not settings_before, "a valid config was not applied"
            for dpid, switch in net.switches.items():
                installed = {f.key: f for f in switch.flows()}
                assert installed == core.desired.flows[dpid], f"switch {dpid:x} differs"
        assert app_errors(core) == errors
    finally:
        with open(path, "w") as fh:
            fh.write(BASE[name])
        net.deliver(reload(net, cfg))
        assert core.config is core.candidate, "the base lab was refused after the example"


ETH_TYPES = st.sampled_from([0x0800, 0x0806, 0x86DD, 0x88CC, 0x8100, 0x88A8, 0x0000, 0xFFFF])


@st.composite
def host_frame(draw) -> tuple[str, bytes]:
    """A frame a host could send: well-formed headers cut short or followed by junk, or junk."""
    src = draw(st.sampled_from(MACS[:6]))
    dst = draw(st.sampled_from([*MACS[:6], BROADCAST, "01:80:c2:00:00:0e", "02:5e:0a:00:64:0a"]))
    eth_type = draw(ETH_TYPES)
    fields = {
        "ipv4_src": draw(st.sampled_from([IP[m] for m in MACS[:6]] + ["0.0.0.0", "10.0.100.10"])),
        "ipv4_dst": draw(st.sampled_from(["10.0.100.10", "10.0.100.11", IP[MACS[1]]])),
        "ipv6_src": "fe80::1",
        "ip_proto": draw(st.sampled_from([1, 6, 17, 58, 132, 0, 255])),
        "tcp_src": draw(st.integers(0, 65535)),
        "tcp_dst": draw(st.sampled_from([80, 53, 22, 0, 65535])),
        "udp_src": draw(st.integers(0, 65535)),
        "udp_dst": draw(st.sampled_from([80, 53, 9])),
        "arp_op": draw(st.sampled_from([1, 2, 0, 9])),
        "arp_spa": draw(st.sampled_from([IP[m] for m in MACS[:6]] + ["10.0.100.10"])),
        "arp_tpa": draw(st.sampled_from(["10.0.100.10", "10.0.100.11", IP[MACS[2]]])),
    }
    data = frame(dst, src, eth_type, payload_for(eth_type, fields))
    cut = draw(st.integers(0, len(data)))
    junk = draw(st.binary(max_size=64))
    return src, draw(st.sampled_from([data, data[:cut], data[:cut] + junk, junk]))


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "600")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
)
@given(host_frame())
def test_no_frame_from_a_host_makes_any_app_raise(sent):
    src, data = sent
    net = network()
    dpid, port = net.hosts[src]
    errors = app_errors(net.core)
    for table, app in ((0, 0x01), (0, 0x02), (1, 0x03), (2, 0x04), (7, 0x06), (8, 0x05)):
        cookie = app << 56  # the core's, then each app's: every packet-in path
        net.deliver(net.core.packet_in(dpid, port, data, table, cookie, net.now))
    assert app_errors(net.core) == errors
