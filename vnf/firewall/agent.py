#!/usr/bin/env python3
"""The firewall VNF: a transparent bridge between eth0 and eth1, filtered by nftables.

Runs inside its container (or network namespace) with only Debian's python3-minimal, iproute2
and nftables, so it uses the standard library alone.

- Wiring: waits for eth0 and eth1 (the host plugs them in after the container starts), bridges
  them in br0, no addresses, no IPv6 link-local chatter, no MAC learning: a bump in the wire.
  Broadcast and multicast frames are not bridged (a flood would loop straight back into the
  switch).
- Rules: the seed's rules.json format (`{"rules": [{action, protocol, port, source,
  destination}...], "default": "allow"|"deny"}`), first match decides. Read from the file named
  by FIREWALL_RULES_FILE when it exists (a ConfigMap mounted as a folder, which the deploy tool
  keeps up to date), else from FIREWALL_RULES. The file is watched: a change is applied at once,
  atomically (one nft transaction), without a restart.
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
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

TABLE = "osken_vnf"
STATUS = os.environ.get("VNF_STATUS_FILE", "/run/vnf/status.json")
PORTS = ("eth0", "eth1")
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
PROTOCOLS = ("tcp", "udp", "icmp", "any")


class RuleError(ValueError):
    pass


def _port(value, where: str) -> str:
    text = str(value).strip()
    parts = text.split("-")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise RuleError(f"{where}.port: {value!r} is not a port or a range a-b") from None
    if len(numbers) > 2 or not all(0 < n < 65536 for n in numbers) or numbers != sorted(numbers):
        raise RuleError(f"{where}.port: {value!r} is not a port or a range a-b")
    return "-".join(map(str, numbers))


def _net(value, where: str, field: str) -> ipaddress.IPv4Network | None:
    if value in (None, "", "any"):
        return None
    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise RuleError(f"{where}.{field}: {value!r} is not an address or CIDR") from None
    if net.version != 4:
        raise RuleError(f"{where}.{field}: {value!r}: IPv4 only")
    return None if net.prefixlen == 0 else net


def compile_rules(text: str) -> str:
    """rules.json -> one nft transaction that replaces our table. Raises RuleError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleError(f"not JSON: line {exc.lineno}: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError('expected {"rules": [...]}')
    default = doc.get("default", os.environ.get("FIREWALL_DEFAULT", "allow"))
    if default not in ("allow", "deny"):
        raise RuleError(f"default: {default!r} is not allow or deny")
    lines = list(STATE_LINES)
    for i, rule in enumerate(doc["rules"]):
        where = f"rules[{i}]"
        if not isinstance(rule, dict):
            raise RuleError(f"{where}: must be an object")
        unknown = set(rule) - {"action", "protocol", "port", "source", "destination", "name"}
        if unknown:
            raise RuleError(f"{where}.{sorted(unknown)[0]}: unknown field")
        action = rule.get("action")
        if action not in ("allow", "deny"):
            raise RuleError(f"{where}.action: {action!r} is not allow or deny")
        proto = str(rule.get("protocol", "any")).lower()
        if proto not in PROTOCOLS:
            raise RuleError(f"{where}.protocol: {proto!r} is not one of {', '.join(PROTOCOLS)}")
        port = _port(rule["port"], where) if rule.get("port") is not None else None
        if port and proto not in ("tcp", "udp"):
            raise RuleError(f"{where}.port: needs protocol tcp or udp")
        src = _net(rule.get("source"), where, "source")
        dst = _net(rule.get("destination"), where, "destination")
        verdict = "accept" if action == "allow" else "drop"
        lines.append("ct direction original " + _match(proto, src, dst, "dport", port) + verdict)
        lines.append("ct direction reply " + _match(proto, dst, src, "sport", port) + verdict)
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


def _match(proto: str, src, dst, direction: str, port: str | None) -> str:
    out = "meta nfproto ipv4 "
    if src is not None:
        out += f"ip saddr {src} "
    if dst is not None:
        out += f"ip daddr {dst} "
    if proto in ("tcp", "udp"):
        out += f"meta l4proto {proto} "
        if port:
            out += f"{proto} {direction} {port} "
    elif proto == "icmp":
        out += "meta l4proto icmp "
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
            f"vnf: {origin}: {exc}; the previous rules stay in force", file=sys.stderr, flush=True
        )
        report(ok=False, error=f"{origin}: {exc}", digest=version)
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
