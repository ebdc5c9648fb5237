#!/usr/bin/env python3
"""Benchmark (a): packet-ins handled per second by the L2 app vs a minimal os-ken responder.

A fake OpenFlow 1.3 switch (this script) connects to each controller in turn, answers the
handshake and table reads, then sends packet-ins from new source MACs, keeping WINDOW of them
outstanding. A packet-in counts as handled when a flow-mod naming its MAC comes back. Both
controllers run under the same osken-manager on the same machine in the same run; the ratio is
what matters (goal: the L2 app at 80% or more of the minimal app's rate).

    .venv/bin/python scripts/bench_packet_in.py [--count 5000] [--window 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.l2_learning import COOKIE as L2_COOKIE  # noqa: E402
from topologies.harness import Controller  # noqa: E402

OFP_VERSION = 4
HELLO, ECHO_REQUEST, ECHO_REPLY, FEATURES_REQUEST, FEATURES_REPLY = 0, 2, 3, 5, 6
PACKET_IN, FLOW_MOD, MULTIPART_REQUEST, MULTIPART_REPLY = 10, 14, 18, 19
BARRIER_REQUEST, BARRIER_REPLY = 20, 21
MP_DESC, MP_PORT_DESC = 0, 13
N_PORTS = 4
OXM_ETH_DST, OXM_ETH_SRC = 3, 4


def header(msg_type: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", OFP_VERSION, msg_type, length, xid)


def port_desc_body() -> bytes:
    body = b""
    for port in range(1, N_PORTS + 1):
        hw = bytes([2, 0, 0, 0, 0, port])
        name = f"bench-eth{port}".encode().ljust(16, b"\0")
        body += struct.pack("!I4x6s2x16sIIIIIIII", port, hw, name, 0, 0, 0, 0, 0, 0, 10000, 10000)
    return body


def desc_body() -> bytes:
    """OFPMP_DESC: manufacturer, hardware, software, serial number, datapath description."""
    return struct.pack("!256s256s256s32s256s", b"bench", b"fake", b"bench_packet_in", b"1", b"")


MULTIPART_BODIES = {MP_DESC: desc_body, MP_PORT_DESC: port_desc_body}


def packet_in(n: int, cookie: int = L2_COOKIE, vid: int | None = None) -> tuple[bytes, bytes]:
    """A packet-in from edge port 1..N_PORTS carrying a frame from a new source MAC; with `vid`
    the frame carries that 802.1Q tag (as in a pipeline that pushes the port's VLAN first)."""
    mac = struct.pack("!HI", 0x0200, n)
    tag = b"" if vid is None else struct.pack("!HH", 0x8100, vid)
    frame = b"\x00\x00\x00\x00\x00\x01" + mac + tag + b"\x08\x00" + b"\0" * 46
    in_port = 1 + n % N_PORTS
    match = struct.pack("!HHII4x", 1, 12, 0x80000004, in_port)
    reason = 1  # OFPR_ACTION: what Open vSwitch reports for an output:CONTROLLER action
    body = (
        struct.pack("!IHBBQ", 0xFFFFFFFF, len(frame), reason, 0, cookie) + match + b"\0\0" + frame
    )
    return header(PACKET_IN, 8 + len(body), n) + body, mac


def macs_in_flow_mod(msg: bytes) -> list[bytes]:
    """eth_src / eth_dst values in a FLOW_MOD's OXM match."""
    length = struct.unpack_from("!H", msg, 50)[0]
    offset, end, found = 52, 48 + length, []
    while offset + 4 <= end:
        oxm = struct.unpack_from("!I", msg, offset)[0]
        field, size = (oxm >> 9) & 0x7F, oxm & 0xFF
        if field in (OXM_ETH_DST, OXM_ETH_SRC):
            found.append(msg[offset + 4 : offset + 10])
        offset += 4 + size
    return found


class FakeSwitch:
    """`cookie` and `vid`: what its packet-ins carry (see `packet_in`)."""

    def __init__(
        self, port: int, dpid: int, cookie: int = L2_COOKIE, vid: int | None = None
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dpid = dpid
        self.cookie = cookie
        self.vid = vid
        self.buf = b""
        self.answered: set[bytes] = set()
        self.sock.sendall(header(HELLO, 8, 1))

    def pump(self, timeout: float) -> None:
        """Read what the controller sent and answer what a switch must answer."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("controller closed the connection")
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            _, mtype, length, xid = struct.unpack_from("!BBHI", self.buf)
            if len(self.buf) < length:
                break
            msg, self.buf = self.buf[:length], self.buf[length:]
            if mtype == FLOW_MOD:
                self.answered.update(macs_in_flow_mod(msg))
            elif mtype == FEATURES_REQUEST:
                out.append(
                    header(FEATURES_REPLY, 32, xid)
                    + struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0x4F, 0)
                )
            elif mtype == ECHO_REQUEST:
                out.append(header(ECHO_REPLY, length, xid) + msg[8:])
            elif mtype == BARRIER_REQUEST:
                out.append(header(BARRIER_REPLY, 8, xid))
            elif mtype == MULTIPART_REQUEST:
                mp_type = struct.unpack_from("!H", msg, 8)[0]
                body = MULTIPART_BODIES.get(mp_type, bytes)()
                out.append(
                    header(MULTIPART_REPLY, 16 + len(body), xid)
                    + struct.pack("!HH4x", mp_type, 0)
                    + body
                )
        if out:
            self.sock.sendall(b"".join(out))

    def run(self, count: int, window: int, start: int) -> float:
        """Send `count` packet-ins, at most `window` unanswered; seconds until all answered."""
        sent, waiting = 0, {}
        t0 = time.perf_counter()
        deadline = time.time() + 120
        while (sent < count or waiting) and time.time() < deadline:
            batch = []
            while sent < count and len(waiting) < window:
                msg, mac = packet_in(start + sent, self.cookie, self.vid)
                waiting[mac] = True
                batch.append(msg)
                sent += 1
            if batch:
                self.sock.sendall(b"".join(batch))
            self.pump(0.05)
            for mac in list(waiting):
                if mac in self.answered:
                    del waiting[mac]
        if waiting:
            raise RuntimeError(f"{len(waiting)} packet-ins never answered")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()


def measure(apps: list[str], count: int, window: int, warmup: float) -> float:
    with Controller(apps) as ctl:
        sw = FakeSwitch(ctl.port, dpid=0xBE)
        end = time.time() + warmup  # handshake, table reads, port probation (the L2 app)
        while time.time() < end:
            sw.pump(0.05)
        sw.run(200, window, start=1_000_000)  # warm caches
        seconds = sw.run(count, window, start=1)
        sw.close()
    return count / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="alternate the two, report medians")
    args = p.parse_args()
    minimal, l2 = [], []
    for _ in range(args.rounds):  # alternating spreads the machine's noise over both
        minimal.append(
            measure(["scripts/bench_apps/minimal_responder.py"], args.count, args.window, 1.0)
        )
        l2.append(measure(["apps/l2_learning.py"], args.count, args.window, 3.0))
    ratios = sorted(a / b for a, b in zip(l2, minimal, strict=True))
    print(
        f"packet-ins handled per second ({args.count} new MACs, window {args.window}, "
        f"{args.rounds} alternating rounds, medians)"
    )
    print(f"  minimal os-ken responder : {statistics.median(minimal):9.0f}/s")
    print(f"  L2 learning app          : {statistics.median(l2):9.0f}/s")
    print(
        f"  ratio L2/minimal         : {statistics.median(ratios):9.2f}  "
        f"(per round {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.80)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
