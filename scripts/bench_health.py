#!/usr/bin/env python3
"""Time to detect a dead backend: the services' health checks on a real Open vSwitch.

In Mininet (topologies/serviceslab.py, leaf-spine, a 50/50 service over v1-a (h21) and v2-a
(h31), health checks at their defaults: 1 s interval and timeout, out after 3, back after 2),
`--runs` times each:
- v1-a's server is killed (its link up; its kernel refuses with RSTs): seconds until it is out
  of health (osken_services_backend_healthy 0), and how many of a client's connections, opened
  one after another meanwhile, failed;
- its server started again: seconds until it is back in health;
- v1-a drops every SYN silently (iptables in its namespace): seconds until it is out.
Prints each run and min / median / max.

    sudo .venv/bin/python scripts/bench_health.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies.harness import metric  # noqa: E402
from topologies.servers import Servers  # noqa: E402
from topologies.serviceslab import (  # noqa: E402
    BACKENDS,
    PORT,
    VIP,
    leafspine_under_services,
    service_config,
)
from topologies.wait import until  # noqa: E402

LIMIT = 10.0  # seconds a run may take before it counts as a failure of the bench


def healthy(port: int) -> float:
    return metric(port, "osken_services_backend_healthy", service="user-service", backend="v1-a")


def timed(port: int, want: int) -> float:
    """Seconds until v1-a's health is `want`; RuntimeError past LIMIT."""
    start = time.monotonic()
    if not until(lambda: healthy(port) == want, LIMIT, interval=0.02):
        raise RuntimeError(f"v1-a's health never became {want}")
    return time.monotonic() - start


def failed_meanwhile(lab, stop: threading.Event, out: list[int]) -> threading.Thread:
    """A client opening connections one after another until `stop`: failures go to `out`."""

    def run() -> None:
        while not stop.is_set():
            out.append(lab.spread("h11", VIP, PORT, 5, parallel=1, timeout=1.0).get("fail", 0))

    t = threading.Thread(target=run)
    t.start()
    return t


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} min {min(values):5.2f}  median {statistics.median(values):5.2f}  "
        f"max {max(values):5.2f} s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-health-"))
    config = service_config({"v1-a": 50, "v2-a": 50})
    results: dict[str, list[float]] = {"killed: out": [], "restarted: back": [], "silent: out": []}
    with leafspine_under_services(folder, config) as (_, lab, port):
        servers = Servers(lab)
        try:
            for host in BACKENDS.values():
                servers.start(host, f"tcp:{PORT}")
            timed(port, 1)
            for run in range(runs):
                failures: list[int] = []
                stop = threading.Event()
                client = failed_meanwhile(lab, stop, failures)
                servers.kill("h21", f"tcp:{PORT}")
                out = timed(port, 0)
                stop.set()
                client.join()
                servers.start("h21", f"tcp:{PORT}")
                back = timed(port, 1)
                drop = f"INPUT -p tcp --dport {PORT} -j DROP"
                lab.host("h21").cmd(f"iptables -I {drop}")
                try:
                    silent = timed(port, 0)
                finally:
                    lab.host("h21").cmd(f"iptables -D {drop}")
                timed(port, 1)
                for key, value in zip(results, (out, back, silent), strict=True):
                    results[key].append(value)
                print(
                    f"run {run + 1}: killed -> out {out:.2f} s ({sum(failures)} connections "
                    f"failed meanwhile), restarted -> back {back:.2f} s, silent -> out "
                    f"{silent:.2f} s",
                    flush=True,
                )
        finally:
            servers.stop()
    for key, values in results.items():
        print(summary(key, values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
