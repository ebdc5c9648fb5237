"""Firewall rules: the config's `firewall:` section and the seed's rules.json, checked and typed.

Order is the config's: rules from `rules_file` first, then `rules:`; the first rule that matches
decides, then `default`. Every problem is a ConfigError naming the file, the line and the field.
Addresses mean what they say: 0.0.0.0/0 is every IPv4 source (as in nftables), ::/0 every IPv6
one; a rule with no address applies to both families.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from apps.firewall.schedule import DAYS, Schedule, check_timezone, parse_clock
from controller.config import (
    Config,
    ConfigError,
    Document,
    dotted,
    load_document,
)
from controller.durations import parse_duration
from controller.flowlog import logging_on
from vnf.firewall import rulesfile
from vnf.firewall.rulesfile import RuleFields, RuleFormatError

PROTOCOLS = rulesfile.PROTOCOLS
ACTIONS = ("allow", "deny", "rate_limit")
UINT32 = 2**32 - 1  # a meter band's rate and burst (OpenFlow 1.3, ofp_meter_band)
IPNetwork = rulesfile.IPNetwork

_PORT = {"type": ["integer", "string"]}
_RULE = {
    "type": "object",
    "required": ["action"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "action": {"enum": list(ACTIONS)},
        "protocol": {"enum": list(PROTOCOLS)},
        "source": {"type": "string"},
        "destination": {"type": "string"},
        "port": _PORT,
        "destination_port": _PORT,
        "source_port": _PORT,
        "icmp_type": {"type": "integer", "minimum": 0, "maximum": 255},
        "schedule": {
            "type": "object",
            "required": ["start", "end"],
            "additionalProperties": False,
            "properties": {
                "days": {"type": "array", "items": {"enum": list(DAYS)}, "minItems": 1},
                "start": {"type": "string"},
                "end": {"type": "string"},
                "timezone": {"type": "string"},
            },
        },
        "rate_limit": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": UINT32},
                "tokens_per_fill": {"type": "integer", "minimum": 1, "maximum": UINT32},
                "fill_interval": {"type": ["string", "number"]},
                "pps": {"type": "integer", "minimum": 1, "maximum": UINT32},
                "kbps": {"type": "integer", "minimum": 1, "maximum": UINT32},
                "burst": {"type": "integer", "minimum": 0, "maximum": UINT32},
            },
        },
    },
}
FIREWALL_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "default": {"enum": ["allow", "deny"]},
        "rules_file": {"type": "string"},
        "rules": {"type": "array"},  # each rule is checked by parse_rule
        "blocked_ips": {"type": "array", "items": {"type": "string"}},
        "stateful": {"type": "boolean"},
        "stats_interval": {"type": "number", "minimum": 0.5, "maximum": 3600},
        "xdp": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["auto", "native", "generic", "off"]},
                "offload": {"enum": ["all", "adaptive"]},
                "threshold_pps": {"type": "number", "minimum": 0},
                "idle_seconds": {"type": "number", "minimum": 0},
            },
        },
    },
}


@dataclass(frozen=True)
class RateLimit:
    """A token bucket as an OpenFlow meter band: `rate` per second, bursts of `burst`."""

    unit: str  # "pktps" or "kbps"
    rate: int
    burst: int


@dataclass(frozen=True)
class FirewallRule(RuleFields):
    """A rule of the shared rules.json format (vnf/firewall/rulesfile.py) plus what only the
    app enforces: a schedule and a rate limit."""

    schedule: Schedule | None = None
    rate_limit: RateLimit | None = None
    origin: tuple = field(default=(), compare=False)  # (file, path in it), for logs
    text: str = field(default="", compare=False)  # the spec as written: its identity

    def located(self) -> str:
        """Where the rule was written: 'lab.yaml firewall.rules[3]'."""
        return f"{self.origin[0]} {dotted(self.origin[1])}" if self.origin else "?"

    def describe(self) -> str:
        parts = [self.name] if self.name else []
        parts.append(self.action)
        if self.protocol != "any":
            parts.append(self.protocol)
        if self.source is not None:
            parts.append(f"from {self.source}")
        if self.destination is not None:
            parts.append(f"to {self.destination}")
        if self.dst_ports:
            lo, hi = self.dst_ports
            parts.append(f"port {lo}" if lo == hi else f"ports {lo}-{hi}")
        if self.schedule:
            parts.append(f"during {self.schedule.describe()}")
        return " ".join(parts)


@dataclass(frozen=True)
class XdpSettings:
    mode: str = "auto"  # auto (native if the driver has it, else generic), native, generic, off
    offload: str = "all"  # or "adaptive"
    threshold_pps: float = 1000.0
    idle_seconds: float = 30.0


@dataclass(frozen=True)
class FirewallSettings:
    default: str = "allow"
    rules: tuple[FirewallRule, ...] = ()
    blocked: tuple[IPNetwork, ...] = ()
    stateful: bool = False
    stats_interval: float = 5.0
    xdp: XdpSettings = XdpSettings()
    log: bool = False  # the config has a flow_log: denies are logged (controller/flowlog.py)
    # The files the rules were read from, by path (a rule's `origin` names one), so a trace
    # can give a rule's line and text (Document.source).
    sources: dict[str, Document] = field(default_factory=dict, compare=False)


def _network(doc: Document, where: tuple, text: str) -> IPNetwork:
    try:
        return rulesfile.parse_network(text, where)
    except RuleFormatError as exc:
        raise doc.error(exc.where, exc.message) from None


def _schedule(doc: Document, where: tuple, spec: dict) -> Schedule:
    start, end = parse_clock(spec["start"]), parse_clock(spec["end"])
    if start is None:
        raise doc.error(where + ("start",), f"{spec['start']!r} is not a time like 22:00")
    if end is None:
        raise doc.error(where + ("end",), f"{spec['end']!r} is not a time like 06:00")
    if start == end:
        raise doc.error(where + ("end",), "the window is empty (start equals end)")
    tz = spec.get("timezone", "UTC")
    if not check_timezone(tz):
        raise doc.error(where + ("timezone",), f"unknown time zone {tz!r}")
    days = frozenset(DAYS.index(d) for d in spec.get("days", DAYS))
    return Schedule(days, start, end, tz)


def _rate_limit(doc: Document, where: tuple, spec: dict) -> RateLimit:
    """The seed's token bucket (max_tokens, tokens_per_fill, fill_interval) or pps/kbps + burst."""
    bucket = {"max_tokens", "tokens_per_fill", "fill_interval"}
    if bucket & spec.keys():
        missing = sorted(bucket - spec.keys())
        if missing:
            raise doc.error(where, f"a token bucket needs {', '.join(missing)} too")
        interval = parse_duration(spec["fill_interval"])
        if interval is None:
            raise doc.error(
                where + ("fill_interval",), f"{spec['fill_interval']!r} is not a duration like 60s"
            )
        rate = spec["tokens_per_fill"] / interval
        if rate > UINT32:
            raise doc.error(where, f"{rate:.3g} tokens/s is more than a meter can do ({UINT32})")
        if rate < 1:
            raise doc.error(where, f"{rate:.3g} tokens/s is below the 1 packet/s a meter can do")
        return RateLimit("pktps", round(rate), spec["max_tokens"])
    if ("pps" in spec) == ("kbps" in spec):
        raise doc.error(where, "give a token bucket, or exactly one of pps and kbps")
    unit = "pktps" if "pps" in spec else "kbps"
    rate = spec["pps"] if "pps" in spec else spec["kbps"]
    return RateLimit(unit, rate, spec.get("burst", 0))


