"""What each OpenFlow message a controller sends does, read from its bytes alone.

The peer benchmark counts a controller's messages on the wire for a piece of work (a rule
edit, a restart) and waits for that work to be over. Both controllers also send periodic
traffic that changes nothing (echoes, counter polls, LLDP probes), so every message falls in
one kind, and only the first two count as work:

- "change": alters what the switch does with packets: FLOW_MOD, GROUP_MOD, PORT_MOD,
  TABLE_MOD, METER_MOD, SET_CONFIG, and bundles (OpenFlow 1.4's BUNDLE_CONTROL and
  BUNDLE_ADD_MESSAGE, OpenFlow 1.3's ONF extension EXT-230 as EXPERIMENTER messages).
- "barrier": BARRIER_REQUEST, the fence a controller puts after its changes.
- "packet_out": PACKET_OUT, a packet the controller injects (LLDP probes, flooding); no
  switch state.
- "other": the session, liveness and reads: HELLO, ERROR, ECHO_REQUEST/REPLY,
  FEATURES_REQUEST, GET_CONFIG_REQUEST, MULTIPART_REQUEST (every stats poll), ROLE_REQUEST,
  GET_ASYNC_REQUEST, SET_ASYNC (which events this connection is sent), QUEUE_GET_CONFIG,
  other experimenters, and any type not named above.

`read_messages(buf)` splits a byte stream into whole messages (OpenFlow 1.3.5 section 7.1:
every message starts with version, type, length, xid) and returns them as `Message`s and the
incomplete rest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = 8  # version (1), type (1), length (2), xid (4)
PACKET_OUT, FLOW_MOD, BARRIER_REQUEST, EXPERIMENTER = 13, 14, 20, 4
BUNDLE_CONTROL, BUNDLE_ADD = 33, 34  # OpenFlow 1.4
ONF = 0x4F4E4600  # ONF's experimenter id
ONF_BUNDLE_CONTROL, ONF_BUNDLE_ADD = 2300, 2301  # OpenFlow 1.3's bundle extension (EXT-230)
# SET_CONFIG 9, FLOW_MOD 14, GROUP_MOD 15, PORT_MOD 16, TABLE_MOD 17, METER_MOD 29
CHANGE_TYPES = frozenset({9, FLOW_MOD, 15, 16, 17, 29, BUNDLE_CONTROL, BUNDLE_ADD})
KINDS = ("change", "barrier", "packet_out", "other")
WORK_KINDS = frozenset({"change", "barrier"})
FLOW_MOD_COMMANDS = {0: "add", 1: "modify", 2: "modify_strict", 3: "delete", 4: "delete_strict"}


@dataclass(frozen=True)
class Message:
    """One message: its OpenFlow type number, its kind (one of KINDS) and, for a flow-mod,
    alone or inside a bundle add, its command name (FLOW_MOD_COMMANDS, "other" if unknown)."""

    mtype: int
    kind: str
    flow_mod: str | None = None


def classify(msg: bytes) -> Message:
    """The Message for the bytes of one whole message (at least the 8-byte header)."""
    mtype = msg[1]
    if mtype == EXPERIMENTER:
        return _experimenter(msg)
    if mtype == FLOW_MOD:
        return Message(mtype, "change", _command(msg, 0))
    if mtype == BUNDLE_ADD:  # bundle_id (4), pad (2), flags (2), then the message
        return Message(mtype, "change", _command(msg, 16))
    if mtype in CHANGE_TYPES:
        return Message(mtype, "change")
    if mtype == BARRIER_REQUEST:
        return Message(mtype, "barrier")
    if mtype == PACKET_OUT:
        return Message(mtype, "packet_out")
    return Message(mtype, "other")


def _experimenter(msg: bytes) -> Message:
    """An EXPERIMENTER message: experimenter (4), exp_type (4), then for a bundle add,
    bundle_id (4), pad (2), flags (2) and the message."""
    if len(msg) < HEADER + 8:
        return Message(EXPERIMENTER, "other")
    experimenter, exp_type = struct.unpack_from("!II", msg, HEADER)
    if experimenter != ONF or exp_type not in (ONF_BUNDLE_CONTROL, ONF_BUNDLE_ADD):
        return Message(EXPERIMENTER, "other")
    command = _command(msg, 24) if exp_type == ONF_BUNDLE_ADD else None
    return Message(EXPERIMENTER, "change", command)


def _command(msg: bytes, at: int) -> str | None:
    """The command of the flow-mod starting at `at` (cookie 8, cookie_mask 8, table_id 1, then
    command: byte 25), None if what starts there is not a whole flow-mod header."""
    if len(msg) < at + 26 or msg[at + 1] != FLOW_MOD:
        return None
    return FLOW_MOD_COMMANDS.get(msg[at + 25], "other")


def read_messages(buf: bytes) -> tuple[list[Message], bytes]:
    """The whole messages at the start of `buf`, classified, and the incomplete rest.

    Raises:
        ValueError: a header gives a length under 8; the stream cannot be framed past it.
    """
    out: list[Message] = []
    offset = 0
    while len(buf) - offset >= HEADER:
        (length,) = struct.unpack_from("!H", buf, offset + 2)
        if length < HEADER:
            raise ValueError(f"an OpenFlow header at byte {offset} gives length {length} (< 8)")
        if len(buf) - offset < length:
            break
        out.append(classify(buf[offset : offset + length]))
        offset += length
    return out, buf[offset:]
