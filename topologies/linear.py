"""A chain of switches: s1 - s2 - ... - sN, each with its hosts. No loops.

    mn --custom topologies/linear.py --topo linear,4 \
       --switch ovs,datapath=user,protocols=OpenFlow13 --controller remote,ip=127.0.0.1,port=6653
"""

import inspect
import os
import sys

from mininet.topo import Topo

try:
    from topologies.lab import controllers, host_opts, switch_opts
except ImportError:  # `mn --custom` execs this file bare: put its checkout on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(inspect.getsourcefile(lambda: 0))))
    from topologies.lab import controllers, host_opts, switch_opts


class LinearTopo(Topo):
    """Switches s1..sN in a line, hosts on each."""

    def build(self, n: int = 3, hosts_per_switch: int = 1) -> None:
        """`n` switches in a line; host hI on switch sI, or hIxJ with several per switch."""
        switches = [self.addSwitch(f"s{i}", **switch_opts(i)) for i in range(1, n + 1)]
        for i, sw in enumerate(switches, start=1):
            for j in range(1, hosts_per_switch + 1):
                suffix = "" if hosts_per_switch == 1 else f"x{j}"
                self.addLink(self.addHost(f"h{i}{suffix}", **host_opts()), sw)
        for left, right in zip(switches, switches[1:], strict=False):
            self.addLink(left, right)


topos = {"linear": LinearTopo}
__all__ = ["LinearTopo", "controllers", "topos"]  # controllers: for mn --custom
