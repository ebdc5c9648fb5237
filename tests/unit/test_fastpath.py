"""The firewall's XDP fast path logic, with a stand-in for the kernel program."""

import ipaddress
import time

import pytest

import ebpf.xdp
from apps.firewall.fastpath import FastPath
from apps.firewall.rules import FirewallRule, XdpSettings


class StandInProgram:
    """Keeps entries and counts drops as the real program would, without a kernel."""

    def __init__(self) -> None:
        self.attached: dict[str, int] = {}
        self.entries: dict = {}
        self.drops: dict[int, int] = {}
        self.closed = False

    def attach(self, ifname, mode):
        self.attached[ifname] = 1
        return "generic"

    def detach(self, ifname):
        return self.attached.pop(ifname, None) is not None

    def detach_all(self):
        self.attached.clear()

    def close(self):
        self.closed = True

    def sync(self, entries):
        new = {e.key: e for e in entries}
        changed = len(new.keys() ^ self.entries.keys())
        self.entries = new
        return changed, 0

    def counters(self, rules=None):
        rules = self.drops if rules is None else rules
        return {rule: (self.drops.get(rule, 0), self.drops.get(rule, 0) * 64) for rule in rules}


@pytest.fixture
def stand_in(monkeypatch):
    prog = StandInProgram()
    monkeypatch.setattr(ebpf.xdp, "unavailable", lambda: None)
    monkeypatch.setattr(ebpf.xdp, "XdpProgram", lambda: prog)
    return prog


def _mac_of(name: str) -> str:
    with open(f"/sys/class/net/{name}/address") as fh:
        return fh.read().strip()


LO = {"lo": _mac_of("lo")}  # a switch port as the firewall gives it: name -> its MAC
RULES = [
    (100, FirewallRule("deny", "udp", dst_ports=(5001, 5001))),
    (90, FirewallRule("deny", "tcp", ipaddress.ip_network("10.0.0.0/8"), dst_ports=(22, 22))),
]


def test_off_is_said_once_with_the_reason(monkeypatch, caplog):
    monkeypatch.setattr(ebpf.xdp, "unavailable", lambda: "it needs root")
    fp = FastPath()
    with caplog.at_level("WARNING"):
        for _ in range(3):
            fp.update(RULES, (), 0xFFFF, False, LO)
            fp.wait_loaded()
    said = [r.message for r in caplog.records if "fast path off" in r.message]
    assert said == ["XDP fast path off: it needs root; the firewall runs in OpenFlow alone"]
    assert fp.counters() == {}


def loaded(fp: FastPath) -> FastPath:
    """Start the (threaded) load and wait for it, as the firewall's tick would."""
    fp.update(RULES, (), 0xFFFF, False, LO)
    fp.wait_loaded()
    assert fp.loaded() and not fp.loaded()  # said once
    return fp


def test_all_mode_offloads_every_expressible_rule(stand_in):
    fp = loaded(FastPath())
    fp.update(RULES, (ipaddress.ip_network("192.0.2.1/32"),), 0xFFFF, False, LO)
    assert {e.rule for e in stand_in.entries.values()} == {100, 90, 0xFFFF}
    assert set(stand_in.attached) == {"lo"}
    fp.update(RULES, (), 0xFFFF, False, {})
    assert stand_in.attached == {}


def test_adaptive_mode_offloads_hot_rules_and_withdraws_idle_ones(stand_in):
    fp = FastPath()
    fp.configure(XdpSettings(offload="adaptive", threshold_pps=100, idle_seconds=10))
    loaded(fp)
    fp.update(RULES, (ipaddress.ip_network("192.0.2.1/32"),), 0xFFFF, False, LO)
    assert {e.rule for e in stand_in.entries.values()} == {0xFFFF}  # blocked: always
    assert fp.adapt({100: 500.0, 90: 5.0}, now=0.0)  # rule 100 is hot
    fp.update(RULES, (), 0xFFFF, False, LO)
    assert {e.rule for e in stand_in.entries.values()} == {100}
    stand_in.drops[100] = 1000
    assert not fp.adapt({}, now=5.0)  # still dropping: stays
    assert not fp.adapt({}, now=14.0)  # idle 9 s: stays
    assert fp.adapt({}, now=16.0)  # idle over 10 s: withdrawn
    fp.update(RULES, (), 0xFFFF, False, LO)
    assert stand_in.entries == {}
    assert fp.counters()[100] == (1000, 64000)  # what it dropped still counts


