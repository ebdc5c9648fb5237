"""The firewall compiled onto fake switches, with packets sent through them."""

import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.firewall import Firewall, rules
from apps.firewall.rules import load_rules_file, parse_firewall
from apps.l2_learning import L2Learning
from controller.config import ConfigError, Validator, load_config
from controller.core import Core
from controller.matches import port_masks
from controller.pipeline import PIPELINE
from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEED = os.path.join(DATA, "..", "..", "..", "shared", "seeds", "000_2d555abd2b5a208a.txt")
IP = {mac: f"10.0.0.{i}" for i, mac in enumerate(MACS, start=1)}
A, B, C = MACS[0], MACS[5], MACS[2]  # on leaves 201, 203, 202


def seed_rules_json() -> str:
    """The seed's firewall ConfigMap rules.json, kept verbatim in tests/data."""
    with open(os.path.join(DATA, "seed-rules.json")) as fh:
        return fh.read()


def test_shipped_rules_json_is_the_seeds_verbatim():
    if not os.path.exists(SEED):
        pytest.skip("shared/seeds is not beside this checkout")
    with open(SEED) as fh:
        seed = fh.read()
    indented = "".join(f"    {line}\n" if line else "\n" for line in seed_rules_json().splitlines())
    assert "  rules.json: |\n" + indented in seed


def lab(tmp_path, firewall_yaml: str, now: float = 1000.0, files: dict | None = None):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(firewall_yaml)
    core = Core()
    core.add_app(L2Learning)
    fw = core.add_app(Firewall)
    core.configure(load_config(str(cfg)), now)
    net = leaf_spine(core)
    net.now = now
    net.start()
    for a, b in [(A, B), (A, C), (B, C)]:
        net.converse(a, b)
    return net, fw, cfg


def reload(net, cfg, text):
    cfg.write_text(text)
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))


def _l4(net, src, dst, proto, port, sport):
    fields = {f"{proto}_src": sport, f"{proto}_dst": port}
    got = net.send(
        src,
        dst,
        0x0800,
        ipv4_src=IP[src],
        ipv4_dst=IP[dst],
        ip_proto=6 if proto == "tcp" else 17,
        **fields,
    )
    return got.hosts == [dst]


def tcp(net, src, dst, port, sport=40000):
    return _l4(net, src, dst, "tcp", port, sport)


def udp(net, src, dst, port):
    return _l4(net, src, dst, "udp", port, 5000)


def icmp(net, src, dst):
    got = net.send(src, dst, 0x0800, ipv4_src=IP[src], ipv4_dst=IP[dst], ip_proto=1, icmpv4_type=8)
    return got.hosts == [dst]


def test_port_ranges_become_exact_aligned_blocks():
    for lo, hi in [(0, 65535), (1, 1), (1024, 65535), (8000, 8080), (1, 65534), (22, 23)]:
        covered = set()
        for value, mask in port_masks(lo, hi):
            covered |= {p for p in range(value, value + (~mask & 0xFFFF) + 1)}
        assert covered == set(range(lo, hi + 1))
    assert len(port_masks(8000, 8080)) == 3


