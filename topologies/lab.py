"""What every lab topology shares: hosts that survive the userspace datapath, and switch params.

Open vSwitch's userspace datapath does not complete TCP checksums a veth left to offload, so every
lab host turns TX checksum offload off (otherwise ping works and every TCP connection hangs).
Switches get an explicit dpid (names like `c1` and `a1` would otherwise collide) and ask for the
userspace datapath and OpenFlow 1.3 themselves, so `mn --custom` works with any `--switch ovs`.

Every topology file exports `controllers`, which replaces Mininet's `remote` controller with
`LabController`, so `mn --custom topologies/<file>.py --controller remote,...` and every lab this
project starts probe the controller's port without Mininet's telnet check (which fails at random,
see LabController).
"""

from __future__ import annotations

import socket

from mininet.log import warn
from mininet.node import Host, RemoteController

SWITCH_PARAMS = {"datapath": "user", "protocols": "OpenFlow13"}


class LabHost(Host):
    """A Mininet host with TX checksum offload off on every interface."""

    def config(self, **params):
        """Mininet's host config, then `ethtool -K IFACE tx off` on every interface but lo."""
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
        return result


def switch_opts(dpid: int) -> dict:
    """Switch params: the explicit `dpid` (16 hex digits), userspace datapath, OpenFlow 1.3."""
    return {"dpid": f"{dpid:016x}", **SWITCH_PARAMS}


def host_opts() -> dict:
    """Host params: the LabHost class."""
    return {"cls": LabHost}


class LabController(RemoteController):
    """Mininet's RemoteController, probing the port with a plain TCP connect.

    Mininet 2.3's probe runs `telnet` and decodes what comes back as UTF-8, which includes the
    controller's OpenFlow HELLO: whenever the HELLO's random xid is not valid UTF-8 the probe
    raises UnicodeDecodeError and the lab fails to start. Connecting is all the probe needs.
    """

    def isListening(self, ip: str, port: int) -> bool:  # noqa: N802 (Mininet's name)
        """True if a TCP connection to `ip`:`port` opens within 2 s (Mininet's probe hook)."""
        try:
            socket.create_connection((ip, port), timeout=2.0).close()
        except OSError:
            warn(f"Unable to contact the remote controller at {ip}:{port}\n")
            return False
        return True


controllers = {"remote": LabController}  # for `mn --custom`: replaces Mininet's `remote`
