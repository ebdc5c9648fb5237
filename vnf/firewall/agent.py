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
- The kernel here has no bridge conntrack, so filtering is stateless: for each allow rule with
  a port, replies (that port as the source, addresses swapped) are allowed too.

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
    # Broadcast and multicast never cross: a bridge between two ports of one switch would
    # otherwise loop every flood straight back in. Chains carry unicast IPv4 only.
    lines = ["ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 drop", "ether type arp accept"]
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
        lines.append(_match(proto, src, dst, "dport", port) + verdict)
        if action == "allow" and port:  # stateless: the replies of what is allowed
            lines.append(_match(proto, dst, src, "sport", port) + "accept")
    policy = "accept" if default == "allow" else "drop"
    body = "\n".join(f"    {line}" for line in lines)
    return (
        f"table bridge {TABLE} {{}}\n"
        f"delete table bridge {TABLE}\n"
        f"table bridge {TABLE} {{\n"
        f"  chain forward {{\n"
        f"    type filter hook forward priority 0; policy {policy};\n"
        f"{body}\n"
        f"  }}\n"
        f"}}\n"
    )


def _match(proto: str, src, dst, direction: str, port: str | None) -> str:
    out = "ether type ip "
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


def apply(text: str, origin: str) -> bool:
    version = digest(text)
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


FAIL_CLOSED = (
    f"table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n"
    f"table bridge {TABLE} {{ chain forward {{ type filter hook forward priority 0; "
    "policy drop; } }\n"
)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wire()
    text, origin = rules_text()
    if not apply(text, origin):  # no good rules yet: a firewall that cannot filter passes nothing
        _run("nft", "-f", "-", stdin=FAIL_CLOSED)
        print(
            "vnf: no valid rules: dropping everything until there are", file=sys.stderr, flush=True
        )
    if "--once" in sys.argv:
        return 0
    while True:
        time.sleep(0.5)
        new, origin = rules_text()
        if new != text:
            text = new
            apply(text, origin)


if __name__ == "__main__":
    sys.exit(main())
