"""The seed's rules.json format, read once for everyone: the firewall app and the VNF agent.

    {"rules": [{"action": "deny", "protocol": "tcp", "port": 22, "source": "0.0.0.0/0"}, ...],
     "default": "allow"}

Standard library only: the VNF image copies this file beside its agent (Debian python3-minimal),
and it imports nothing from the controller or the apps. The apps add what only they enforce
(`schedule`, `rate_limit`) as extension fields; everything else is decided here, the same way
for both consumers:

- `action` allow or deny (or an extension action the caller names); `protocol` tcp, udp, icmp,
  icmpv6 or any (default), lowercase as the seed writes it.
- `source`, `destination`: an IPv4 or IPv6 address or CIDR, literal: 0.0.0.0/0 is every IPv4
  address, ::/0 every IPv6 one; leaving the field out means any address of either family. Both
  must be one family; icmp goes with IPv4 and icmpv6 with IPv6.
- `port` (or `destination_port`) and `source_port`: a number or "lo-hi", 0-65535 inclusive
  (port 0 is a port: a firewall may well deny scans to it); tcp and udp only.
- `icmp_type` 0-255, icmp and icmpv6 only; `name` a string.
- null is not a value: leave a field out instead. Unknown fields and duplicate keys are errors.

Errors are RuleFormatError, located by the path of the field in the document (`rules[3].port`);
callers add the file and line.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

ACTIONS = ("allow", "deny")
DEFAULTS = ("allow", "deny")
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "any")
FIELDS = (
    "name",
    "action",
    "protocol",
    "source",
    "destination",
    "port",
    "destination_port",
    "source_port",
    "icmp_type",
)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_DIGITS = frozenset("0123456789")


class RuleFormatError(ValueError):
    """A rules.json problem at `where` (a path such as ("rules", 3, "port")): str() gives
    'rules[3].port: message'."""

    def __init__(self, where: tuple, message: str) -> None:
        self.where, self.message = where, message
        super().__init__(f"{dotted(where)}: {message}" if where else message)


def dotted(path: tuple) -> str:
    """("rules", 3, "port") as 'rules[3].port'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class RuleFields:
    """One rule's fields of the common format, checked and typed.

    `dst_ports` and `src_ports` are inclusive (lo, hi) ranges; None fields match anything.
    """

    action: str
    protocol: str = "any"
    source: IPNetwork | None = None
    destination: IPNetwork | None = None
    dst_ports: tuple[int, int] | None = None
    src_ports: tuple[int, int] | None = None
    icmp_type: int | None = None
    name: str = ""

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions the rule applies to: its addresses' family, else its protocol's, else
        both (4, 6)."""
        for net in (self.source, self.destination):
            if net is not None:
                return (net.version,)
        if self.protocol == "icmp":
            return (4,)
        if self.protocol == "icmpv6":
            return (6,)
        return (4, 6)


@dataclass(frozen=True)
class RulesFile:
    """A whole rules.json: `default` is None when the file does not say."""

    rules: tuple[dict, ...]
    default: str | None = None


def loads(text: str) -> RulesFile:
    """Parse a rules.json text (the top level only; see parse_rule for each rule).

    Raises RuleFormatError: not JSON (with its line), a duplicate key, not {"rules": [...]},
    a `default` other than allow or deny, or another top-level key.
    """
    duplicated: list[str] = []

    def unique(pairs: list) -> dict:
        keys = [key for key, _ in pairs]
        duplicated.extend(key for i, key in enumerate(keys) if key in keys[:i])
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise RuleFormatError((), f"not JSON: line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise RuleFormatError((), "nested too deeply") from None
    if duplicated:  # after the syntax: a syntax error is the first thing to fix
        raise RuleFormatError((), f"duplicate key {duplicated[0]!r}")
    return parse_document(data)


def line_of(text: str, where: tuple) -> int | None:
    """The line (1-based) of `where` (a key's or an item's path) in a JSON text that parses,
    or of the nearest enclosing key or item it can find; None for the top level."""
    for depth in range(len(where), 0, -1):
        try:
            at = _position(text, _skip(text, 0), where[:depth])
        except (ValueError, IndexError, RecursionError):
            return None
        if at is not None:
            return text.count("\n", 0, at) + 1
    return None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _position(text: str, i: int, path: tuple) -> int | None:
    """Where the key or item at `path` starts, in the JSON value that starts at i."""
    decoder = json.JSONDecoder()
    if not path:
        return i
    opening, n = text[i], 0
    if opening not in "{[":
        return None
    i = _skip(text, i + 1)
    while text[i] not in "}]":
        start = i
        if opening == "{":
            key, end = decoder.raw_decode(text, i)
            i = _skip(text, _skip(text, end) + 1)  # past the colon: the value
            if key == path[0]:
                return start if len(path) == 1 else _position(text, i, path[1:])
        elif n == path[0]:
            return _position(text, i, path[1:])
        i = _skip(text, decoder.raw_decode(text, i)[1])
        i, n = (_skip(text, i + 1) if text[i] == "," else i), n + 1
    return None


def parse_document(data) -> RulesFile:
    """The top level of an already parsed rules.json. Raises RuleFormatError."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleFormatError((), 'expected {"rules": [...]}')
    for key in data:
        if key not in ("rules", "default"):
            raise RuleFormatError((key,), "unknown field (a rules file has rules and default)")
    default = data.get("default")
    if "default" in data and default not in DEFAULTS:
        raise RuleFormatError(("default",), f"{default!r} is not allow or deny")
    return RulesFile(tuple(data["rules"]), default)


