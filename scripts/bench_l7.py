#!/usr/bin/env python3
"""What the L7 waypoint costs: HTTP through Envoy against the same backends reached directly.

One run, in Mininet (topologies/waypointlab.py: the seed's routing, one Envoy replica on leaf
3), from h11 on leaf 1, with a bounded stdlib client in the host (topologies/httpload.py):
- through the waypoint: GET http://VIP/ (user-service; the seed's default route splits the
  requests 90/10 over v1-a, v1-b on leaf 2 and v2-a on leaf 3);
- directly: GET http://<backend>/ over the same three backends in the same 45/45/10 mix.
Each way, with a new connection per request and with keep-alive: latency of one request at
a time (p50, p99) and requests per second with `--parallel` at a time. Every measurement
alternates direct and waypoint in the same run, after a warm-up; printed as waypoint/direct
ratios and added milliseconds. The client is Python: its own cost bounds the rates, and is the
same for both ways.

    sudo .venv/bin/python scripts/bench_l7.py [--requests 2000] [--parallel 8]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies.harness import ROOT  # noqa: E402
from topologies.serviceslab import IPS  # noqa: E402
from topologies.waypointlab import VIP, waypoint_lab  # noqa: E402

HTTP_LOAD = os.path.join(ROOT, "topologies", "httpload.py")
CLIENT = "h11"
# The seed's default route: v1 90 (v1-a on h21, v1-b on h23, equal), v2 10 (h31).
DIRECT = (
    [f"http://{IPS['h21']}/"] * 9 + [f"http://{IPS['h23']}/"] * 9 + [f"http://{IPS['h31']}/"] * 2
)
THROUGH = [f"http://{VIP}/"]


def load(lab, urls: list[str], requests: int, parallel: int, keepalive: bool) -> dict:
    """One bounded load from the client host: httpload.py's JSON. RuntimeError if any
    request did not get a 200."""
    args = ["/usr/bin/python3", HTTP_LOAD, *urls, "--requests", str(requests)]
    args += ["--parallel", str(parallel)] + (["--keepalive"] if keepalive else [])
    out = lab.host(CLIENT).cmd(" ".join(args))
    got = json.loads(out.strip().splitlines()[-1])
    if got["ok"] != requests:
        raise RuntimeError(f"{urls[0]}...: not every request got a 200: {got['statuses']}")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="per measurement")
    ap.add_argument("--parallel", type=int, default=8, help="requests at a time, for req/s")
    a = ap.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-l7-"))
    with waypoint_lab(folder) as env:
        print(f"{CLIENT} -> user-service's 3 backends, {a.requests} GETs per measurement")
        print(f"  {'':<34}{'direct':>10}{'waypoint':>10}{'ratio':>8}{'added':>10}")
        for keepalive in (False, True):
            way = "keep-alive" if keepalive else "new connection per request"
            for urls in (DIRECT, THROUGH):  # warm-up: ARP, Envoy's upstream pool, caches
                load(env.lab, urls, 200, a.parallel, keepalive)
            one = [load(env.lab, u, a.requests, 1, keepalive) for u in (DIRECT, THROUGH)]
            many = [load(env.lab, u, a.requests, a.parallel, keepalive) for u in (DIRECT, THROUGH)]
            print(f"{way}:")
            for key, label in (("p50_ms", "latency p50 ms (1 at a time)"), ("p99_ms", "p99 ms")):
                d, w = one[0][key], one[1][key]
                print(f"  {label:<34}{d:>10.3f}{w:>10.3f}{w / d:>7.2f}x{w - d:>+10.3f}")
            d, w = many[0]["rps"], many[1]["rps"]
            label = f"requests/s ({a.parallel} at a time)"
            print(f"  {label:<34}{d:>10.0f}{w:>10.0f}{w / d:>7.2f}x{w - d:>+10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
