"""One rules.json parser for the firewall app and the VNF agent: the same text means the same
rules to both, and a refusal names the same rule and field."""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.firewall.rules import load_rules_file, parse_firewall
from controller.config import ConfigError, load_config
from vnf.firewall.agent import RuleError, compile_rules
from vnf.firewall.rulesfile import RuleFormatError, loads

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def app_verdict(tmp_path, text: str):
    """(True, rules) or (False, 'rules[0].port') as the firewall app reads the file."""
    path = tmp_path / "rules.json"
    path.write_text(text)
    try:
        return True, load_rules_file(str(path))
    except ConfigError as exc:
        return False, exc.where


def vnf_verdict(text: str):
    """(True, nft script) or (False, 'rules[0].port') as the VNF agent reads the text."""
    try:
        return True, compile_rules(text)
    except RuleError as exc:
        return False, str(exc)


def rules_json(*rules, **top) -> str:
    return json.dumps({"rules": list(rules), **top}, indent=1)


SAME = [
    # (rules, where both refuse it or None); all IPv4: what both enforce
    ({"action": "deny", "protocol": "tcp", "port": 0}, None),  # port 0 is a port
    ({"action": "deny", "protocol": "udp", "port": "0-1023"}, None),
    ({"action": "deny", "protocol": "tcp", "port": 65535, "source": "10.0.0.1/8"}, None),
    ({"action": "allow", "protocol": "tcp", "source_port": 53}, None),
    ({"action": "allow", "source": "0.0.0.0/0", "destination": "10.1.2.3"}, None),
    ({"action": "deny", "protocol": "tcp", "port": 65536}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": -1}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": "80-"}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": "+80"}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": "8_0"}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": "90-80"}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": True}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": 80.0}, "rules[0].port"),
    ({"action": "deny", "protocol": "tcp", "port": None}, "rules[0].port"),
    ({"action": "deny", "protocol": "icmp", "port": 1}, "rules[0].port"),
    ({"action": "deny", "protocol": "TCP"}, "rules[0].protocol"),
    ({"action": "deny", "source": "any"}, "rules[0].source"),
    ({"action": "deny", "source": ""}, "rules[0].source"),
    ({"action": "deny", "source": "10.0.0.300"}, "rules[0].source"),
    ({"action": "deny", "source": "fe80::1%eth0"}, "rules[0].source"),  # a host's zone
    ({"action": "maybe"}, "rules[0].action"),
    ({"protocol": "tcp"}, "rules[0]"),
    ({"action": "deny", "colour": "red"}, "rules[0].colour"),
    ({"action": "deny", "port": 1, "destination_port": 2, "protocol": "tcp"}, "rules[0]"),
]


@pytest.mark.parametrize(("rule", "where"), SAME)
def test_the_app_and_the_vnf_agree(tmp_path, rule, where):
    text = rules_json(rule)
    app_ok, app = app_verdict(tmp_path, text)
    vnf_ok, vnf = vnf_verdict(text)
    assert app_ok == vnf_ok == (where is None), (app, vnf)
    if where is not None:
        assert app.startswith(where) and vnf.startswith(where), (app, vnf)


def test_the_seed_file_means_the_same_to_both(tmp_path):
    with open(os.path.join(DATA, "seed-rules.json")) as fh:
        text = fh.read()
    ok, rules = app_verdict(tmp_path, text)
    assert ok and [(r.action, r.protocol, r.dst_ports) for r in rules] == [
        ("allow", "tcp", (80, 80)),
        ("allow", "tcp", (443, 443)),
        ("deny", "tcp", (22, 22)),
    ]
    ok, script = vnf_verdict(text)
    assert ok and script.count("ct direction original") == 3


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"action": "deny", "source": "2001:db8::/32"}, "source"),
        ({"action": "deny", "protocol": "icmpv6"}, "protocol"),
        ({"action": "deny", "protocol": "icmp", "icmp_type": 8}, "icmp_type"),
        ({"action": "deny", "schedule": {"start": "01:00", "end": "02:00"}}, "schedule"),
    ],
)
def test_what_the_vnf_cannot_enforce_is_refused_by_name_not_misread(tmp_path, rule, field):
    text = rules_json(rule)
    assert app_verdict(tmp_path, text)[0]  # valid rules.json ...
    with pytest.raises(RuleError, match=rf"^rules\[0\]\.{field}: "):
        compile_rules(text)  # ... that a bridge of IPv4 does not judge, and says so


