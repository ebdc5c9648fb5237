"""The k-ary fat-tree (Al-Fares et al.): k pods, (k/2)^2 core switches, k^3/4 hosts.

k=4 gives 20 switches (4 core, 8 aggregation, 8 edge) and 16 hosts, with many loops and
equal-cost paths between pods.

    mn --custom topologies/fattree.py --topo fattree,4 ...
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


class FatTreeTopo(Topo):
    """The k-ary fat-tree: k pods, (k/2)^2 core switches, k^3/4 hosts."""

    def build(self, k: int = 4) -> None:
        """Build the fat-tree for an even `k`: core switches cN, aggregation aPxI and edge ePxI
        in pod P, and k/2 hosts hN on every edge switch.

        Raises
        ------
        ValueError
            `k` is odd or below 2.
        """
        if k < 2 or k % 2:
            raise ValueError(f"fat-tree k must be an even number >= 2, not {k}")
        half = k // 2
        cores = [
            self.addSwitch(f"c{i}", **switch_opts(0x100 + i)) for i in range(1, half * half + 1)
        ]
        host = 0
        for pod in range(1, k + 1):
            aggs = [
                self.addSwitch(f"a{pod}x{i}", **switch_opts(0x200 + pod * 16 + i))
                for i in range(1, half + 1)
            ]
            edges = [
                self.addSwitch(f"e{pod}x{i}", **switch_opts(0x300 + pod * 16 + i))
                for i in range(1, half + 1)
            ]
            for i, agg in enumerate(aggs):
                for core in cores[i * half : (i + 1) * half]:
                    self.addLink(agg, core)
                for edge in edges:
                    self.addLink(agg, edge)
            for edge in edges:
                for _ in range(half):
                    host += 1
                    self.addLink(self.addHost(f"h{host}", **host_opts()), edge)


topos = {"fattree": FatTreeTopo}
__all__ = ["FatTreeTopo", "controllers", "topos"]  # controllers: for mn --custom
