"""The flow model: canonical, hashable flows, groups and meters, and match normalisation.

Apps describe what they want with these values; the reconciler compares them with what a switch
reports. Matches are normalised as Open vSwitch keeps them (lib/match.c), so a flow read back from
a switch compares equal to the flow that was asked for and a restart sends nothing.

>>> from controller.flows.actions import apply, output
>>> f = flow(4, 10, {"eth_dst": "00:00:00:00:00:01"}, apply(output(2)))
>>> f.key
(4, 10, (('eth_dst', '00:00:00:00:00:01'),))
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

Match = tuple[tuple[str, Any], ...]
Action = tuple
Instruction = tuple
FlowKey = tuple[int, int, Match]

MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"})
IPV4_FIELDS = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"})
IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "ipv6_nd_target"})
# Instruction order on the wire and in canonical form (OpenFlow 1.3.5, section 5.9).
_INSTRUCTION_ORDER = {"meter": 0, "apply": 1, "clear": 2, "write": 3, "meta": 4, "goto": 5}


def oxm_sample(name: str) -> Any:
    """A zero value of an OXM field's type, in the form os-ken's OXM encoder takes.

    Parameters
    ----------
    name : str
        An os-ken OXM field name (``"eth_dst"``, ``"ipv4_src"``, ``"tcp_dst"``...).

    Returns
    -------
    str or int
        ``"00:00:00:00:00:00"`` for a MAC field, ``"0.0.0.0"`` / ``"::"`` for an IPv4 / IPv6
        address field, ``0`` for any other.
    """
    if name in MAC_FIELDS:
        return "00:00:00:00:00:00"
    if name in IPV4_FIELDS or name in IPV6_FIELDS:
        return "::" if name in IPV6_FIELDS else "0.0.0.0"
    return 0


@lru_cache(maxsize=65536)
def norm_scalar(name: str, value: Any) -> Any:
    """One field value in canonical form: lower-case MAC text, compressed IP text, or an int.

    Parameters
    ----------
    name : str
        An os-ken OXM field name.
    value : str or int
        Its value as an app or os-ken spells it.

    Returns
    -------
    str or int

    Raises
    ------
    ValueError
        An address that does not parse, or an int field given text that is not a number.

    Examples
    --------
    >>> norm_scalar("ipv6_dst", "2001:db8:0::1"), norm_scalar("tcp_dst", "80")
    ('2001:db8::1', 80)
    """
    if name in MAC_FIELDS:
        return str(value).lower()
    if name in IPV4_FIELDS:
        return str(ipaddress.IPv4Address(value))
    if name in IPV6_FIELDS:
        addr = ipaddress.IPv6Address(value)
        if addr.scope_id:  # os-ken's encoder (netaddr) cannot send it; no OXM holds a zone
            raise ValueError(f"{value!r}: an IPv6 address with a zone cannot be matched")
        return str(addr)
    return int(value)


@lru_cache(maxsize=1024)
def _is_full_mask(name: str, mask: Any) -> bool:
    if name in MAC_FIELDS:
        return str(mask).lower() == "ff:ff:ff:ff:ff:ff"
    if name in IPV4_FIELDS:
        return int(ipaddress.IPv4Address(mask)) == 0xFFFFFFFF
    if name in IPV6_FIELDS:
        return int(ipaddress.IPv6Address(mask)) == (1 << 128) - 1
    return int(mask) == (1 << 8 * len(ofp.oxm_from_user(name, oxm_sample(name))[1])) - 1


@lru_cache(maxsize=65536)
def _norm_masked(name: str, val: Any, mask: Any) -> Any:
    """A masked field as Open vSwitch keeps and reports it (lib/match.c): the value with the
    bits outside the mask cleared (a switch refuses them: OFPBMC_BAD_WILDCARDS), an all-ones
    mask as an exact match, and None for a zero mask, which matches anything."""
    if _is_full_mask(name, mask):
        return norm_scalar(name, val)
    val, mask = norm_scalar(name, val), norm_scalar(name, mask)
    if name in MAC_FIELDS:
        v, m = int(val.replace(":", ""), 16), int(mask.replace(":", ""), 16)
        masked: Any = (v & m).to_bytes(6, "big").hex(":")
    elif name in IPV4_FIELDS or name in IPV6_FIELDS:
        v, m = int(ipaddress.ip_address(val)), int(ipaddress.ip_address(mask))
        masked = str(ipaddress.ip_address(val).__class__(v & m))
    else:
        m = mask
        masked = val & mask
    return None if m == 0 else (masked, mask)


def norm_match(fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Match:
    """Sort fields and normalise masks as a switch does (OpenFlow 1.3.5 section 7.2.3.5).

    Equal matches compare equal whatever their spelling, and a match reads back from Open
    vSwitch as it was asked for.

    Parameters
    ----------
    fields : mapping or iterable of (name, value)
        os-ken OXM field names to a value, or to a ``(value, mask)`` pair for a masked field.

    Returns
    -------
    Match
        ``((name, value), ...)`` sorted by name; a masked field keeps ``(value, mask)`` with the
        value's bits outside the mask cleared, an all-ones mask becomes an exact value and a
        zero mask drops the field.

    Raises
    ------
    ValueError
        A value or mask that does not parse for its field (see `norm_scalar`).

    Examples
    --------
    >>> norm_match({"ipv4_dst": ("10.0.0.7", "255.255.255.0"), "eth_type": 0x800})
    (('eth_type', 2048), ('ipv4_dst', ('10.0.0.0', '255.255.255.0')))
    """
    items = fields.items() if isinstance(fields, Mapping) else fields
    out = []
    for name, value in items:
        if isinstance(value, tuple):
            norm = _norm_masked(name, *value)
            if norm is not None:
                out.append((name, norm))
        else:
            out.append((name, norm_scalar(name, value)))
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry as we want it on a switch, or as the switch reported it.

    Build it with `flow`, which puts match and instructions in canonical form.

    Attributes
    ----------
    table, priority : int
        The OpenFlow table id (0-254) and priority (0-65535).
    match : Match
        Canonical match (`norm_match`).
    instructions : tuple of Instruction
        Canonical instructions, in OpenFlow 1.3.5 section 5.9 order.
    cookie : int
        The 64-bit cookie.
    idle_timeout, hard_timeout : int
        Seconds; 0 for none.
    flags : int
        OFPFF_* flags (OpenFlow 1.3.5 section 7.3.4.1).
    """

    table: int
    priority: int
    match: Match
    instructions: tuple[Instruction, ...] = ()
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0

    @property
    def key(self) -> FlowKey:
        """``(table, priority, match)``: the same key means the same entry (OF1.3.5 6.4)."""
        return (self.table, self.priority, self.match)

    def match_dict(self) -> dict[str, Any]:
        """The match as a dict of field name to value (or ``(value, mask)``)."""
        return dict(self.match)


