"""Run labs from Python: one import for the integration tests, the demo and the benchmarks.

The pieces live in modules with one job each; this module re-exports them:

- `topologies.controller_process`: the controller as a child process (`Controller`,
  `free_port`, `listening`, `wait_listening`);
- `topologies.mininet_lab`: the Mininet network and traffic checks in it (`Lab`, `quiet`);
- `topologies.bridges`: OVS bridges a lab makes and removes (`fresh_bridge`, `snapshot`,
  `remove_leftovers`);
- `topologies.scrape`: reading results (`metric`, `ofctl`, `tx_packets`, `dump_flows`,
  `ping_counts`);
- `topologies.paths`: `ROOT` of the repository and the `PROBE` script.

    with Controller(["apps/l2_learning.py"]) as ctl, Lab(LeafSpineTopo(), ctl.port) as lab:
        assert lab.wait_connected(timeout=30) is not None
"""

from topologies.bridges import fresh_bridge, remove_leftovers, snapshot
from topologies.controller_process import Controller, free_port, listening, wait_listening
from topologies.mininet_lab import Lab, quiet
from topologies.paths import PROBE, ROOT
from topologies.scrape import dump_flows, metric, ofctl, ping_counts, tx_packets

__all__ = [
    "PROBE",
    "ROOT",
    "Controller",
    "Lab",
    "dump_flows",
    "free_port",
    "fresh_bridge",
    "listening",
    "metric",
    "ofctl",
    "ping_counts",
    "quiet",
    "remove_leftovers",
    "snapshot",
    "tx_packets",
    "wait_listening",
]