_PLAIN = {
    "name": str,
    "action": str,
    "protocol": str,
    "source": str,
    "destination": str,
    "port": (int, str),
    "destination_port": (int, str),
    "source_port": (int, str),
    "icmp_type": int,
}


def _plainly_valid(spec: dict) -> bool:
    """The schema's verdict for rules with only plain fields, without jsonschema's cost.

    Anything it is not sure about (schedules, rate limits, odd types) goes to jsonschema,
    which also words the error.
    """
    for key, value in spec.items():
        kind = _PLAIN.get(key)
        if kind is None or not isinstance(value, kind) or isinstance(value, bool):
            return False
    return (
        spec.get("action") in ACTIONS
        and spec.get("protocol", "any") in PROTOCOLS
        and 0 <= spec.get("icmp_type", 0) <= 255
    )


@dataclass
class RuleCache:
    """Rules parsed at earlier loads, so a reload parses again only what changed. Its owner
    (the firewall app) keeps one for its lifetime; without one, everything is parsed afresh."""

    by_text: dict[str, FirewallRule] = field(default_factory=dict)  # rule as written -> rule
    lists: dict[tuple, tuple[list, list[FirewallRule]]] = field(
        default_factory=dict
    )  # (file, path) ->
    # the last specs there, as JSON, and their rules


