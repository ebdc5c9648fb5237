"""VNF manifests (the seed's Deployment and ConfigMap) and the firewall agent's rule compiler."""

import json
import os
import textwrap

import pytest

from controller.config import ConfigError
from vnf.firewall import agent
from vnf.firewall.agent import RuleError, compile_rules
from vnf.manifest import load_manifest, memory_bytes, resolved_env

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEED_VNF = os.path.join(DATA, "seed-vnf", "vnf-deployment.yml")
SEED = os.path.join(DATA, "..", "..", "..", "shared", "seeds", "000_2d555abd2b5a208a.txt")


def test_the_seed_deployment_and_configmap_load_as_written():
    m = load_manifest(SEED_VNF)
    (d,) = m.deployments
    c = d.container
    assert (d.name, d.replicas, d.labels) == ("virtual-firewall", 2, (("app", "virtual-firewall"),))
    assert (c.image, c.capabilities) == ("custom/virtual-firewall:latest", ("NET_ADMIN",))
    assert (c.memory_limit, c.cpu_limit) == (512 * 2**20, 0.5)
    assert (c.memory_request, c.cpu_request) == (256 * 2**20, 0.2)
    assert c.env_from == (("FIREWALL_RULES", "firewall-config", "rules.json"),)
    rules = resolved_env(d, m.configmaps)["FIREWALL_RULES"]
    assert '"port": 22' in rules


def test_the_seed_file_is_the_seeds_verbatim():
    if not os.path.exists(SEED):
        pytest.skip("shared/seeds is not beside this checkout")
    with open(SEED) as fh, open(SEED_VNF) as mine:
        assert mine.read() in fh.read()


def write(tmp_path, text: str) -> str:
    path = tmp_path / "vnf.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


BASE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: fw}
spec:
  replicas: 1
  selector: {matchLabels: {app: fw}}
  template:
    metadata: {labels: {app: fw}}
    spec:
      containers:
        - name: firewall
          image: custom/virtual-firewall:latest
          env:
            - name: FIREWALL_RULES
              valueFrom: {configMapKeyRef: {name: cfg, key: rules.json}}
          resources: {limits: {memory: 64Mi, cpu: 250m}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {rules.json: '{"rules": []}'}
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        (
            "selector: {matchLabels: {app: fw}}",
            "selector: {matchLabels: {app: other}}",
            6,
            "does not match the pod template",
        ),
        ("key: rules.json}", "key: missing.json}", 15, "has no key 'missing.json'"),
        ("memory: 64Mi", "memory: 64 apples", 16, "not a memory quantity"),
        ("cpu: 250m", "cpu: 2 cores", 16, "not a cpu quantity"),
        ("replicas: 1", "replicas: -1", 5, "from 0 to 99"),
        # shapes come from vnf/schemas.py, located like the config's
        ("replicas: 1", "replicas: two", 5, "is not of type 'integer'"),
        ("image: custom/virtual-firewall:latest", "image: 5", 12, "5 is not a string: quote it"),
        ("image: custom/virtual-firewall:latest", "imagePullPolicy: Always", 11, "'image' is a"),
        ("key: rules.json}", "key: 7}", 15, "7 is not a string: quote it"),
        ("memory: 64Mi", "memory: [64Mi]", 16, "is not of type 'string', 'number'"),
        ("{rules.json: '{\"rules\": []}'}", "{rules.json: 1.10}", 21, "1.1 is not a string"),
        ("containers:", "containers: {}\n      x:", 10, "is not of type 'array'"),
        # an env value is a string too: these became "1.1", "True" and "{'x': 1}"
        ("env:", "env:\n            - {name: V, value: 1.10}", 14, "1.1 is not of type 'string'"),
        ("env:", "env:\n            - {name: V, value: true}", 14, "True is not of type 'string'"),
        ("env:", "env:\n            - {name: V, value: {x: 1}}", 14, "is not of type 'string'"),
        # limits Docker refuses at `docker run`, or that became no limit at all (0 bytes)
        ("memory: 64Mi", "memory: '0.5'", 16, "'0.5' is below Docker's least memory limit"),
        ("memory: 64Mi", "memory: 1Mi", 16, "'1Mi' is below Docker's least memory limit"),
        ("cpu: 250m", "cpu: 0m", 16, "'0m' is below Docker's least cpu limit"),
        ("cpu: 250m", "cpu: 250m}, requests: {cpu: '1'", 16, "more than the cpu limit"),
    ],
)
def test_bad_manifests_are_refused_with_file_line_and_field(tmp_path, old, new, line, message):
    assert old in BASE
    with pytest.raises(ConfigError) as err:
        load_manifest(write(tmp_path, BASE.replace(old, new)))
    assert err.value.line == line and message in str(err.value)