def parse_network(value, where: tuple) -> IPNetwork:
    """An address or CIDR, host bits allowed (10.0.0.1/8 is 10.0.0.0/8), IPv6 with no zone
    (fe80::1%eth0 names an interface of one host; a switch cannot match it). Raises
    RuleFormatError."""
    if not isinstance(value, str):
        raise RuleFormatError(where, f"{value!r} is not an IP address or CIDR")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        hint = "; leave the field out for any address" if value.strip().lower() == "any" else ""
        raise RuleFormatError(where, f"{value!r} is not an IP address or CIDR{hint}") from None
    if getattr(net.network_address, "scope_id", None):
        raise RuleFormatError(where, f"{value!r}: a zone (%...) is a host's, not a switch's")
    return net


def parse_ports(value, where: tuple) -> tuple[int, int]:
    """80 or "80" -> (80, 80); "8000-8080" -> (8000, 8080); 0-65535, lo <= hi. Raises
    RuleFormatError."""
    unreadable = f"{value!r} is not a port or a range like 8000-8080"
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str):
        lo_text, dash, hi_text = (part.strip() for part in value.partition("-"))
        hi_text = hi_text if dash else lo_text
        if not (_DIGITS.issuperset(lo_text + hi_text) and lo_text and hi_text):
            raise RuleFormatError(where, unreadable)  # int() would take "+80", "8_0", "٨٠"
        lo, hi = int(lo_text), int(hi_text)
    else:
        raise RuleFormatError(where, unreadable)
    for port in (lo, hi):
        if not 0 <= port <= 65535:
            raise RuleFormatError(where, f"port {port} is out of range 0-65535")
    if lo > hi:
        raise RuleFormatError(where, f"range {lo}-{hi} is empty")
    return lo, hi


def _string(spec: dict, key: str, where: tuple, default: str) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise RuleFormatError(where + (key,), f"{value!r} is not a string")
    return value


def parse_rule(
    spec, where: tuple, actions: tuple[str, ...] = ACTIONS, extensions: tuple[str, ...] = ()
) -> RuleFields:
    """One rule of the format, checked; `where` is its path for messages.

    `actions` and `extensions` are what the caller enforces beyond the common format (the
    firewall app: action rate_limit, fields schedule and rate_limit); extension fields are
    allowed here and left to the caller. Raises RuleFormatError at the offending field.
    """
    if not isinstance(spec, dict):
        raise RuleFormatError(where, "a rule must be a mapping of fields")
    for key in spec:
        if key not in FIELDS and key not in extensions:
            raise RuleFormatError(where + (key,), "unknown field")
        if spec[key] is None:
            raise RuleFormatError(where + (key,), "null is not a value: leave the field out")
    if "action" not in spec:
        raise RuleFormatError(where + ("action",), "missing (allow or deny)")
    action = _string(spec, "action", where, "")
    if action not in actions:
        raise RuleFormatError(where + ("action",), f"{action!r} is not one of {', '.join(actions)}")
    protocol = _string(spec, "protocol", where, "any")
    if protocol not in PROTOCOLS:
        raise RuleFormatError(
            where + ("protocol",), f"{protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    nets = {}
    for key in ("source", "destination"):
        nets[key] = parse_network(spec[key], where + (key,)) if key in spec else None
    source, dest = nets["source"], nets["destination"]
    if source is not None and dest is not None and source.version != dest.version:
        raise RuleFormatError(where + ("destination",), "source and destination mix IPv4 and IPv6")
    family = {"icmp": 4, "icmpv6": 6}.get(protocol)
    for key, net in nets.items():
        if net is not None and family not in (None, net.version):
            raise RuleFormatError(where + (key,), f"{protocol} does not go with IPv{net.version}")
    if "port" in spec and "destination_port" in spec:
        raise RuleFormatError(
            where + ("destination_port",), "give port or destination_port, not both"
        )
    port_key = "port" if "port" in spec else "destination_port"
    dst_ports = parse_ports(spec[port_key], where + (port_key,)) if port_key in spec else None
    src_ports = None
    if "source_port" in spec:
        src_ports = parse_ports(spec["source_port"], where + ("source_port",))
    if (dst_ports or src_ports) and protocol not in ("tcp", "udp"):
        key = port_key if dst_ports else "source_port"
        raise RuleFormatError(where + (key,), f"ports need protocol tcp or udp, not {protocol}")
    icmp_type = spec.get("icmp_type")
    if "icmp_type" in spec:
        if not isinstance(icmp_type, int) or isinstance(icmp_type, bool):
            raise RuleFormatError(where + ("icmp_type",), f"{icmp_type!r} is not a number")
        if not 0 <= icmp_type <= 255:
            raise RuleFormatError(where + ("icmp_type",), f"{icmp_type} is out of range 0-255")
        if protocol not in ("icmp", "icmpv6"):
            raise RuleFormatError(where + ("icmp_type",), "icmp_type needs protocol icmp or icmpv6")
    return RuleFields(
        action=action,
        protocol=protocol,
        source=source,
        destination=dest,
        dst_ports=dst_ports,
        src_ports=src_ports,
        icmp_type=icmp_type,
        name=_string(spec, "name", where, ""),
    )