def parse_rule(
    doc: Document, where: tuple, spec: dict, cache: RuleCache | None = None
) -> FirewallRule:
    """One rule, checked; `where` is its path in `doc` for error messages."""
    cache = cache or RuleCache()
    if not isinstance(spec, dict):
        raise doc.error(where, "a rule must be a mapping of fields")
    text = repr(spec)  # str/int/list/dict only, so repr is exact, and fast
    origin = (doc.path, where)
    known = cache.by_text.get(text)
    if known is not None:
        return known if known.origin == origin else replace(known, origin=origin)
    if not _plainly_valid(spec):
        Document(doc.path, spec, None).validate(_RULE, prefix=where, lines_from=doc)
    rule = replace(_parse_rule(doc, where, spec), origin=origin, text=text)
    if len(cache.by_text) > 200_000:
        cache.by_text.clear()
    cache.by_text[text] = rule
    return rule


def _parse_rule(doc: Document, where: tuple, spec: dict) -> FirewallRule:
    try:
        fields = rulesfile.parse_rule(spec, where, ACTIONS, ("schedule", "rate_limit"))
    except RuleFormatError as exc:
        raise doc.error(exc.where, exc.message) from None
    if (fields.action == "rate_limit") != ("rate_limit" in spec):
        key = "rate_limit" if "rate_limit" in spec else "action"
        raise doc.error(where + (key,), "action rate_limit and a rate_limit block go together")
    return FirewallRule(
        **vars(fields),
        schedule=_schedule(doc, where + ("schedule",), spec["schedule"])
        if "schedule" in spec
        else None,
        rate_limit=_rate_limit(doc, where + ("rate_limit",), spec["rate_limit"])
        if "rate_limit" in spec
        else None,
    )


def parse_rules(
    doc: Document, where: tuple, specs: list, cache: RuleCache | None = None
) -> list[FirewallRule]:
    """Every rule of a list. A rule written exactly as last time, at the same place, is reused
    as it was: a one-rule edit of a 10,000-rule file parses one rule."""
    cache = cache or RuleCache()
    old_specs, old_rules = cache.lists.get((doc.path, where), ([], []))
    texts = [json.dumps(spec, sort_keys=True) for spec in specs]  # exact: true is not 1
    rules = [
        old_rules[i]
        if i < len(old_specs) and old_specs[i] == text
        else parse_rule(doc, where + (i,), spec, cache)
        for i, (text, spec) in enumerate(zip(texts, specs, strict=True))
    ]
    cache.lists[(doc.path, where)] = (texts, rules)
    return rules


def load_rules_file(path: str, cache: RuleCache | None = None) -> list[FirewallRule]:
    """The rules of a rules.json file (see read_rules_file)."""
    return read_rules_file(path, cache)[0]


def read_rules_file(
    path: str, cache: RuleCache | None = None
) -> tuple[list[FirewallRule], str | None, Document]:
    """The seed's rules.json format, unchanged: {"rules": [{action, protocol, port, source}],
    "default": "allow"|"deny"}, read as the VNF agent reads it (vnf/firewall/rulesfile.py).

    Returns the rules, the file's default (None if it gives none) and the document read.
    Raises ConfigError with the file, line and field."""
    doc = load_document(path, json_only=path.endswith(".json"))
    try:
        parsed = rulesfile.parse_document(doc.data)
    except RuleFormatError as exc:
        raise doc.error(exc.where, exc.message) from None
    return parse_rules(doc, ("rules",), list(parsed.rules), cache), parsed.default, doc


def parse_firewall(
    section: dict | None, config: Config, cache: RuleCache | None = None
) -> FirewallSettings:
    """The whole `firewall:` section; files it names become dependencies of the config.
    `cache` (the caller's, kept across reloads) spares parsing rules that did not change."""
    section = section or {}
    rules: list[FirewallRule] = []
    default = section.get("default")
    sources: dict[str, Document] = {str(config.path): config}
    if "rules_file" in section:
        path = config.resolve(section["rules_file"])
        config.depend(path)
        try:
            file_rules, file_default, sources[path] = read_rules_file(path, cache)
        except ConfigError as exc:
            if exc.line is not None:
                raise
            raise config.error(("firewall", "rules_file"), exc.message) from None
        rules += file_rules
        if default is not None and file_default not in (None, default):
            raise config.error(
                ("firewall", "default"), f"{default} here, but {file_default} in the rules_file"
            )
        default = default or file_default
    rules += parse_rules(config, ("firewall", "rules"), section.get("rules", []), cache)
    blocked = tuple(
        _network(config, ("firewall", "blocked_ips", i), text)
        for i, text in enumerate(section.get("blocked_ips", []))
    )
    return FirewallSettings(
        default=default or "allow",
        rules=tuple(rules),
        blocked=blocked,
        stateful=section.get("stateful", False),
        stats_interval=float(section.get("stats_interval", 5.0)),
        xdp=XdpSettings(**section.get("xdp", {})),
        log=logging_on(config),
        sources=sources,
    )
