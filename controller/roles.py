"""OpenFlow roles per switch for one replica: plain Python between the core and the wire.

Given who masters each switch (controller/cluster.py), the gate sends
`OFPRoleRequest(MASTER, generation_id)` where this replica is the master and
`OFPRoleRequest(SLAVE, generation_id)` elsewhere, and lets writes (flow, group and meter mods,
packet-outs, bundles) reach a switch only once its ROLE_REPLY said MASTER. Writes made while a
MASTER request is outstanding are queued and go out with the reply (ONOS-2885 lost them);
writes made as a slave are dropped: on promotion the core re-reads the switch and repairs it
with a full diff (`Core.resync`: no flow-mods if it already holds what is wanted), so nothing
is lost. An OFPBRC_IS_SLAVE error, or a role request refused, means another replica took the
switch: this one is demoted and stops writing.

Reads (multipart requests, barriers, role and async messages) pass in every role: a slave
keeps its view of the switch, and `OFPSetAsync` lets it receive packet-ins, port status and
flow-removed messages as the master does, so it learns what the master learns.

OpenFlow 1.3.5, 6.3.7 (controller roles) and 7.3.9; Open vSwitch's ofconn role handling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.cluster import Owner
from controller.flows import OF13

LOG = logging.getLogger("osken_suite.roles")

ROLE_NAMES = {
    ofp.OFPCR_ROLE_NOCHANGE: "nochange",
    ofp.OFPCR_ROLE_EQUAL: "equal",
    ofp.OFPCR_ROLE_MASTER: "master",
    ofp.OFPCR_ROLE_SLAVE: "slave",
}
READS = (
    parser.OFPMultipartRequest,
    parser.OFPBarrierRequest,
    parser.OFPRoleRequest,
    parser.OFPSetAsync,
    parser.OFPEchoRequest,
)
QUEUE_LIMIT = 100_000  # messages held for one switch while its MASTER request is answered
ALL_PACKET_IN = 1 << ofp.OFPR_NO_MATCH | 1 << ofp.OFPR_ACTION | 1 << ofp.OFPR_INVALID_TTL
ALL_PORT_STATUS = 1 << ofp.OFPPR_ADD | 1 << ofp.OFPPR_DELETE | 1 << ofp.OFPPR_MODIFY
ALL_FLOW_REMOVED = (
    1 << ofp.OFPRR_IDLE_TIMEOUT
    | 1 << ofp.OFPRR_HARD_TIMEOUT
    | 1 << ofp.OFPRR_DELETE
    | 1 << ofp.OFPRR_GROUP_DELETE
)


def role_request(role: int, generation: int) -> parser.OFPRoleRequest:
    """Not os_ken.lib.ofctl_v1_3.set_role: that one always sends generation id 0."""
    return parser.OFPRoleRequest(OF13, role, generation)


def async_for_all_roles() -> parser.OFPSetAsync:
    """Packet-ins, port status and flow-removed for master and slave alike ([master, slave])."""
    return parser.OFPSetAsync(
        OF13,
        [ALL_PACKET_IN, ALL_PACKET_IN],
        [ALL_PORT_STATUS, ALL_PORT_STATUS],
        [ALL_FLOW_REMOVED, ALL_FLOW_REMOVED],
    )


@dataclass
class SwitchRole:
    """One switch as this replica sees it: the role it asked for (with the generation id and
    the request's xid), the role the switch confirmed, and writes held for the reply."""

    requested: int = ofp.OFPCR_ROLE_EQUAL
    generation: int = -1
    xid: int | None = None
    confirmed: int = ofp.OFPCR_ROLE_EQUAL  # a new connection is EQUAL until it asks
    queue: list = field(default_factory=list)
    stale_logged: set = field(default_factory=set)  # generation ids refused as stale, logged


class RoleGate:
    """Roles of one replica on every switch it is connected to. Methods return the messages to
    send, per dpid ({dpid: [msg]}), and never send anything themselves."""

    def __init__(self, replica: str, new_xid) -> None:
        """`new_xid()` numbers role requests so their replies can be told apart."""
        self.replica = replica
        self.new_xid = new_xid
        self.switches: dict[int, SwitchRole] = {}
        self.owners: dict[int, Owner] = {}
        self.dropped = 0  # writes dropped as a non-master

    def connected(self, dpid: int) -> dict[int, list]:
        """A switch connected, no role confirmed yet: {dpid: [messages to send]} (OFPSetAsync,
        so that as a slave it still sends us packet-ins, port status and flow-removed)."""
        self.switches[dpid] = SwitchRole()
        return self._ask(dpid, [async_for_all_roles()])

    def disconnected(self, dpid: int) -> None:
        """Forget switch `dpid`'s role (it reconnects as a new switch)."""
        sw = self.switches.pop(dpid, None)
        if sw is not None:
            self._demote(dpid, sw, "the connection closed")

    def is_master(self, dpid: int) -> bool:
        """True once the switch's ROLE_REPLY said MASTER (and no demotion since)."""
        sw = self.switches.get(dpid)
        return sw is not None and sw.confirmed == ofp.OFPCR_ROLE_MASTER

    def ownership(self, owners: Mapping[int, Owner]) -> dict[int, list]:
        """The election's view changed: ask each switch for the role it now gives us."""
        self.owners = dict(owners)
        out: dict[int, list] = {}
        for dpid in self.switches:
            out.update(self._ask(dpid, []))
        return out

    def _ask(self, dpid: int, msgs: list) -> dict[int, list]:
        sw, owner = self.switches[dpid], self.owners.get(dpid)
        if owner is None:  # nobody known yet (or etcd never answered): stay as we are
            return {dpid: msgs} if msgs else {}
        role = ofp.OFPCR_ROLE_MASTER if owner.replica == self.replica else ofp.OFPCR_ROLE_SLAVE
        if (role, owner.generation) == (sw.requested, sw.generation):
            return {dpid: msgs} if msgs else {}
        msg = role_request(role, owner.generation)
        msg.set_xid(self.new_xid())
        sw.requested, sw.generation, sw.xid = role, owner.generation, msg.xid
        if role != ofp.OFPCR_ROLE_MASTER:
            self._demote(dpid, sw, f"{owner.replica} is master (generation {owner.generation})")
        return {dpid: [*msgs, msg]}

    def role_reply(
        self, dpid: int, role: int, generation: int, xid: int | None = None
    ) -> tuple[dict[int, list], bool]:
        """A ROLE_REPLY: (the writes held for it, True if this made us master). A reply to an
        earlier request than the last one sent (`xid` given and not the last request's) is
        stale and changes nothing: a late MASTER reply must not open the gate after we asked
        for SLAVE."""
        sw = self.switches.get(dpid)
        if sw is None or (xid is not None and sw.xid is not None and xid != sw.xid):
            return {}, False
        was, sw.confirmed = sw.confirmed, role
        if role != ofp.OFPCR_ROLE_MASTER:
            sw.queue.clear()
            return {}, False
        held, sw.queue = sw.queue, []
        promoted = was != ofp.OFPCR_ROLE_MASTER
        if promoted:
            LOG.info(
                "switch %016x: master (generation %d), reason: elected on etcd", dpid, generation
            )
        return ({dpid: held} if held else {}), promoted

    def error(self, dpid: int, err_type: int, code: int) -> bool:
        """A switch's error: True if it is about our role (then handled here: demoted)."""
        sw = self.switches.get(dpid)
        if sw is None:
            return False
        slave = err_type == ofp.OFPET_BAD_REQUEST and code == ofp.OFPBRC_IS_SLAVE
        refused = err_type == ofp.OFPET_ROLE_REQUEST_FAILED
        if not (slave or refused):
            return False
        why = (
            "the switch refused a write (OFPBRC_IS_SLAVE)"
            if slave
            else (f"the switch refused our role request (code {code})")
        )
        stale = refused and code == ofp.OFPRRFC_STALE and sw.requested == ofp.OFPCR_ROLE_MASTER
        if stale and sw.generation not in sw.stale_logged:
            sw.stale_logged.add(sw.generation)
            LOG.error(
                "switch %016x: refused generation id %d as stale (OFPRRFC_STALE): it accepted a "
                "larger one. Cut off from etcd, this replica has been fenced by a new master; "
                "if it reaches etcd and etcd still names it master, etcd's revisions went back "
                "(etcd restarted with a wiped data dir?) and no replica can master this switch "
                "until ovs-vswitchd restarts or the bridge is re-created (docs/ha.md)",
                dpid,
                sw.generation,
            )
        self._demote(dpid, sw, why)
        sw.requested, sw.generation = ofp.OFPCR_ROLE_SLAVE, -1  # ask again on the next view
        return True

    def _demote(self, dpid: int, sw: SwitchRole, why: str) -> None:
        if sw.confirmed == ofp.OFPCR_ROLE_MASTER:
            LOG.warning("switch %016x: no longer master, reason: %s", dpid, why)
            sw.confirmed = ofp.OFPCR_ROLE_SLAVE
        sw.queue.clear()

    def gate(self, outbox: Mapping[int, list]) -> dict[int, list]:
        """What may go to the wire now: everything to a switch we master; reads elsewhere;
        writes held while our MASTER request is outstanding, dropped otherwise."""
        out: dict[int, list] = {}
        for dpid, msgs in outbox.items():
            sw = self.switches.get(dpid)
            if sw is not None and sw.confirmed == ofp.OFPCR_ROLE_MASTER:
                out[dpid] = msgs
                continue
            passing = [m for m in msgs if isinstance(m, READS)]
            writes = len(msgs) - len(passing)
            asking = sw is not None and sw.requested == ofp.OFPCR_ROLE_MASTER
            if writes and asking and len(sw.queue) + writes <= QUEUE_LIMIT:
                sw.queue.extend(m for m in msgs if not isinstance(m, READS))
                writes = 0
            self.dropped += writes
            if passing:
                out[dpid] = passing
        return out

    def roles(self) -> dict[int, str]:
        """dpid -> the role the switch confirmed ("master", "slave", "equal")."""
        return {dpid: ROLE_NAMES[sw.confirmed] for dpid, sw in self.switches.items()}
