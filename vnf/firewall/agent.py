#!/usr/bin/env python3
"""The firewall VNF: a transparent bridge between eth0 and eth1, filtered by nftables.

Runs inside its container (or network namespace) with only Debian's python3-minimal, iproute2
and nftables, so it uses the standard library alone.

- Wiring: waits for eth0 and eth1 (the host plugs them in after the container starts), bridges
  them in br0, no addresses, no IPv6 link-local chatter, no MAC learning: a bump in the wire.
  Broadcast and multicast frames are not bridged (a flood would loop straight back into the
  switch).
- Rules: the seed's rules.json format (`{"rules": [{action, protocol, port, source,
  destination}...], "default": "allow"|"deny"}`), first match decides, read by rulesfile.py
  exactly as the controller's firewall app reads it. What a bridge of IPv4 cannot enforce
  (IPv6 addresses, icmpv6, schedules, rate limits, ICMP types) is refused by name. Read from
  the file named by FIREWALL_RULES_FILE when it exists (a ConfigMap mounted as a folder, which
  the deploy tool keeps up to date), else from FIREWALL_RULES. The file is watched: a change
  is applied at once, atomically (one nft transaction), without a restart.
- Bad rules: the old rules stay in force (at start, with none yet, everything is dropped);
  the error goes to stderr (docker logs) and to /run/vnf/status.json, as does every apply.
- Stateful: bridged IPv4 crosses the inet family's forward hook with conntrack (br_netfilter,
  `net.bridge.bridge-nf-call-iptables=1` in this namespace; the deploy tool sets it, and the
  agent refuses to pass traffic while it is off). Each rule judges a connection by its first
  packet's direction: packets of the original direction match it as written, replies (conntrack
  direction reply) with addresses and ports swapped. So a reply passes because its connection
  was allowed, never by its own source port; a rules change applies at once to every
  connection, open ones too. ICMP errors of a tracked connection (conntrack state related) pass
  with it; packets that belong to nothing (conntrack state invalid, a TCP connection that does
  not start with a SYN) never pass.
- Only IPv4 and ARP cross (the rules are IPv4): IPv6 and every other EtherType is dropped.

    FIREWALL_RULES='{"rules": [...]}' agent.py [--once]   # --once: apply and exit (tests)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

try:
    from vnf.firewall import rulesfile
except ImportError:  # in the VNF image: rulesfile.py beside this file, no vnf package
    import rulesfile

TABLE = "osken_vnf"
STATUS = os.environ.get("VNF_STATUS_FILE", "/run/vnf/status.json")
PORTS = ("eth0", "eth1")
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
# What the app enforces and a bridge of IPv4 cannot: refused by name, never ignored.
NOT_ENFORCED = {
    "schedule": "schedules are enforced by the controller's firewall app, not the VNF",
    "rate_limit": "rate limits are enforced by the controller's firewall app, not the VNF",
    "icmp_type": "the VNF judges ICMP by protocol only, not by type",
}


class RuleError(ValueError):
    """Rules refused: str() names the rule and field ('rules[3].port: ...'); `line` is where
    that is in the text (None when unknown)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def at(self, origin: str) -> str:
        """'origin:line: rules[3].port: ...', the way the controller locates its errors."""
        return f"{origin}:{self.line}: {self}" if self.line else f"{origin}: {self}"


def _rule(spec, where: tuple) -> rulesfile.RuleFields:
    """One rule, parsed as the app parses it, refused if this bridge cannot enforce it."""
    rule = rulesfile.parse_rule(spec, where, extensions=tuple(NOT_ENFORCED))
    for key, why in NOT_ENFORCED.items():
        if key in spec:
            raise rulesfile.RuleFormatError(where + (key,), why)
    if 4 not in rule.families:
        key = next((k for k in ("source", "destination") if k in spec), "protocol")
        raise rulesfile.RuleFormatError(
            where + (key,), "the VNF bridges IPv4 only (IPv6 is dropped at its bridge)"
        )
    return rule


