"""An in-memory OpenFlow 1.3 switch that is stricter than a real one.

It takes the same os-ken message objects the controller sends, keeps multi-table flow state and
groups, and answers "where does this packet go?". It raises FakeSwitchError on what a real switch
would reject, and on some things a real switch allows but that are always bugs in a controller:

- two overlapping flows of equal priority in one table (as if CHECK_OVERLAP were always set);
- goto to the same or an earlier table, or past the last one;
- a flow or bucket using a group or meter that does not exist; adding a group twice;
- MODIFY_STRICT of a flow that is not there; an empty apply-actions; repeated instructions;
- a match field without its prerequisite (ipv4_src without eth_type=0x0800, ...);
- a fast-failover bucket that watches nothing.

Packets are dicts of OXM fields, e.g. {"in_port": 1, "eth_dst": "...", "eth_type": 0x0800}.
VLAN tags follow OpenFlow 1.3 as Open vSwitch implements it: `vlan_vid` is the outermost tag
(OFPVID_PRESENT | VID; absent: untagged, which a vlan_vid match of OFPVID_NONE selects),
`eth_type` the type after every tag, and "_inner_vlans" the tags below the outer one, so a
push_vlan onto a tagged frame keeps its tag underneath and a pop_vlan uncovers it.
Select groups pick a bucket by a hash of the packet's flow fields, in proportion to the weights;
fast-failover groups take the first bucket whose watched port is live.
"""

from __future__ import annotations

import copy
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import (
    NAT_DST,
    NAT_SRC,
    NXT_CT_FLUSH_ZONE,
    Flow,
    Group,
    Meter,
    flow_from_stats,
    group_from_desc,
    meter_from_config,
    of_instruction,
)
from controller.matches import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_SNAT, CT_TRK


def _ct_key(pkt: dict) -> tuple:
    """A connection's 5-tuple, whatever the family and transport."""
    v = "ipv4" if "ipv4_src" in pkt else "ipv6"
    proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(pkt.get("ip_proto"), "")
    return (
        pkt.get(f"{v}_src"),
        pkt.get(f"{v}_dst"),
        pkt.get("ip_proto"),
        pkt.get(f"{proto}_src"),
        pkt.get(f"{proto}_dst"),
    )


def _reverse(key: tuple) -> tuple:
    src, dst, proto, sport, dport = key
    return (dst, src, proto, dport, sport)


@dataclass
class Connection:
    """A committed connection as Open vSwitch's conntrack keeps it (lib/conntrack.c): the key
    of its original direction as first seen, the key its replies carry, its mark and the one
    translation it was committed with (NAT_SRC or NAT_DST; a ct action takes one nat, and
    ofp-actions rejects both flags at once). Untranslated, the reply key is the original
    reversed; packets are translated to the reverse of the other direction's key."""

    orig: tuple
    reply: tuple
    mark: int = 0
    nat: int = 0


class FakeSwitchError(AssertionError):
    """The controller sent something a careful switch refuses."""


_PREREQS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ipv4_src": ("eth_type", (0x0800,)),
    "ipv4_dst": ("eth_type", (0x0800,)),
    "ipv6_src": ("eth_type", (0x86DD,)),
    "ipv6_dst": ("eth_type", (0x86DD,)),
    "arp_op": ("eth_type", (0x0806,)),
    "arp_spa": ("eth_type", (0x0806,)),
    "arp_tpa": ("eth_type", (0x0806,)),
    "arp_sha": ("eth_type", (0x0806,)),
    "arp_tha": ("eth_type", (0x0806,)),
    "ip_proto": ("eth_type", (0x0800, 0x86DD)),
    "ip_dscp": ("eth_type", (0x0800, 0x86DD)),
    "tcp_src": ("ip_proto", (6,)),
    "tcp_dst": ("ip_proto", (6,)),
    "udp_src": ("ip_proto", (17,)),
    "udp_dst": ("ip_proto", (17,)),
    "sctp_src": ("ip_proto", (132,)),
    "sctp_dst": ("ip_proto", (132,)),
    "icmpv4_type": ("ip_proto", (1,)),
    "icmpv4_code": ("ip_proto", (1,)),
    "icmpv6_type": ("ip_proto", (58,)),
    "icmpv6_code": ("ip_proto", (58,)),
    "tcp_flags": ("ip_proto", (6,)),
}
_SPECIAL_PORTS = {
    ofp.OFPP_CONTROLLER,
    ofp.OFPP_IN_PORT,
    ofp.OFPP_ALL,
    ofp.OFPP_FLOOD,
    ofp.OFPP_LOCAL,
    ofp.OFPP_TABLE,
}
_HASH_FIELDS = (
    "eth_src",
    "eth_dst",
    "ipv4_src",
    "ipv4_dst",
    "ipv6_src",
    "ipv6_dst",
    "ip_proto",
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
)