def test_indexed_planner_decides_exactly_as_a_plain_scan():
    """The index only skips passers that cannot overlap: decisions and reasons are unchanged."""
    import random

    from ebpf.offload import may_overlap, plan

    nets = [
        None,
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.2.0.0/16",
        "0.0.0.0/0",
        "192.168.0.0/16",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::/0",
    ]
    rng = random.Random(7)

    def random_rule():
        proto = rng.choice(["any", "tcp", "udp", "icmp", "icmpv6"])
        src = rng.choice(nets)
        src = ipaddress.ip_network(src) if src else None
        if (
            src is not None
            and proto in ("icmp", "icmpv6")
            and src.version != (4 if proto == "icmp" else 6)
        ):
            src = None
        ports = None
        if proto in ("tcp", "udp") and rng.random() < 0.7:
            lo = rng.choice([22, 80, 443, 1000, 8000])
            ports = (lo, lo + rng.choice([0, 0, 10, 500]))
        dst = (
            ipaddress.ip_network("10.9.0.0/16")
            if rng.random() < 0.1 and (src is None or src.version == 4) and proto != "icmpv6"
            else None
        )
        icmp = rng.choice([None, 0, 8]) if proto in ("icmp", "icmpv6") else None
        return FirewallRule(
            rng.choice(["deny", "deny", "allow", "rate_limit"]),
            proto,
            src,
            dst,
            dst_ports=ports,
            icmp_type=icmp,
        )

    for _ in range(300):
        rules = [(1000 - i, random_rule()) for i in range(rng.randint(1, 40))]
        _, decisions = plan(rules, (), 0xFFFF, False)
        expected, seen = [], []
        for rule_id, rule in rules:  # the plain scan, as the planner first did it
            if rule.action == "deny":
                first = next((o for o in seen if o.action != "deny" and may_overlap(o, rule)), None)
                reason = (
                    None
                    if first is None
                    else (
                        f"an earlier {first.action} rule ({first.describe()}) may match the same "
                        "packets"
                    )
                )
                expected.append((rule_id, reason))
            seen.append(rule)
        for (rule_id, _, reason), (_, plain) in zip(decisions, expected, strict=True):
            if reason is None or reason.startswith("an earlier"):  # the overlap check decided
                assert reason == plain, (rule_id, rules)
            else:  # a check before it (destination, schedule ...) decided first, as before
                assert reason


def test_shutdown_detaches_and_releases_the_program_but_off_keeps_it(stand_in):
    fp = loaded(FastPath())
    fp.update(RULES, (), 0xFFFF, False, LO)
    fp.configure(XdpSettings(mode="off"))
    assert not stand_in.attached and not stand_in.closed  # off: loaded still, for coming back
    fp.shutdown()
    assert stand_in.closed  # its pins leave bpffs: the controller exits without atexit hooks


def test_shutdown_while_the_program_loads_still_releases_it(monkeypatch):
    """SIGTERM in the second the child compiles: the program it pins must not outlive us."""
    prog = StandInProgram()

    def slow_load():
        time.sleep(0.3)
        return prog

    monkeypatch.setattr(ebpf.xdp, "unavailable", lambda: None)
    monkeypatch.setattr(ebpf.xdp, "XdpProgram", slow_load)
    fp = FastPath()
    fp.update(RULES, (), 0xFFFF, False, LO)  # starts the load
    fp.shutdown()
    fp.wait_loaded()
    assert prog.closed
    assert fp.prog is None


def test_a_remote_switchs_port_named_like_a_local_interface_is_not_attached_to(stand_in):
    """A switch on another machine with a port "lo" (or "eth0", its uplink NIC) is not this
    machine's lo: the MAC the switch reports for the port must be the local interface's."""
    fp = FastPath()
    fp.update(RULES, (), 0xFFFF, False, {"lo": "02:00:00:00:00:01"})
    fp.wait_loaded()
    assert fp.prog is None  # nothing here: nothing loaded
    fp = loaded(FastPath())
    fp.update(RULES, (), 0xFFFF, False, {"lo": "02:00:00:00:00:01"})
    assert not stand_in.attached
    fp.update(RULES, (), 0xFFFF, False, {"lo": _mac_of("lo").upper()})
    assert set(stand_in.attached) == {"lo"}


@pytest.mark.parametrize("name", ["..", ".", "", "../lo", "a b", "x" * 16, "l\0o"])
def test_a_port_name_no_interface_can_have_is_never_looked_up(stand_in, name):
    fp = FastPath()
    fp.update(RULES, (), 0xFFFF, False, {name: "00:00:00:00:00:00"})
    fp.wait_loaded()
    assert fp.prog is None and not stand_in.attached  # nothing here: nothing loaded