def compile_rules(text: str) -> str:
    """rules.json (vnf/firewall/rulesfile.py) -> one nft transaction that replaces our table.

    Raises RuleError naming the rule and field."""
    try:
        doc = rulesfile.loads(text)
        rules = [_rule(spec, ("rules", i)) for i, spec in enumerate(doc.rules)]
    except rulesfile.RuleFormatError as exc:
        raise RuleError(str(exc), rulesfile.line_of(text, exc.where)) from None
    default = doc.default or os.environ.get("FIREWALL_DEFAULT", "allow")
    if default not in rulesfile.DEFAULTS:
        raise RuleError(f"FIREWALL_DEFAULT: {default!r} is not allow or deny")
    lines = list(STATE_LINES)
    for rule in rules:
        verdict = "accept" if rule.action == "allow" else "drop"
        src, dst = (
            None if net is None or net.prefixlen == 0 else net
            for net in (rule.source, rule.destination)
        )
        forward = _match(rule.protocol, src, dst, rule.src_ports, rule.dst_ports)
        backward = _match(rule.protocol, dst, src, rule.dst_ports, rule.src_ports)
        lines.append(f"ct direction original {forward}{verdict}")
        lines.append(f"ct direction reply {backward}{verdict}")
    return _script(BRIDGE_LINES, lines, "accept" if default == "allow" else "drop")


# Before any rule: packets that belong to no connection never pass (conntrack's invalid state,
# a TCP connection that does not open with a SYN: a bare ACK, a SYN-ACK to nobody), and ICMP
# errors about a connection conntrack tracks pass.
STATE_LINES = (
    "ct state invalid drop",
    "ct state new meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn drop",
    "ct state related accept",
)
# The bridge passes ARP and unicast IPv4 (judged by the inet table), nothing else: IPv6 or a
# VLAN-tagged frame would go unjudged, and a broadcast or multicast would loop (a bridge
# between two ports of one switch sends every flood straight back in).
BRIDGE_LINES = (
    "ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 drop",
    "ether type arp accept",
    "ether type ip accept",
)


def _script(bridge_lines, inet_lines, policy: str) -> str:
    """One nft transaction replacing both tables: the bridge's forward chain (which frames may
    cross, else drop) and the inet one (the rules, with conntrack, ending in `policy`)."""
    out = []
    for family, lines, tail in (("bridge", bridge_lines, "drop"), ("inet", inet_lines, policy)):
        body = "".join(f"    {line}\n" for line in lines)
        out.append(
            f"table {family} {TABLE} {{}}\n"
            f"delete table {family} {TABLE}\n"
            f"table {family} {TABLE} {{\n"
            f"  chain forward {{\n"
            f"    type filter hook forward priority 0; policy {tail};\n"
            f"{body}"
            f"  }}\n"
            f"}}\n"
        )
    return "".join(out)


def _match(proto: str, src, dst, sports, dports) -> str:
    """The nft match of packets from `src` port `sports` to `dst` port `dports` (None: any)."""
    out = "meta nfproto ipv4 "
    if src is not None:
        out += f"ip saddr {src} "
    if dst is not None:
        out += f"ip daddr {dst} "
    if proto in ("tcp", "udp", "icmp"):
        out += f"meta l4proto {proto} "
    for direction, ports in (("sport", sports), ("dport", dports)):
        if ports is not None:
            lo, hi = ports
            out += f"{proto} {direction} {lo} " if lo == hi else f"{proto} {direction} {lo}-{hi} "
    return out


def _run(*cmd: str, stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True)