def to_int(value: Any) -> int:
    """Any match value (MAC, IPv4, IPv6 string or int) as an integer."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.count(":") == 5 and len(text) == 17:
        return int(text.replace(":", ""), 16)
    return int(ipaddress.ip_address(text))


ALL_ONES = (1 << 128) - 1


def _value_mask(value: Any) -> tuple[int, int]:
    """(value, mask) as integers; an exact match has every mask bit set."""
    if isinstance(value, tuple):
        return to_int(value[0]), to_int(value[1])
    return to_int(value), ALL_ONES


def _compatible(a: Any, b: Any) -> bool:
    """Could one packet field value satisfy both match values?"""
    va, ma = _value_mask(a)
    vb, mb = _value_mask(b)
    return (va & ma & mb) == (vb & ma & mb)


def overlaps(m1: dict, m2: dict) -> bool:
    return all(_compatible(m1[f], m2[f]) for f in m1.keys() & m2.keys())


def covers(filt: dict, entry: dict) -> bool:
    """Does a non-strict filter select this entry? Each filter field must be at least as wide."""
    for name, fval in filt.items():
        if name not in entry:
            return False
        fv, fm = _value_mask(fval)
        ev, em = _value_mask(entry[name])
        if fm & ~em or (ev & fm) != (fv & fm):
            return False
    return True


def packet_matches(match: dict, pkt: dict) -> bool:
    for name, value in match.items():
        if name not in pkt and name != "vlan_vid":
            return False
        v, m = _value_mask(value)
        if (to_int(pkt.get(name, ofp.OFPVID_NONE)) & m) != (v & m):
            return False
    return True


@dataclass
class Entry:
    flow: Flow
    packets: int = 0


@dataclass
class LookupResult:
    outputs: list[tuple[int, dict]] = field(default_factory=list)  # (port, packet as sent)
    to_controller: list[tuple[int, int, dict]] = field(default_factory=list)  # (table, cookie, pkt)
    matched: list[Flow] = field(default_factory=list)

    def ports(self) -> list[int]:
        return [p for p, _ in self.outputs]


def _check_add_or_modify(kind: str, number: int, exists: bool, adding: bool) -> None:
    """Adding what exists, or modifying what does not, is an error for groups and meters."""
    if adding and exists:
        raise FakeSwitchError(f"{kind} {number} already exists")
    if not adding and not exists:
        raise FakeSwitchError(f"{kind} {number} does not exist")


class FakeSwitch:
    def __init__(
        self,
        dpid: int = 1,
        n_tables: int = 5,
        ports: dict[int, bool] | None = None,
        hw_prefix: str = "02:00:00",
    ) -> None:
        self.dpid = dpid
        self.n_tables = n_tables
        self.ports: dict[int, bool] = dict(ports or {})
        self.hw_prefix = hw_prefix
        self.tables: list[list[Entry]] = [[] for _ in range(n_tables)]
        self.groups: dict[int, Group] = {}
        self.meters: dict[int, Meter] = {}
        self.received: list = []
        self.connections: dict[tuple, Connection] = {}  # (zone, 5-tuple) committed by ct
        self.ct_flushes = 0
        self.takes_bundles = True
        self._bundle: list | None = None
        self.commits = 0
        self.errors: list[tuple[int, int, int]] = []  # (xid, type, code) not yet reported
        self.packet_outs: list = []

    # --- messages in ---------------------------------------------------------------------------

    def apply(self, msgs) -> None:
        for msg in msgs:
            self.received.append(msg)
            self._apply_one(msg)

    def _bundle_msg(self, msg) -> None:
        """OpenFlow 1.3 bundles: collect, then apply all at once, or nothing if any fails."""
        if not self.takes_bundles:
            self.errors.append((msg.xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER))
            return
        if isinstance(msg, parser.ONFBundleAddMsg):
            if self._bundle is None:
                raise FakeSwitchError("bundle add without an open bundle")
            self._bundle.append(msg.message)
        elif msg.type == ofp.ONF_BCT_OPEN_REQUEST:
            self._bundle = []
        elif msg.type == ofp.ONF_BCT_COMMIT_REQUEST:
            saved = (copy.deepcopy(self.tables), dict(self.groups), dict(self.meters))
            pending, self._bundle = self._bundle or [], None
            try:
                for inner in pending:
                    self._apply_one(inner)
            except FakeSwitchError:
                self.tables, self.groups, self.meters = saved
                raise
            self.commits += 1
        else:
            self._bundle = None

    def _apply_one(self, msg) -> None:
        if isinstance(msg, (parser.ONFBundleCtrlMsg, parser.ONFBundleAddMsg)):
            self._bundle_msg(msg)
        elif isinstance(msg, parser.OFPFlowMod):
            self._flow_mod(msg)
        elif isinstance(msg, parser.OFPGroupMod):
            self._group_mod(msg)
        elif isinstance(msg, parser.OFPMeterMod):
            self._meter_mod(msg)
        elif isinstance(msg, parser.OFPPacketOut):
            self.packet_outs.append(msg)
        elif isinstance(msg, parser.OFPExperimenter) and msg.exp_type == NXT_CT_FLUSH_ZONE:
            (zone,) = struct.unpack("!6xH", msg.data)
            for k in [k for k in self.connections if k[0] == zone]:
                del self.connections[k]  # in place: a fake network's switches share it
            self.ct_flushes += 1
        elif isinstance(
            msg,
            (
                parser.OFPBarrierRequest,
                parser.OFPFlowStatsRequest,
                parser.OFPGroupDescStatsRequest,
                parser.OFPPortDescStatsRequest,
                parser.OFPMeterConfigStatsRequest,
            ),
        ):
            pass
        else:
            raise FakeSwitchError(f"unexpected message {type(msg).__name__}")

    def _check_flow(self, msg) -> Flow:
        if not 0 <= msg.table_id < self.n_tables:
            raise FakeSwitchError(f"table {msg.table_id} does not exist")
        kinds = [type(i).__name__ + str(getattr(i, "type", "")) for i in msg.instructions]
        if len(kinds) != len(set(kinds)):
            raise FakeSwitchError(f"repeated instruction in {msg.instructions}")
        for ins in msg.instructions:
            if isinstance(ins, parser.OFPInstructionActions):
                if ins.type == ofp.OFPIT_APPLY_ACTIONS and not ins.actions:
                    raise FakeSwitchError("empty apply-actions")
                for action in ins.actions:
                    self._check_action(action)
            elif isinstance(ins, parser.OFPInstructionGotoTable):
                if not msg.table_id < ins.table_id < self.n_tables:
                    raise FakeSwitchError(f"goto {ins.table_id} from table {msg.table_id}")
            elif isinstance(ins, parser.OFPInstructionMeter) and ins.meter_id not in self.meters:
                raise FakeSwitchError(f"meter {ins.meter_id} does not exist")
        match = dict(msg.match._fields2)
        for name in match:
            if name in _PREREQS:
                need, values = _PREREQS[name]
                if match.get(need) not in values:
                    raise FakeSwitchError(f"{name} needs {need} in {values}, match is {match}")
        return flow_from_stats(msg)

    def _check_action(self, action) -> None:
        if isinstance(action, parser.OFPActionGroup) and action.group_id not in self.groups:
            raise FakeSwitchError(f"group {action.group_id} does not exist")
        if (
            isinstance(action, parser.OFPActionOutput)
            and action.port not in self.ports
            and action.port not in _SPECIAL_PORTS
        ):
            raise FakeSwitchError(f"output to unknown port {action.port}")

    def _flow_mod(self, msg) -> None:
        cmd = msg.command
        if cmd == ofp.OFPFC_ADD:
            f = self._check_flow(msg)
            table = self.tables[f.table]
            for i, entry in enumerate(table):
                if entry.flow.priority == f.priority:
                    if entry.flow.match == f.match:
                        table[i] = Entry(f)
                        return
                    # OpenFlow leaves the choice between such entries undefined: harmless only
                    # when they would do the same thing.
                    if entry.flow.instructions != f.instructions and overlaps(
                        dict(entry.flow.match), dict(f.match)
                    ):
                        raise FakeSwitchError(f"{f} overlaps {entry.flow} at equal priority")
            table.append(Entry(f))
            table.sort(key=lambda e: -e.flow.priority)
        elif cmd in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            f = self._check_flow(msg)
            hits = self._select(msg, strict=cmd == ofp.OFPFC_MODIFY_STRICT)
            if not hits and cmd == ofp.OFPFC_MODIFY_STRICT:
                raise FakeSwitchError(f"MODIFY_STRICT of a flow that is not there: {f}")
            for entry in hits:
                old = entry.flow
                entry.flow = Flow(
                    old.table,
                    old.priority,
                    old.match,
                    f.instructions,
                    f.cookie,
                    old.idle_timeout,
                    old.hard_timeout,
                    old.flags,
                )
        elif cmd in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            hits = self._select(msg, strict=cmd == ofp.OFPFC_DELETE_STRICT)
            for entry in hits:
                self.tables[entry.flow.table].remove(entry)
        else:
            raise FakeSwitchError(f"unknown flow-mod command {cmd}")

    def _select(self, msg, strict: bool) -> list[Entry]:
        filt = dict(msg.match._fields2)
        wanted = flow_from_stats(msg).match
        tables = range(self.n_tables) if msg.table_id == ofp.OFPTT_ALL else [msg.table_id]
        hits = []
        for t in tables:
            for entry in self.tables[t]:
                f = entry.flow
                if strict:
                    if f.priority != msg.priority or f.match != wanted:
                        continue
                elif not covers(filt, dict(f.match)):
                    continue
                if msg.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT) and not self._uses(
                    f, msg.out_port, msg.out_group
                ):
                    continue
                if msg.cookie_mask and (f.cookie & msg.cookie_mask) != (
                    msg.cookie & msg.cookie_mask
                ):
                    continue
                hits.append(entry)
        return hits

    @staticmethod
    def _uses(f: Flow, out_port: int, out_group: int) -> bool:
        actions = [a for ins in f.instructions if ins[0] in ("apply", "write") for a in ins[1]]
        if out_port != ofp.OFPP_ANY and not any(
            a[0] == "output" and a[1] == out_port for a in actions
        ):
            return False
        return out_group == ofp.OFPG_ANY or any(
            a[0] == "group" and a[1] == out_group for a in actions
        )

    def _group_mod(self, msg) -> None:
        if msg.command == ofp.OFPGC_DELETE:
            ids = list(self.groups) if msg.group_id == ofp.OFPG_ALL else [msg.group_id]
            for gid in ids:
                if self.groups.pop(gid, None) is not None:
                    for table in self.tables:
                        table[:] = [e for e in table if not self._uses(e.flow, ofp.OFPP_ANY, gid)]
            return
        _check_add_or_modify(
            "group", msg.group_id, msg.group_id in self.groups, msg.command == ofp.OFPGC_ADD
        )
        for bucket in msg.buckets:
            for action in bucket.actions:
                self._check_action(action)
            if (
                msg.type == ofp.OFPGT_FF
                and bucket.watch_port == ofp.OFPP_ANY
                and bucket.watch_group == ofp.OFPG_ANY
            ):
                raise FakeSwitchError("fast-failover bucket watches no port or group")
        self.groups[msg.group_id] = group_from_desc(msg)

    def _meter_mod(self, msg) -> None:
        if msg.command == ofp.OFPMC_DELETE:
            self.meters.pop(msg.meter_id, None)
            return
        _check_add_or_modify(
            "meter", msg.meter_id, msg.meter_id in self.meters, msg.command == ofp.OFPMC_ADD
        )
        if len(msg.bands) != 1 or not msg.bands[0].rate:
            raise FakeSwitchError(f"meter {msg.meter_id} needs one band with a rate")
        self.meters[msg.meter_id] = meter_from_config(msg)

    # --- what a switch reports -----------------------------------------------------------------

    def flows(self) -> list[Flow]:
        return [e.flow for table in self.tables for e in table]

    def flow_stats(self, table: int = ofp.OFPTT_ALL, cookie: int = 0, cookie_mask: int = 0):
        """The tables as OFPFlowStats entries with their packet counts, as a switch reports them."""
        out = []
        for table_entries in self.tables:
            for entry in table_entries:
                f = entry.flow
                if table not in (ofp.OFPTT_ALL, f.table) or (f.cookie & cookie_mask) != (
                    cookie & cookie_mask
                ):
                    continue
                out.append(
                    parser.OFPFlowStats(
                        table_id=f.table,
                        duration_sec=0,
                        duration_nsec=0,
                        priority=f.priority,
                        idle_timeout=f.idle_timeout,
                        hard_timeout=f.hard_timeout,
                        flags=f.flags,
                        cookie=f.cookie,
                        packet_count=entry.packets,
                        byte_count=entry.packets * 64,
                        match=parser.OFPMatch(**dict(f.match)),
                        instructions=[of_instruction(i) for i in f.instructions],
                    )
                )
        return out

    def meter_configs(self) -> list[Meter]:
        return list(self.meters.values())

    def group_descs(self) -> list[Group]:
        return list(self.groups.values())

    def hw_addr(self, port: int) -> str:
        return f"{self.hw_prefix}:{self.dpid & 0xFF:02x}:00:{port & 0xFF:02x}"

    def flow_count(self, table: int | None = None) -> int:
        if table is None:
            return sum(len(t) for t in self.tables)
        return len(self.tables[table])

    # --- the data plane ------------------------------------------------------------------------

    def lookup(self, pkt: dict) -> LookupResult:
        """Where a packet goes: walk the tables from 0 as an OpenFlow 1.3 switch would."""
        result = LookupResult()
        self._walk({"metadata": 0, "ct_state": 0, "ct_zone": 0, **pkt}, 0, result)  # all start at 0
        return result

    def execute(self, pkt: dict, actions: tuple) -> LookupResult:
        """A packet-out: `actions` done on the packet, which arrived on pkt["in_port"]."""
        result = LookupResult()
        pkt = {"metadata": 0, "ct_state": 0, "ct_zone": 0, **pkt}
        for action in actions:
            if action[0] == "group" and action[1] not in self.groups:
                raise FakeSwitchError(f"packet-out to group {action[1]}, which does not exist")
            if self._act(action, pkt, result, 0, 0):
                break
        return result

    def _walk(self, pkt: dict, table: int | None, result: LookupResult) -> None:
        action_set: dict[str, tuple] = {}
        while table is not None:
            entry = next(
                (e for e in self.tables[table] if packet_matches(dict(e.flow.match), pkt)), None
            )
            if entry is None:
                return  # no table-miss entry: dropped
            entry.packets += 1
            result.matched.append(entry.flow)
            next_table = None
            for ins in entry.flow.instructions:
                if ins[0] == "apply":
                    for action in ins[1]:
                        if self._act(action, pkt, result, table, entry.flow.cookie):
                            return  # recirculated: the copy went on from there
                elif ins[0] == "write":
                    for action in ins[1]:
                        action_set[action[0] if action[0] != "set_field" else action[1]] = action
                elif ins[0] == "clear":
                    action_set.clear()
                elif ins[0] == "meta":
                    meta = pkt.get("metadata", 0)
                    pkt["metadata"] = (meta & ~ins[2]) | (ins[1] & ins[2])
                elif ins[0] == "goto":
                    next_table = ins[1]
            if next_table is None:
                for action in action_set.values():
                    self._act(action, pkt, result, table, entry.flow.cookie)
            table = next_table

    def _conntrack(self, action: tuple, pkt: dict, result: LookupResult) -> bool:
        """ct(): look the packet up (and, with `nat`, translate it as its connection says),
        commit it with its mark and translation, and recirculate with ct_state set.

        As Open vSwitch's userspace conntrack does (lib/conntrack.c, process_one): ct_state
        starts over in each zone; a packet already translated in this zone is looked up by
        its key reversed; a new connection committed with nat(src=...) or nat(dst=...) gets a
        reply key that no other connection of the zone has, keeping the source port if it
        can (nat_get_unique_tuple); a nat with an address on an existing connection applies
        the translation the connection already has."""
        _, flags, zone, table, nested = action
        nat = next((a for a in nested if a[0] == "nat"), None)
        mark = next((a[2] for a in nested if a[:2] == ("set_field", "ct_mark")), None)
        natted = pkt.get("ct_zone") == zone and pkt.get("ct_state", 0) & (CT_SNAT | CT_DNAT)
        state, conn = self._ct_lookup(zone, _ct_key(pkt), bool(natted))
        if natted:
            state |= pkt["ct_state"] & (CT_SNAT | CT_DNAT)
        elif conn is not None and nat is not None:
            state |= self._translate(pkt, conn, reply=bool(state & CT_RPL))
        if flags & 2 and state & CT_RPL:  # commit,force: the reply becomes an original
            for k in [k for k, c in self.connections.items() if c is conn]:
                del self.connections[k]
            state, conn = CT_TRK | CT_NEW, None
        if flags & 1 and not state & CT_RPL and conn is None:
            conn = self._commit(zone, _ct_key(pkt), nat)
            if conn is not None:  # else no free reply key: new, untranslated, not committed
                state |= self._translate(pkt, conn, reply=False)
        if flags & 1 and conn is not None and mark is not None:
            conn.mark = mark
        pkt["ct_mark"] = conn.mark if conn is not None else 0
        if table == ofp.OFPTT_ALL:
            pkt["ct_state"], pkt["ct_zone"] = state, zone
            return False
        self._walk({**pkt, "ct_state": state, "ct_zone": zone}, table, result)
        return True

    def _ct_lookup(
        self, zone: int, key: tuple, natted: bool = False
    ) -> tuple[int, Connection | None]:
        if natted:  # already translated here: its key reversed is the other direction's
            state, conn = self._ct_lookup(zone, _reverse(key))
            return (state ^ CT_RPL, conn) if conn is not None else (state, None)
        conn = self.connections.get((zone, key))
        if conn is not None:
            return CT_TRK | CT_EST, conn
        for (z, _), c in self.connections.items():
            if z == zone and key == c.reply:
                return CT_TRK | CT_EST | CT_RPL, c
        return CT_TRK | CT_NEW, None

    def _commit(self, zone: int, key: tuple, nat: tuple | None) -> Connection | None:
        """A new connection in `zone`; with nat(src=...) or nat(dst=...), its reply key is
        the translation's, with the original source port moved along its range (1-511,
        600-1023 or 1024-65535, at most 128 tries) if another connection has that key; None
        when no key is free (nothing is committed)."""
        reply = list(_reverse(key))
        kind = nat[1] if nat is not None and nat[2] is not None else 0
        if kind & (NAT_SRC | NAT_DST) == NAT_SRC | NAT_DST:
            raise FakeSwitchError(f"{nat}: nat takes src or dst, not both")
        if kind:
            side = 1 if kind & NAT_SRC else 0  # the reply's destination, or its source
            reply[side] = nat[2]
            if nat[3] is not None:
                reply[3 + side] = nat[3]
            taken = {k for (z, o), c in self.connections.items() if z == zone for k in (o, c.reply)}
            start = reply[4]
            lo, hi = (1, 511) if start < 512 else (600, 1023) if start < 1024 else (1024, 65535)
            if kind & NAT_SRC and nat[3] is not None:
                lo = hi = start  # a source port given: that one or none
            for i in range(min(128, hi - lo + 1)):
                reply[4] = lo + (start - lo + i) % (hi - lo + 1)
                if tuple(reply) not in taken:
                    break
            else:
                return None
        conn = Connection(key, tuple(reply), nat=kind)
        self.connections[(zone, key)] = conn
        return conn

    @staticmethod
    def _translate(pkt: dict, conn: Connection, reply: bool) -> int:
        """Rewrite the packet to the reverse of the other direction's key (nat_packet);
        the ct_state bit that says so (+snat or +dnat), 0 for an untranslated connection."""
        if not conn.nat:
            return 0
        v = "ipv4" if "ipv4_src" in pkt else "ipv6"
        proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(pkt.get("ip_proto"), "")
        src, dst, _, sport, dport = _reverse(conn.orig if reply else conn.reply)
        pkt[f"{v}_src"], pkt[f"{v}_dst"] = src, dst
        if proto:
            pkt[f"{proto}_src"], pkt[f"{proto}_dst"] = sport, dport
        snat = bool(conn.nat & NAT_SRC) != reply  # un-translating a DNAT rewrites the source
        return CT_SNAT if snat else CT_DNAT

    def _act(self, action: tuple, pkt: dict, result: LookupResult, table: int, cookie: int):
        """Do one action; True when it recirculated the packet (nothing after it runs)."""
        kind = action[0]
        if kind == "ct":
            return self._conntrack(action, pkt, result)
        if kind == "output":
            port = action[1]
            if port == ofp.OFPP_CONTROLLER:
                result.to_controller.append((table, cookie, dict(pkt)))
            elif port == ofp.OFPP_IN_PORT:
                result.outputs.append((pkt["in_port"], dict(pkt)))
            elif port in (ofp.OFPP_ALL, ofp.OFPP_FLOOD):
                for p, live in sorted(self.ports.items()):
                    if live and p != pkt.get("in_port"):
                        result.outputs.append((p, dict(pkt)))
            elif port != pkt.get("in_port") and self.ports.get(port):
                result.outputs.append((port, dict(pkt)))
        elif kind == "set_field":
            pkt[action[1]] = action[2]
        elif kind == "group":
            self._group(action[1], pkt, result, table, cookie)
        elif kind == "pop_vlan":
            inner = pkt.pop("_inner_vlans", ())
            pkt.pop("vlan_vid", None)
            if inner:
                pkt["vlan_vid"] = inner[0]
                if inner[1:]:
                    pkt["_inner_vlans"] = inner[1:]
        elif kind == "push_vlan":
            if "vlan_vid" in pkt:
                pkt["_inner_vlans"] = (pkt["vlan_vid"], *pkt.get("_inner_vlans", ()))
            pkt["vlan_vid"] = ofp.OFPVID_PRESENT  # VID 0 until a set_field names it

    def _bucket_live(self, bucket) -> bool:
        """A bucket that watches a port or group is live while they are; one that watches
        nothing always is (fast-failover buckets must watch something: checked on add)."""
        if bucket.watch_port != ofp.OFPP_ANY and not self.ports.get(bucket.watch_port):
            return False
        if bucket.watch_group != ofp.OFPG_ANY:
            return any(self._bucket_live(b) for b in self.groups[bucket.watch_group].buckets)
        return True

    def _group(self, gid: int, pkt: dict, result: LookupResult, table: int, cookie: int):
        g = self.groups[gid]
        if g.type in ("all", "indirect"):
            chosen = list(g.buckets)
        elif g.type == "select":  # in proportion to the weights of the live buckets
            live = [b for b in g.buckets if self._bucket_live(b)]
            total = sum(b.weight for b in live)
            chosen = []
            if total:
                key = repr([(f, pkt.get(f)) for f in _HASH_FIELDS]).encode()
                point = zlib.crc32(key) % total
                for bucket in live:
                    if point < bucket.weight:
                        chosen = [bucket]
                        break
                    point -= bucket.weight
        else:
            chosen = [b for b in g.buckets if self._bucket_live(b)][:1]
        for bucket in chosen:
            copy = dict(pkt)
            for action in bucket.actions:
                self._act(action, copy, result, table, cookie)
