"""Constructors of canonical actions and instructions: plain tuples an app puts in a `Flow`.

Each kind maps to one OpenFlow 1.3.5 action or instruction (sections 5.9, 5.12) or one Open
vSwitch extension action (ovs-actions(7)); `controller.flows.encode` turns them into wire bytes and
`controller.flows.decode` reads them back in the same form.

>>> apply(output(2), group_action(7))
('apply', (('output', 2, 0), ('group', 7)))
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.flows.model import Action, Instruction, norm_scalar

CONTROLLER = ofp.OFPP_CONTROLLER
NO_BUFFER = ofp.OFPCML_NO_BUFFER
NAT_SRC, NAT_DST = 1 << 0, 1 << 1  # Open vSwitch's NX_NAT_F_SRC / NX_NAT_F_DST


def output(port: int, max_len: int = NO_BUFFER) -> Action:
    """Output to `port` (OFPAT_OUTPUT).

    `max_len` (bytes of the packet sent to the controller) only matters for the controller port,
    so it is kept only there.
    """
    return ("output", port, max_len if port == CONTROLLER else 0)


def to_controller(max_len: int = NO_BUFFER) -> Action:
    """Send to the controller as a packet-in with up to `max_len` bytes (whole packet: default)."""
    return output(CONTROLLER, max_len)


def controller_copy(meter_id: int, max_len: int = NO_BUFFER) -> Action:
    """A copy of the packet to the controller through meter `meter_id`, up to `max_len` bytes;
    the packet itself goes on (Open vSwitch's controller(max_len=...,meter_id=...) action,
    ovs-actions(7), Open vSwitch 2.14+; `controller.flows.nxcontroller`)."""
    return ("controller", max_len, meter_id)


def group_action(group_id: int) -> Action:
    """Process the packet through group `group_id` (OFPAT_GROUP)."""
    return ("group", group_id)


def set_field(name: str, value: Any) -> Action:
    """Set OXM field `name` to `value` (OFPAT_SET_FIELD).

    Raises
    ------
    ValueError
        A value that does not parse for the field (see `controller.flows.model.norm_scalar`).
    """
    return ("set_field", name, norm_scalar(name, value))


def conntrack(
    zone: int,
    table: int | None = None,
    commit: bool = False,
    force: bool = False,
    nested: Iterable[Action] = (),
) -> Action:
    """Send through connection tracking: Open vSwitch's ct() action (ovs-actions(7)).

    Parameters
    ----------
    zone : int
        The 16-bit conntrack zone.
    table : int, optional
        Recirculate to this table with ct_state set; None: do not recirculate.
    commit : bool
        Commit the connection to the conntrack table.
    force : bool
        With commit: an entry that holds this packet as a reply is replaced by one in the
        packet's own direction (ct(commit,force)).
    nested : iterable of Action
        `nat(...)` and, with commit, ``set_field("ct_mark", ...)``, done by conntrack itself.

    Returns
    -------
    Action
    """
    flags = int(commit) | (2 if force else 0)
    return ("ct", flags, zone, ofp.OFPTT_ALL if table is None else table, tuple(nested))


def nat(dst: str | None = None, port: int | None = None, src: str | None = None) -> Action:
    """Network address translation inside ct(): Open vSwitch's nat action (ovs-actions(7)).

    Rewrite the destination to `dst`[:`port`] or the source to `src`[:`port`] (a new connection
    that is being committed), or, with no arguments, apply the translation a tracked connection
    already has (both directions). Open vSwitch refuses src and dst in one nat; two translations
    take two ct() in two zones.

    Parameters
    ----------
    dst, src : str, optional
        An IPv4 address; at most one of them.
    port : int, optional
        The L4 port to translate to.

    Returns
    -------
    Action

    Raises
    ------
    ValueError
        Both `src` and `dst`, or an address that is not IPv4.
    """
    if dst is not None and src is not None:
        raise ValueError("nat takes src or dst, not both")
    if dst is None and src is None:
        return ("nat", 0, None, None)
    flag = NAT_DST if dst is not None else NAT_SRC
    return ("nat", flag, str(ipaddress.IPv4Address(dst or src)), port)


def apply(*actions: Action) -> Instruction:
    """Apply `actions` now, in order (OFPIT_APPLY_ACTIONS)."""
    return ("apply", tuple(actions))


def goto(table: int) -> Instruction:
    """Continue in `table` (OFPIT_GOTO_TABLE); it must be greater than the current table."""
    return ("goto", table)


def write_metadata(value: int, mask: int) -> Instruction:
    """Write the 64-bit metadata bits in `mask` with `value` (OFPIT_WRITE_METADATA)."""
    return ("meta", value, mask)


def meter(meter_id: int) -> Instruction:
    """Send the packet through meter `meter_id` (OFPIT_METER)."""
    return ("meter", meter_id)
