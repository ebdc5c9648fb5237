"""Bench helper: once the switch is ready, want BENCH_FLOWS forwarding flows at once.

It logs the moment it hands them to the core, so bench_flow_install.py can time the core's whole
path: diff, message building, serialisation, the OpenFlow channel and the switch itself.
"""

import logging
import os
import time

from controller.app import SuiteApp
from controller.flows import apply, flow, output
from controller.pipeline import REGISTRY

LOG = logging.getLogger("osken_suite.bench")


def bench_macs(n: int) -> list[str]:
    return [f"02:00:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}" for i in range(n)]


class BulkFlows(SuiteApp):
    name = "bulk_flows"

    def on_switch_ready(self, dpid: int, now: float) -> None:
        forwarding = self.core.pipeline.table("forwarding")
        macs = bench_macs(int(os.environ.get("BENCH_FLOWS", "10000")))
        # They stand in for L2 learning's host entries: its cookie, which the forwarding
        # stage's contract accepts (controller/pipeline.py).
        cookie = REGISTRY.cookie("l2_learning")
        flows = [
            flow(forwarding, 100, {"eth_dst": m}, apply(output(1)), cookie=cookie) for m in macs
        ]
        LOG.info("bulk: handing %d flows to the core at %.6f", len(flows), time.time())
        self.desired.put(("bench", dpid), {dpid: flows})
