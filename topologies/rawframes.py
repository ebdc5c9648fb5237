#!/usr/bin/env python3
"""Raw Ethernet frames in and out of a lab host's interface (stdlib only, like probe.py).

rawframes.py capture h21-eth0 0x88cc [--timeout 10]   # hex of the first such frame received
rawframes.py send h11-eth0 HEX [HEX...] [--every 0.5] [--count 20]
                                                      # each frame, every --every s, --count times

Bounded in time and count: `capture` gives up after --timeout (exit 1), `send` stops after --count
rounds. Used by the labs to play a host that captures and forges frames (docs/security.md).
"""

import argparse
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # the pkttype of frames this host sent itself


def capture(iface: str, ethertype: int, timeout: float) -> int:
    """Print the first frame of `ethertype` that arrives on `iface`, in hex: exit status 0, or
    1 if none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
        s.bind((iface, 0))
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            data, addr = s.recvfrom(65535)
            if addr[2] != PACKET_OUTGOING and int.from_bytes(data[12:14], "big") == ethertype:
                print(data.hex(), flush=True)
                return 0
    return 1


def send(iface: str, frames: list[bytes], every: float, count: int) -> int:
    """Send each of `frames` (raw Ethernet, bytes) out of `iface`, `count` rounds `every`
    seconds apart. Returns 0; OSError if the interface does not exist.
    """
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for i in range(count):
            for frame in frames:
                s.send(frame)
            if i + 1 < count:
                time.sleep(every)
    return 0


def main() -> int:
    """Run `capture` or `send` as the command line says; its exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["capture", "send"])
    p.add_argument("iface")
    p.add_argument("args", nargs="+")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("--count", type=int, default=20)
    a = p.parse_args()
    if a.mode == "capture":
        return capture(a.iface, int(a.args[0], 0), a.timeout)
    return send(a.iface, [bytes.fromhex(h) for h in a.args], a.every, a.count)


if __name__ == "__main__":
    sys.exit(main())