def test_seed_rules_compile_to_one_atomic_nft_transaction():
    m = load_manifest(SEED_VNF)
    script = compile_rules(m.configmaps["firewall-config"]["rules.json"])
    assert script.startswith("table bridge osken_vnf {}\ndelete table bridge osken_vnf\n")
    assert "table inet osken_vnf {}\ndelete table inet osken_vnf\n" in script  # same transaction
    body = [line.strip() for line in script.splitlines()]
    rule = "ct direction {} meta nfproto ipv4 meta l4proto tcp tcp {} {} {}".format
    assert (
        body.index("ct state invalid drop")
        < body.index("ct state new meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn drop")
        < body.index("ct state related accept")
        < body.index(rule("original", "dport", 80, "accept"))
        < body.index(rule("reply", "sport", 80, "accept"))
        < body.index(rule("original", "dport", 22, "drop"))
        < body.index(rule("reply", "sport", 22, "drop"))
    )
    # a source port alone never lets a packet through: only a reply of an allowed connection
    assert all(line.startswith("ct direction reply") for line in body if " sport " in line)
    assert body.count("type filter hook forward priority 0; policy accept;") == 1  # the rules'
    assert body.count("type filter hook forward priority 0; policy drop;") == 1  # the bridge's
    assert body[body.index("table bridge osken_vnf {") + 3 :][:3] == [
        "ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 drop",
        "ether type arp accept",
        "ether type ip accept",  # and nothing else: no IPv6, no VLAN tags
    ]


def test_a_default_deny_and_addresses():
    script = compile_rules(
        '{"default": "deny", "rules": [{"action": "allow", "protocol": "udp", "port": "5000-5010",'
        ' "source": "10.0.0.0/8", "destination": "10.1.2.3"}]}'
    )
    assert "policy drop;" in script.split("table inet")[-1]
    udp = "meta l4proto udp udp"
    assert (
        f"original meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr 10.1.2.3/32 {udp} dport" in script
    )
    assert f"reply meta nfproto ipv4 ip saddr 10.1.2.3/32 ip daddr 10.0.0.0/8 {udp} sport" in script


def test_br_netfilter_is_turned_on_where_it_may_be(tmp_path, monkeypatch):
    switch = tmp_path / "bridge-nf-call-iptables"
    switch.write_text("0\n")
    monkeypatch.setattr(agent, "BRIDGE_NF", str(switch))
    assert agent.bridge_netfilter() is None and switch.read_text() == "1"


def test_without_br_netfilter_the_agent_fails_closed_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "BRIDGE_NF", str(tmp_path))  # a folder: cannot be read or set
    monkeypatch.setattr(agent, "STATUS", str(tmp_path / "status.json"))
    scripts = []
    monkeypatch.setattr(agent, "_run", lambda *cmd, stdin=None: scripts.append(stdin))
    assert not agent.apply('{"rules": []}', "test")
    assert scripts == [agent.FAIL_CLOSED]
    assert "policy accept" not in agent.FAIL_CLOSED and "accept\n" not in agent.FAIL_CLOSED
    status = json.loads((tmp_path / "status.json").read_text())
    assert not status["ok"] and "bridge-nf-call-iptables is off" in status["error"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("{not json", "not JSON"),
        ('{"rules": [{"action": "maybe"}]}', "rules[0].action"),
        ('{"rules": [{"action": "deny", "protocol": "tcp", "port": 70000}]}', "rules[0].port"),
        ('{"rules": [{"action": "deny", "protocol": "icmp", "port": 1}]}', "need protocol"),
        ('{"rules": [{"action": "deny", "source": "10.0.0.300"}]}', "rules[0].source"),
        ('{"rules": [{"action": "deny", "colour": "red"}]}', "rules[0].colour: unknown"),
    ],
)
def test_bad_rules_are_named(rules, message):
    with pytest.raises(RuleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compile_rules(rules)


def test_the_vnf_tool_names_a_bad_file_and_exits_2(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "vnf_tool", os.path.join(os.path.dirname(DATA), "..", "scripts", "vnf.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bad = write(tmp_path, BASE.replace("replicas: 1", "replicas: many"))
    assert tool.main(["status", bad]) == 2
    assert "vnf.yml:5: spec.replicas" in capsys.readouterr().err


def test_an_env_value_left_empty_is_the_empty_string_as_kubernetes_reads_it(tmp_path):
    text = BASE.replace("env:", "env:\n            - {name: V, value: }")
    (d,) = load_manifest(write(tmp_path, text)).deployments
    assert ("V", "") in d.container.env


def test_a_fraction_of_a_byte_rounds_up_as_a_kubernetes_quantity_does():
    assert memory_bytes("6291455.5") == 6291456
