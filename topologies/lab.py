"""What every lab topology shares: hosts that survive the userspace datapath, and switch params.

Open vSwitch's userspace datapath does not complete TCP checksums a veth left to offload, so every
lab host turns TX checksum offload off (otherwise ping works and every TCP connection hangs).
Switches get an explicit dpid (names like `c1` and `a1` would otherwise collide) and ask for the
userspace datapath and OpenFlow 1.3 themselves, so `mn --custom` works with any `--switch ovs`.
"""

from __future__ import annotations

from mininet.node import Host

SWITCH_PARAMS = {"datapath": "user", "protocols": "OpenFlow13"}


class LabHost(Host):
    """A Mininet host with TX checksum offload off on every interface."""

    def config(self, **params):
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
        return result


def switch_opts(dpid: int) -> dict:
    return {"dpid": f"{dpid:016x}", **SWITCH_PARAMS}


def host_opts() -> dict:
    return {"cls": LabHost}
