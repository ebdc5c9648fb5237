"""`osken-trace SRC DST PROTO[/PORT]`: ask a running controller where a packet goes and why.

    osken-trace 10.0.0.1 10.0.0.3 tcp/22
    osken-trace 10.0.0.1 10.0.0.2 icmp --json
    osken-trace 10.0.0.1 10.0.100.10 tcp/80 --sport 40001 --prometheus-port 9302

It calls `GET /api/v1/trace` on the controller's metrics port and prints the verdict, the rule
that decided, and each switch's tables. Exit status: 0 with an answer, 1 when the controller
cannot answer (not running, or the address is unknown), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT = 30.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; PROTO[/PORT] is split into proto and dport.

    Raises:
        SystemExit: bad usage (status 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="osken-trace", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="source IPv4 or IPv6 address")
    p.add_argument("dst", help="destination IPv4 or IPv6 address")
    p.add_argument("proto", metavar="PROTO[/PORT]", help="tcp/22, udp/53 or icmp")
    p.add_argument("--sport", type=int, help="source port (default 40000)")
    p.add_argument("--host", default="127.0.0.1", help="the controller's metrics address")
    p.add_argument("--prometheus-port", type=int, default=9302, help="its metrics port")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    args = p.parse_args(argv)
    args.proto, _, port = args.proto.lower().partition("/")
    if port and not port.isdigit():
        p.error(f"{port!r} is not a port number")
    args.dport = int(port) if port else None
    return args


def _rule(rule: dict[str, Any] | None) -> str:
    """A rule in one line: where it was written and what it says."""
    if not rule:
        return ""
    if rule.get("policy"):
        where = f"{rule['kind']} {rule['policy']} {rule.get('direction', '')} rule {rule['rule']}"
    elif rule.get("policies") is not None:
        where = f"{rule['kind']} ({', '.join(rule['policies']) or 'no policy'})"
    elif rule.get("service"):
        where = f"{rule['kind']} of service {rule['service']} ({rule['vip']}, {rule['method']})"
    elif rule.get("chain"):
        where = f"{rule['kind']}: chain {rule['chain']} hop {rule['hop']} ({rule['deployment']})"
    else:
        where = rule.get("kind", "")
    backend = rule.get("backend")
    if backend:
        where += f", backend {backend['endpoint'] if isinstance(backend, dict) else backend}"
    at = f" at {rule['file']}:{rule['line']}" if rule.get("line") else ""
    text = " ".join(str(rule.get("text", "")).split())
    return f"{where}{at}: {text}" if text else f"{where}{at}"


def render(answer: dict[str, Any]) -> str:
    """The trace as text for a terminal."""
    p = answer["packet"]
    port = f"/{p['dport']}" if p.get("dport") else ""
    lines = [f"{p['src']} -> {p['dst']} {p['proto']}{port}: {answer['verdict'].upper()}"]
    decided = answer.get("decided_by")
    if decided:
        by = f"{decided.get('switch') or decided['dpid']} table {decided['table']} "
        by += f"({decided['stage']}, {decided.get('app')})"
        if decided.get("xdp"):
            by += f", dropped by XDP on {decided['xdp']} before the switch"
        lines.append(f"  decided by {by}")
        if decided.get("rule"):
            lines.append(f"  rule: {_rule(decided['rule'])}")
    for hop in answer["hops"]:
        name = hop.get("switch") or hop["dpid"]
        lines.append(f"  {name} in port {hop['in_port']} ({hop.get('source')}): {hop['result']}")
        if hop.get("error"):
            lines.append(f"    {hop['error']}")
        if hop.get("unasked"):
            lines.append(f"    not asked ({hop['unasked']}): the controller's model of it")
        lines += [f"    assumed: {note}" for note in hop.get("notes", [])]
        if hop.get("picked"):
            picked = hop["picked"]
            lines.append(f"    picked: {picked['backend']['endpoint']}: {picked['text']}")
        for t in hop.get("tables", []):
            flow = t.get("flow") or {}
            lines.append(
                f"    {t['table']:>2} {t['stage']:<16} {t.get('app') or '-':<12} "
                f"prio {flow.get('priority', '-')}: {', '.join(t['actions'])}"
            )
            if t.get("rule"):
                lines.append(f"       rule: {_rule(t['rule'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status (see the module's text)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    query = {"src": args.src, "dst": args.dst, "proto": args.proto}
    query.update({k: v for k, v in (("dport", args.dport), ("sport", args.sport)) if v})
    url = f"http://{args.host}:{args.prometheus_port}/api/v1/trace?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            answer = json.load(reply)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        print(f"osken-trace: {message}", file=sys.stderr)
        return 2 if exc.code == 400 else 1
    except (OSError, ValueError) as exc:
        print(f"osken-trace: cannot ask the controller at {url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else render(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
