#!/usr/bin/env python3
"""The waypoint VNF's entry point: runs Envoy with its bootstrap and stays its parent.

Runs inside its container (or a network namespace) with the standard library alone. Envoy reads
its listeners and clusters from the discovery files its bootstrap names and re-reads them when
the controller swaps a new generation in (vnf/waypoint/files.py): no restart, ever. This process
only starts Envoy, passes SIGTERM/SIGINT on, and exits with Envoy's status.

    WAYPOINT_BOOTSTRAP=/run/osken-waypoint/waypoint/bootstrap-0.json agent.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

ENVOY = os.environ.get("ENVOY_BIN", "/usr/local/bin/envoy")


def command(env: dict[str, str]) -> list[str]:
    """Envoy's command line from the agent's environment.

    >>> command({"WAYPOINT_BOOTSTRAP": "/b.json", "WAYPOINT_CONCURRENCY": "2"})[1:5]
    ['-c', '/b.json', '--concurrency', '2']
    """
    return [
        env.get("ENVOY_BIN", ENVOY),
        "-c",
        env["WAYPOINT_BOOTSTRAP"],
        "--concurrency",
        env.get("WAYPOINT_CONCURRENCY", "1"),
        "--disable-hot-restart",  # one Envoy per replica; new config comes by file, not restart
        "--log-level",
        env.get("WAYPOINT_LOG_LEVEL", "warning"),
    ]


def main() -> int:
    proc = subprocess.Popen(command(dict(os.environ)))

    def forward(signum, _frame) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
