"""Leaf-spine: every leaf links to every spine, so there are loops (and equal-cost paths).

mn --custom topologies/leafspine.py --topo leafspine,2,3,2 ...  # spines, leaves, hosts/leaf
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


class LeafSpineTopo(Topo):
    """A two-tier Clos: every leaf linked to every spine, hosts on leaves."""

    def build(self, spines: int = 2, leaves: int = 3, hosts_per_leaf: int = 2) -> None:
        """Spines sp1.., leaves lf1.., and hosts hLJ (host J on leaf L)."""
        spine_nodes = [
            self.addSwitch(f"sp{i}", **switch_opts(0x100 + i)) for i in range(1, spines + 1)
        ]
        for i in range(1, leaves + 1):
            leaf = self.addSwitch(f"lf{i}", **switch_opts(0x200 + i))
            for spine in spine_nodes:
                self.addLink(leaf, spine)
            for j in range(1, hosts_per_leaf + 1):
                self.addLink(self.addHost(f"h{i}{j}", **host_opts()), leaf)


topos = {"leafspine": LeafSpineTopo}
__all__ = ["LeafSpineTopo", "controllers", "topos"]  # controllers: for mn --custom