def flow(
    table: int,
    priority: int,
    match: Mapping[str, Any] | None = None,
    *instructions: Instruction,
    cookie: int = 0,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    flags: int = 0,
) -> Flow:
    """Build a canonical `Flow`.

    Parameters
    ----------
    table, priority : int
        OpenFlow table id and priority.
    match : mapping, optional
        Field name to value or ``(value, mask)``; normalised by `norm_match`. None matches all.
    *instructions : Instruction
        From `controller.flows.actions` (`apply`, `goto`, `write_metadata`, `meter`). An apply
        with no actions is dropped (OpenFlow 1.3 rejects empty action lists); the rest are
        sorted into OpenFlow 1.3.5 section 5.9 order.
    cookie : int
        The 64-bit cookie.
    idle_timeout, hard_timeout : int
        Seconds; 0 for none.
    flags : int
        OFPFF_* flags.

    Returns
    -------
    Flow

    Raises
    ------
    ValueError
        A match value that does not parse (see `norm_match`).
    KeyError
        An instruction of unknown kind.
    """
    kept = [i for i in instructions if not (i[0] == "apply" and not i[1])]
    kept.sort(key=lambda ins: _INSTRUCTION_ORDER[ins[0]])
    return Flow(
        table,
        priority,
        norm_match(match or {}),
        tuple(kept),
        cookie,
        idle_timeout,
        hard_timeout,
        flags,
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One group bucket (OpenFlow 1.3.5 section 7.3.4.2).

    Attributes
    ----------
    actions : tuple of Action
        Canonical actions (`controller.flows.actions`).
    weight : int
        Share of traffic in a select group; 0 elsewhere.
    watch_port, watch_group : int
        Liveness watched by fast-failover and select groups; OFPP_ANY / OFPG_ANY for none.
    """

    actions: tuple[Action, ...]
    weight: int = 0
    watch_port: int = ofp.OFPP_ANY
    watch_group: int = ofp.OFPG_ANY


@dataclass(frozen=True, slots=True)
class Group:
    """One group entry: ``type`` is ``"all"``, ``"select"``, ``"indirect"`` or ``"ff"``."""

    group_id: int
    type: str
    buckets: tuple[Bucket, ...] = field(default_factory=tuple)


def group(group_id: int, type_: str, buckets: Iterable[Bucket]) -> Group:
    """Build a canonical `Group`, as Open vSwitch reports it in a group description.

    Weights are kept only for select groups, watches only for fast-failover and select (a select
    bucket whose watched port is down is skipped).

    Parameters
    ----------
    group_id : int
        The 32-bit group id.
    type_ : str
        ``"all"``, ``"select"``, ``"indirect"`` or ``"ff"`` (OpenFlow 1.3.5 section 5.6.1).
    buckets : iterable of Bucket

    Returns
    -------
    Group
    """
    norm = []
    for b in buckets:
        weight = b.weight if type_ == "select" else 0
        watched = type_ in ("ff", "select")
        watch_port = b.watch_port if watched else ofp.OFPP_ANY
        watch_group = b.watch_group if watched else ofp.OFPG_ANY
        norm.append(Bucket(tuple(b.actions), weight, watch_port, watch_group))
    return Group(group_id, type_, tuple(norm))


@dataclass(frozen=True, slots=True)
class Meter:
    """A drop-band meter (OpenFlow 1.3.5 section 5.7).

    Attributes
    ----------
    meter_id : int
    unit : str
        ``"pktps"`` (rate in packets/s, burst in packets) or ``"kbps"`` (kbit/s, kbit).
    rate : int
        Packets/s or kbit/s above which packets are dropped.
    burst : int
        Packets or kbit; 0 for the switch's default.
    """

    meter_id: int
    unit: str
    rate: int
    burst: int = 0