def test_seed_rules_json_loads_unchanged(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(seed_rules_json())
    assert json.loads(path.read_text())["rules"][2]["port"] == 22
    rules = load_rules_file(str(path))
    assert [(r.action, r.protocol, r.dst_ports) for r in rules] == [
        ("allow", "tcp", (80, 80)),
        ("allow", "tcp", (443, 443)),
        ("deny", "tcp", (22, 22)),
    ]


def test_seed_rules_end_to_end_80_443_open_22_closed(tmp_path):
    net, fw, _ = lab(
        tmp_path, "firewall:\n  rules_file: rules.json\n", files={"rules.json": seed_rules_json()}
    )
    assert tcp(net, A, B, 80) and tcp(net, A, B, 443)
    assert not tcp(net, A, B, 22)
    assert udp(net, A, B, 22) and icmp(net, A, B)  # default allow, the rules are TCP only


def test_first_match_wins_with_overlapping_and_shadowed_rules(tmp_path):
    net, _, _ = lab(
        tmp_path,
        f"""firewall:
  default: deny
  rules:
    - {{action: allow, protocol: tcp, port: 22, source: {IP[A]}/32}}
    - {{action: deny, protocol: tcp, port: 22, source: 10.0.0.0/8}}
    - {{action: allow, protocol: tcp, port: "1-1000"}}
    - {{action: allow, protocol: tcp, port: 22}}
""",
    )
    assert tcp(net, A, B, 22)  # rule 1
    assert not tcp(net, C, B, 22)  # rule 2 shadows rule 4
    assert tcp(net, C, B, 999) and not tcp(net, C, B, 1001)  # rule 3, then default deny
    assert not udp(net, C, B, 53)  # default deny
    got = net.send(C, BROADCAST, 0x0806)  # ARP is not IP: never filtered
    assert set(got.hosts) == set(MACS[:6]) - {C}


def test_port_range_edges(tmp_path):
    net, fw, _ = lab(
        tmp_path,
        """firewall:
  default: deny
  rules: [{action: allow, protocol: tcp, port: "8000-8080"}]
""",
    )
    assert all(tcp(net, A, B, p) for p in (8000, 8063, 8064, 8079, 8080))
    assert not any(tcp(net, A, B, p) for p in (7999, 8081))
    rule_flows = [
        f
        for f in net.switches[201].flows()
        if f.table == PIPELINE.table("firewall") and f.priority > 1000
    ]
    assert len(rule_flows) == 3 * 2  # three masked blocks, for IPv4 and IPv6 (no address given)


def test_ipv6_rules(tmp_path):
    net, _, _ = lab(
        tmp_path,
        """firewall:
  rules: [{action: deny, protocol: tcp, port: 80, source: "2001:db8::/32"}]
""",
    )

    def v6(src_ip):
        got = net.send(
            A, B, 0x86DD, ipv6_src=src_ip, ipv6_dst="2001:db8::2", ip_proto=6, tcp_src=1, tcp_dst=80
        )
        return got.hosts == [B]

    assert not v6("2001:db8::1")
    assert v6("2001:db9::1")
    assert tcp(net, A, B, 80)  # IPv4 untouched by an IPv6 rule


def test_blocked_ips_drop_at_every_edge(tmp_path):
    net, _, _ = lab(tmp_path, f"firewall:\n  blocked_ips: [{IP[A]}, 192.168.1.100]\n")
    assert not tcp(net, A, B, 80) and not icmp(net, A, C)
    assert tcp(net, B, C, 80)


def test_stateful_replies_pass_new_connections_the_other_way_do_not(tmp_path):
    net, _, _ = lab(
        tmp_path,
        f"""firewall:
  default: deny
  stateful: true
  rules: [{{action: allow, protocol: tcp, port: 80, destination: {IP[B]}/32}}]
""",
    )
    assert tcp(net, A, B, 80, sport=40001)  # new, allowed, committed
    assert tcp(net, B, A, 40001, sport=80)  # the reply is established
    assert not tcp(net, B, A, 40002, sport=80)  # not a reply: new, denied
    assert not tcp(net, B, A, 80, sport=40003)  # new the other way: denied


def test_one_rule_edit_sends_only_that_rules_flows(tmp_path):
    rules = [f"    - {{action: deny, protocol: tcp, port: {p}}}" for p in range(100, 140)]
    text = "firewall:\n  rules:\n" + "\n".join(rules) + "\n"
    net, _, cfg = lab(tmp_path, text)
    before = {d: len(sw.received) for d, sw in net.switches.items()}
    reload(net, cfg, text.replace("port: 120}", "port: 9120}"))
    for dpid, sw in net.switches.items():
        mods = flow_mods(sw.received[before[dpid] :])
        # the old rule's flows (IPv4 + IPv6) out, the new rule's in: nothing else
        assert len(mods) == 4, (dpid, mods)
        assert sw.commits >= 1  # a reload goes in one atomic bundle
    assert not tcp(net, A, B, 9120) and tcp(net, A, B, 120)


def flow_mods(msgs):
    """Flow-mods sent, whether on their own or inside a bundle."""
    inner = [getattr(m, "message", m) for m in msgs]
    return [m for m in inner if type(m).__name__ == "WireFlowMod"]


def test_a_switch_without_bundles_gets_ordered_updates(tmp_path, caplog):
    net, _, cfg = lab(tmp_path, "firewall:\n  rules: [{action: deny, protocol: tcp, port: 22}]\n")
    for sw in net.switches.values():
        sw.takes_bundles = False
    with caplog.at_level("WARNING", logger="osken_suite.core"):
        reload(net, cfg, "firewall:\n  rules: [{action: deny, protocol: tcp, port: 23}]\n")
    assert any("refused a bundle" in r.message for r in caplog.records)
    net.advance(2.0)  # the refused switches are re-read and repaired, in order this time
    assert tcp(net, A, B, 22) and not tcp(net, A, B, 23)
    before = {d: len(sw.received) for d, sw in net.switches.items()}
    reload(net, cfg, "firewall:\n  rules: [{action: deny, protocol: tcp, port: 24}]\n")
    assert tcp(net, A, B, 23) and not tcp(net, A, B, 24)
    sent = [m for d, sw in net.switches.items() for m in sw.received[before[d] :]]
    assert not [m for m in sent if "Bundle" in type(m).__name__]


def test_invalid_reload_changes_nothing(tmp_path):
    net, fw, cfg = lab(tmp_path, "firewall:\n  rules: [{action: deny, protocol: tcp, port: 22}]\n")
    before = {d: sorted(sw.flows(), key=repr) for d, sw in net.switches.items()}
    for bad in (
        "firewall:\n  rules: [{action: deny, protocol: tcp, port: 70000}]\n",
        "firewall:\n  rules: [{action: deny, protocol: smtp}]\n",
        "firewall:\n  rules: [{action: deny, source: 10.0.0.0/40}]\n",
        "firewall:\n  rules: [{action: deny, protocol: tcp, port: 22, colour: red}]\n",
        "firewall:\n  rules: [{action: deny\n",
    ):
        reload(net, cfg, bad)
        assert {d: sorted(sw.flows(), key=repr) for d, sw in net.switches.items()} == before
    assert not tcp(net, A, B, 22)


@pytest.mark.parametrize(
    "text, where",
    [
        (
            "firewall:\n  rules:\n    - {action: deny, protocol: tcp, port: 70000}\n",
            r"lab.yaml:3: firewall.rules\[0\].port: port 70000 is out of range",
        ),
        (
            "firewall:\n  rules:\n    - action: deny\n      protocol: smtp\n",
            r"lab.yaml:4: firewall.rules\[0\].protocol: 'smtp' is not one of",
        ),
        (
            "firewall:\n  rules:\n    - {action: deny, source: 10.1.2.3/33}\n",
            r"lab.yaml:3: firewall.rules\[0\].source: '10.1.2.3/33' is not an IP address or CIDR",
        ),
        (
            "firewall:\n  rules:\n    - {action: deny, port: 22}\n",
            r"lab.yaml:3: firewall.rules\[0\].port: ports need protocol tcp or udp",
        ),
        (  # a zone is a host's interface: accepted, its flows then failed to encode at send
            # time (netaddr refuses it), with no file or line
            "firewall:\n  blocked_ips: ['fe80::1%eth0']\n",
            r"lab.yaml:2: firewall.blocked_ips\[0\]: 'fe80::1%eth0': a zone \(%...\) is a host's",
        ),
        (
            "firewall:\n  rules:\n    - {action: deny, destination: 'fe80::%1/64'}\n",
            r"lab.yaml:3: firewall.rules\[0\].destination: 'fe80::%1/64': a zone",
        ),
        ("firewall:\n  default: maybe\n", r"lab.yaml:2: firewall.default: 'maybe' is not one of"),
        (  # YAML 1.1 read this as port 1221 (base 60); in YAML 1.2 it is no port
            "firewall:\n  rules:\n    - {action: deny, protocol: tcp, port: 20:21}\n",
            r"lab.yaml:3: firewall.rules\[0\].port: '20:21' is not a port or a range like",
        ),
        (
            "firewall:\n  rules:\n    - {action: deny, protocol: tcp, source_port: 1:30:00}\n",
            r"lab.yaml:3: firewall.rules\[0\].source_port: '1:30:00' is not a port or a range",
        ),
        (
            "firewall:\n  stateful: on\n",
            r"lab.yaml:2: firewall.stateful: 'on' is not of type 'boolean'",
        ),
        (
            "firewall:\n  rules:\n    - {action: rate_limit, protocol: udp}\n",
            r"lab.yaml:3: firewall.rules\[0\].action: action rate_limit and a rate_limit block",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, where):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(text)
    core = Core()
    core.add_app(Firewall)
    with pytest.raises(ConfigError) as info:
        core.parse(load_config(str(cfg)))
    assert re.search(where, str(info.value)), str(info.value)


def test_rules_file_errors_name_that_file(tmp_path):
    (tmp_path / "rules.json").write_text('{"rules": [\n  {"action": "allow", "port": 80}\n]}\n')
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  rules_file: rules.json\n")
    core = Core()
    core.add_app(Firewall)
    with pytest.raises(ConfigError, match=r"rules.json:2: rules\[0\].port: ports need"):
        core.parse(load_config(str(cfg)))
    (tmp_path / "rules.json").write_text('{"rules": [\n  {"action": "allow",}\n]}\n')
    with pytest.raises(ConfigError, match=r"rules.json:2: JSON syntax error"):
        core.parse(load_config(str(cfg)))


def test_schedule_opens_and_closes_on_time(tmp_path):
    friday = 1795737600.0  # 2026-11-27 00:00 UTC, a Friday
    net, fw, _ = lab(
        tmp_path,
        """firewall:
  default: deny
  rules:
    - action: allow
      protocol: tcp
      port: 5432
      schedule: {days: [fri], start: "22:00", end: "02:00", timezone: UTC}
""",
        now=friday + 21 * 3600 + 59 * 60,
    )

    def at(hh, mm, ss, day=0):
        target = friday + day * 86400 + hh * 3600 + mm * 60 + ss
        net.advance(target - 1 - net.now, step=target - 1 - net.now)  # one jump, then tick
        net.advance(1.0)

    assert not tcp(net, A, B, 5432)
    at(22, 0, 1)
    assert tcp(net, A, B, 5432)
    at(1, 59, 0, day=1)  # Saturday, still inside Friday's window
    assert tcp(net, A, B, 5432)
    at(2, 0, 1, day=1)
    assert not tcp(net, A, B, 5432)
    at(22, 0, 1, day=1)  # Saturday evening: not a scheduled day
    assert not tcp(net, A, B, 5432)


def test_unquoted_times_are_times_of_day(tmp_path):
    """`start: 22:00` unquoted: YAML 1.1 made it the integer 1320 (and `02:00` a string); read
    as YAML 1.2 both are the times they look like."""
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(
        "firewall:\n  rules:\n    - {action: allow, protocol: tcp, port: 5432,\n"
        "       schedule: {days: [fri], start: 22:00, end: 02:00:30}}\n"
    )
    config = load_config(str(cfg))
    (rule,) = parse_firewall(config.section("firewall"), config).rules
    assert (rule.schedule.start, rule.schedule.end) == (22 * 3600, 2 * 3600 + 30)
    assert rule.describe() == "allow tcp port 5432 during fri 22:00-02:00:30 UTC"


def test_restart_inside_the_window_restores_the_rule(tmp_path):
    inside = 1795737600.0 + 23 * 3600
    net, _, _ = lab(
        tmp_path,
        """firewall:
  default: deny
  rules:
    - {action: allow, protocol: tcp, port: 5432,
       schedule: {days: [fri], start: "22:00", end: "02:00"}}
""",
        now=inside,
    )
    assert tcp(net, A, B, 5432)


def test_rate_limit_becomes_a_meter_from_the_token_bucket(tmp_path):
    net, _, _ = lab(
        tmp_path,
        """firewall:
  rules:
    - action: rate_limit
      protocol: udp
      port: 5001
      rate_limit: {max_tokens: 100, tokens_per_fill: 1000, fill_interval: 1s}
""",
    )
    meters = [m for m in net.switches[201].meter_configs() if m.meter_id < 0xFFFF0000]
    assert len(meters) == 1 and (meters[0].unit, meters[0].rate, meters[0].burst) == (
        "pktps",
        1000,
        100,
    )
    assert udp(net, A, B, 5001)  # metered, not dropped, in the model


def test_counters_per_rule_and_rate_limited_deny_logs(tmp_path, caplog):
    net, fw, _ = lab(
        tmp_path,
        """firewall:
  rules:
    - {action: deny, protocol: tcp, port: 22}
    - {action: allow, protocol: tcp, port: 80}
""",
    )
    for _ in range(3):
        tcp(net, A, B, 22)
    tcp(net, A, B, 80)
    with caplog.at_level("INFO", logger="osken_suite.firewall"):
        net.advance(6.0)
        for _ in range(2):
            tcp(net, A, B, 22)
        net.advance(6.0)
    reg = net.core.metrics.registry
    denied = reg.get_sample_value(
        "osken_firewall_rule_packets",
        {"rule": "1", "action": "deny", "description": "deny tcp port 22"},
    )
    allowed = reg.get_sample_value(
        "osken_firewall_rule_packets",
        {"rule": "2", "action": "allow", "description": "allow tcp port 80"},
    )
    assert (denied, allowed) == (5, 1)
    logs = [r.message for r in caplog.records if "denied" in r.message]
    assert logs == [
        "firewall: rule 1 (deny tcp port 22) denied 3 packets (3 in all)",
        "firewall: rule 1 (deny tcp port 22) denied 2 packets (5 in all)",
    ]


def test_reordering_rules_keeps_first_match_exact(tmp_path):
    first = "    - {action: allow, protocol: tcp, port: 22}\n"
    second = '    - {action: deny, protocol: tcp, port: "1-1000"}\n'
    net, _, cfg = lab(tmp_path, "firewall:\n  rules:\n" + first + second)
    assert tcp(net, A, B, 22) and not tcp(net, A, B, 23)
    reload(net, cfg, "firewall:\n  rules:\n" + second + first)
    assert not tcp(net, A, B, 22) and not tcp(net, A, B, 23)
    reload(net, cfg, "firewall:\n  rules:\n" + first + second)
    assert tcp(net, A, B, 22)


def test_an_edit_that_repeats_another_rule_is_still_shadowed_correctly(tmp_path):
    rules = [
        "    - {action: deny, protocol: tcp, port: 22}\n",
        "    - {action: allow, protocol: tcp, port: 80}\n",
        "    - {action: allow, protocol: tcp, port: 22}\n",
    ]
    net, _, cfg = lab(tmp_path, "firewall:\n  rules:\n" + "".join(rules))
    assert not tcp(net, A, B, 22)
    rules[1] = rules[0]  # now rules 1 and 2 are the same deny
    reload(net, cfg, "firewall:\n  rules:\n" + "".join(rules))
    assert not tcp(net, A, B, 22) and tcp(net, A, B, 80)  # 80: no rule left, default allow
    rules[0] = "    - {action: allow, protocol: tcp, port: 443}\n"
    reload(net, cfg, "firewall:\n  rules:\n" + "".join(rules))
    assert not tcp(net, A, B, 22) and tcp(net, A, B, 443)


def test_blocking_a_source_cuts_its_established_connections_too(tmp_path):
    text = """firewall:
  default: deny
  stateful: true
  rules: [{action: allow, protocol: tcp, port: 80}]
"""
    net, _, cfg = lab(tmp_path, text)
    near = MACS[1]  # on A's switch: only that switch can stop it
    net.converse(A, near)
    assert tcp(net, A, near, 80, sport=41000) and tcp(net, near, A, 41000, sport=80)
    reload(net, cfg, text + f"  blocked_ips: [{IP[A]}]\n")
    assert not tcp(net, A, near, 80, sport=41000)  # established, but its source is now blocked


def test_offload_plan_takes_only_what_xdp_can_enforce_exactly():
    import ipaddress

    from apps.firewall.rules import FirewallRule
    from ebpf.offload import plan

    net = ipaddress.ip_network
    rules = [
        (10, FirewallRule("allow", "tcp", net("10.0.0.5/32"), dst_ports=(22, 22))),
        (
            9,
            FirewallRule("deny", "tcp", net("10.0.0.0/8"), dst_ports=(22, 22)),
        ),  # allow above overlaps
        (8, FirewallRule("deny", "udp", dst_ports=(53, 53))),  # offloaded
        (7, FirewallRule("deny", "tcp", destination=net("10.9.0.0/16"))),  # has a destination
        (6, FirewallRule("deny", "tcp", net("192.168.0.0/16"), dst_ports=(1, 5000))),  # too wide
        (5, FirewallRule("deny", "any", net("172.16.0.0/12"))),  # a blocked prefix
    ]
    entries, decisions = plan(rules, (net("192.0.2.1/32"),), 0xFFFF, stateful=False)
    reasons = {rule_id: reason for rule_id, _, reason in decisions}
    assert reasons[8] is None and reasons[5] is None
    assert "earlier allow" in reasons[9] and "destination" in reasons[7]
    assert "range" in reasons[6]
    assert {(e.table, e.rule) for e in entries} == {
        ("blocked4", 0xFFFF),
        ("ports4", 8),
        ("ports6", 8),
        ("blocked4", 5),
    }
    _, stateful = plan(rules, (), 0xFFFF, stateful=True)
    assert all("stateful" in reason for _, _, reason in stateful)


def test_two_rules_edited_into_the_same_rule_and_back(tmp_path):
    """Two edited rules that became one text shared a key, and editing them back raised
    KeyError while applying (found by fuzzing)."""
    base = "firewall:\n  rules:\n" + "".join(
        f"    - {{action: deny, protocol: tcp, port: {p}}}\n" for p in (22, 23, 24)
    )
    same = base.replace("port: 22}", "port: 25}").replace("port: 23}", "port: 25}")
    net, fw, cfg = lab(tmp_path, base)
    for text in (same, base, same):
        reload(net, cfg, text)
        assert net.core.config is net.core.candidate  # applied, not refused
    keys = [k for k, _, _ in fw.rules]
    assert len(set(keys)) == len(keys) == 3
    assert not tcp(net, A, B, 25) and tcp(net, A, B, 22) and not tcp(net, A, B, 24)


def test_a_rules_file_that_cannot_be_read_is_refused_at_the_line_naming_it(tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  default: allow\n  rules_file: nope.json\n")
    core = Core()
    core.add_app(Firewall)
    with pytest.raises(ConfigError, match=r"lab.yaml:3: firewall.rules_file: cannot read"):
        core.parse(load_config(str(cfg)))


def test_a_one_rule_edit_is_found_by_value_not_by_a_cache_elsewhere(tmp_path):
    """Each firewall app keeps its own parse cache; the small-edit path compares rules by what
    they say and where, so it holds when nothing was cached (another core parsed the rules)."""
    rules = [f"    - {{action: deny, protocol: tcp, port: {p}}}" for p in range(100, 140)]
    text = "firewall:\n  rules:\n" + "\n".join(rules) + "\n"
    net, fw, cfg = lab(tmp_path, text)
    other = Core().add_app(Firewall)
    parsed = other.parse_config(load_config(str(cfg)).section("firewall"), load_config(str(cfg)))
    assert all(a is not b for a, b in zip(parsed.rules, fw.settings.rules, strict=True))
    fw.rule_cache.by_text.clear()
    fw.rule_cache.lists.clear()
    before = {d: len(sw.received) for d, sw in net.switches.items()}
    edited = fw._edit_in_place
    calls = []
    fw._edit_in_place = lambda settings, now: calls.append(edited(settings, now)) or calls[-1]
    reload(net, cfg, text.replace("port: 120}", "port: 9120}"))
    assert calls == [True]  # the small-edit path took it
    for dpid, sw in net.switches.items():
        assert len(flow_mods(sw.received[before[dpid] :])) == 4, dpid
    assert not tcp(net, A, B, 9120) and tcp(net, A, B, 120)


_RULE_VALUES = st.one_of(
    st.sampled_from(["allow", "deny", "rate_limit", "tcp", "udp", "icmp", "any", "10.0.0.0/8"]),
    st.integers(-5, 300),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.just({"pps": 10}),
)
_RULE_KEYS = st.sampled_from(
    ["action", "protocol", "source", "destination", "port", "source_port", "icmp_type", "name"]
    + ["destination_port", "schedule", "rate_limit", "colour"]
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_RULE_KEYS, _RULE_VALUES, max_size=6))
def test_the_rule_fast_path_never_passes_what_the_schema_refuses(spec):
    """`_plainly_valid` only spares jsonschema's cost: whatever it passes, the schema passes."""
    if rules._plainly_valid(spec):
        assert not list(Validator(rules._RULE).iter_errors(spec)), spec


def test_the_fast_path_covers_only_the_edges_of_switches_this_replica_masters(tmp_path):
    """Replicas (docs/ha.md): an XDP program on a switch's ports is a write too, so it follows
    the switch's master; alone, a controller masters every switch."""
    net, fw, _ = lab(tmp_path, "firewall:\n  blocked_ips: [192.168.1.100]\n")
    every = fw._edge_interfaces()
    edge_switches = {d for d in net.switches if net.core.topology.edge_ports(d)}
    assert every and len(edge_switches) == 3
    net.core.is_master = lambda dpid: dpid == 201  # a replica that masters leaf 201 only
    mine = fw._edge_interfaces()
    ports = net.core.view.ports(201)
    assert set(mine) == {ports[p].name for p in net.core.topology.edge_ports(201)} < set(every)