def wire(timeout: float = 60.0) -> None:
    """Bridge eth0 and eth1 once both exist: no addresses, no IPv6, forwarding at once."""
    deadline = time.time() + timeout
    while not all(os.path.exists(f"/sys/class/net/{p}") for p in PORTS):
        if time.time() > deadline:
            raise SystemExit(f"vnf: {' and '.join(PORTS)} never appeared")
        time.sleep(0.1)
    if not os.path.exists("/sys/class/net/br0"):
        _run("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0")
    for dev in ("br0", *PORTS):
        _run("ip", "link", "set", dev, "addrgenmode", "none")
    for port in PORTS:
        _run("ip", "link", "set", port, "master", "br0")
        # No learning: every frame goes to the other port. A learning bridge would take the
        # switch's floods (which reach both sides) as where hosts are, and drop real traffic.
        _run("ip", "link", "set", port, "type", "bridge_slave", "learning", "off")
    for dev in (*PORTS, "br0"):
        _run("ip", "link", "set", dev, "up")


def report(**status) -> None:
    os.makedirs(os.path.dirname(STATUS), exist_ok=True)
    status["at"] = time.time()
    tmp = STATUS + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(status, fh)
    os.replace(tmp, STATUS)


def rules_text() -> tuple[str, str]:
    """(text, where it came from): the watched file if there is one, else the environment."""
    path = os.environ.get("FIREWALL_RULES_FILE")
    if path and os.path.exists(path):
        with open(path) as fh:
            return fh.read(), path
    return os.environ.get("FIREWALL_RULES", '{"rules": []}'), "FIREWALL_RULES"


def digest(text: str) -> str:
    """Names a version of the rules, so the deploy tool can tell when every replica has it."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def bridge_netfilter() -> str | None:
    """None when bridged IPv4 crosses the inet hooks here, else why it does not.

    br_netfilter's switch is per network namespace; the agent turns it on where it may (as a
    namespace host). In a container /proc/sys is read-only: the deploy tool sets it there
    (`docker run --sysctl`)."""
    try:
        with open(BRIDGE_NF) as fh:
            if fh.read().strip() == "1":
                return None
        with open(BRIDGE_NF, "w") as fh:
            fh.write("1")
        return None
    except OSError as exc:
        return (
            f"net.bridge.bridge-nf-call-iptables is off and cannot be turned on ({exc.strerror}):"
            " no rule would see bridged IPv4, so nothing passes"
        )


def apply(text: str, origin: str) -> bool:
    """Put the rules of `text` in force. False if they are refused (the rules in force stay)
    or cannot be enforced (br_netfilter off: then nothing passes)."""
    version = digest(text)
    problem = bridge_netfilter()
    if problem:
        _run("nft", "-f", "-", stdin=FAIL_CLOSED)
        print(f"vnf: {problem}", file=sys.stderr, flush=True)
        report(ok=False, error=problem, digest=version)
        return False
    try:
        script = compile_rules(text)
        _run("nft", "-f", "-", stdin=script)
    except RuleError as exc:
        print(
            f"vnf: {exc.at(origin)}; the previous rules stay in force", file=sys.stderr, flush=True
        )
        report(ok=False, error=exc.at(origin), digest=version)
        return False
    except subprocess.CalledProcessError as exc:
        print(f"vnf: nft refused the rules: {exc.stderr.strip()}", file=sys.stderr, flush=True)
        report(ok=False, error=f"nft: {exc.stderr.strip()}", digest=version)
        return False
    n = len(json.loads(text)["rules"])
    print(f"vnf: {n} rules from {origin} in force", flush=True)
    report(ok=True, rules=n, origin=origin, digest=version)
    return True


FAIL_CLOSED = _script((), (), "drop")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wire()
    text, origin = rules_text()
    if not apply(text, origin):  # nothing in force: a firewall that cannot filter passes nothing
        _run("nft", "-f", "-", stdin=FAIL_CLOSED)
        print("vnf: no rules in force: dropping everything until there are", file=sys.stderr)
    if "--once" in sys.argv:
        return 0
    enforced = bridge_netfilter() is None
    while True:
        time.sleep(0.5)
        new, origin = rules_text()
        now = bridge_netfilter() is None
        if new != text or now != enforced:
            text, enforced = new, now
            apply(text, origin)


if __name__ == "__main__":
    sys.exit(main())
