"""A tree of switches: depth levels, fanout children each, hosts at the leaves. No loops.

mn --custom topologies/tree.py --topo tree,2,3 ...   # depth 2, fanout 3: 4 switches, 9 hosts
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


class TreeTopo(Topo):
    """A tree of switches `depth` levels deep, `fanout` children each; hosts are the leaves."""

    def build(self, depth: int = 2, fanout: int = 2) -> None:
        """Switches s1.. depth-first from the root, hosts h1.. at the bottom level."""
        self._switches = 0
        self._hosts = 0
        self._add(depth, fanout)

    def _add(self, depth: int, fanout: int) -> str:
        if depth == 0:
            self._hosts += 1
            return self.addHost(f"h{self._hosts}", **host_opts())
        self._switches += 1
        node = self.addSwitch(f"s{self._switches}", **switch_opts(self._switches))
        for _ in range(fanout):
            self.addLink(node, self._add(depth - 1, fanout))
        return node


topos = {"tree": TreeTopo}
__all__ = ["TreeTopo", "controllers", "topos"]  # controllers: for mn --custom