def test_a_files_default_is_read_by_both(tmp_path):
    text = rules_json({"action": "allow", "protocol": "tcp", "port": 22}, default="deny")
    assert "policy drop;" in compile_rules(text).split("table inet")[-1]
    (tmp_path / "rules.json").write_text(text)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  rules_file: rules.json\n")
    config = load_config(str(cfg))
    assert parse_firewall(config.data["firewall"], config).default == "deny"
    cfg.write_text("firewall:\n  rules_file: rules.json\n  default: allow\n")
    config = load_config(str(cfg))
    with pytest.raises(ConfigError, match=r"lab.yaml:3: firewall.default: allow here, but deny"):
        parse_firewall(config.data["firewall"], config)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"rules": [], "rules": []}', ""),
        ('{"rules": [{"action": "deny", "action": "allow"}]}', ""),
        ('{"rules": [], "colour": 1}', "colour"),
        ('{"rules": [], "default": "maybe"}', "default"),
        ('{"rules": {}}', ""),
    ],
)
def test_the_top_level_is_checked_alike(tmp_path, text, where):
    with pytest.raises(RuleFormatError) as err:
        loads(text)
    assert err.value.where == ((where,) if where else ())
    assert app_verdict(tmp_path, text)[0] is vnf_verdict(text)[0] is False


def test_the_app_names_the_line_of_a_bad_field(tmp_path):
    (tmp_path / "rules.json").write_text('{"rules": [\n {"action": "deny",\n  "port": 0.5}]}')
    with pytest.raises(ConfigError, match=r"rules.json:3: rules\[0\].port"):
        load_rules_file(str(tmp_path / "rules.json"))


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 70000),
    st.sampled_from(["tcp", "udp", "icmp", "any", "allow", "deny", "10.0.0.0/8", "1.2.3.4", ""]),
    st.sampled_from(["0", "80", "8000-8080", "80-", "-80", " 22 ", "x", "1-2-3", "any"]),
)
KEYS = st.sampled_from(
    ["action", "protocol", "port", "destination_port", "source_port", "source", "destination"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_any_rule_gets_one_verdict_from_both(tmp_path_factory, rule):
    tmp_path = tmp_path_factory.mktemp("rules")
    text = rules_json(rule)
    app_ok, app = app_verdict(tmp_path, text)
    vnf_ok, vnf = vnf_verdict(text)
    assert app_ok == vnf_ok, (app, vnf)  # all IPv4 here: what both enforce
    if not app_ok:  # the same rule; with several faults each may name a different one first
        assert app.startswith("rules[0]") and vnf.startswith("rules[0]"), (app, vnf)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="needs root, nft and unshare",
)
def test_every_rule_both_accept_is_one_nft_takes():
    """nft checks (-c, nothing applied) the VNF's script in a throwaway network namespace."""
    rules = [rule for rule, where in SAME if where is None]
    script = compile_rules(rules_json(*rules))
    done = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", "-"], input=script, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stderr


def test_the_vnf_names_the_line_too(tmp_path):
    text = '{"default": "deny",\n "rules": [\n  {"action": "deny"},\n  {"action": "deny",\n'
    text += '   "port": 0.5}]}'
    with pytest.raises(RuleError) as err:
        compile_rules(text)
    assert err.value.at("rules.json") == (
        "rules.json:5: rules[1].port: 0.5 is not a port or a range like 8000-8080"
    )
    assert app_verdict(tmp_path, text) == (False, "rules[1].port")
