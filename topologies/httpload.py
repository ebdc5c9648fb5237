#!/usr/bin/env python3
"""A bounded HTTP load in a lab host (stdlib only: Mininet hosts use Debian's python3).

httpload.py URL [URL ...] --requests 2000 [--parallel 8] [--keepalive]

`--requests` GETs in all, the URLs taken in turn, `--parallel` at a time: each on a new
connection, or with `--keepalive` on one HTTP/1.1 connection per worker and host. Prints one
JSON line: {"requests", "ok" (200s), "statuses" (count per status, "fail": no answer),
"seconds" (wall time), "rps" (ok per second), "p50_ms", "p99_ms" (nearest-rank latency of the
requests that came back, from sending to the last byte of the body)}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse
from collections import Counter

TIMEOUT = 5.0  # seconds a request may take before it counts as "fail"


def percentile(sorted_ms: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of ascending values; None for none."""
    if not sorted_ms:
        return None
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def run(urls: list[str], requests: int, parallel: int, keepalive: bool) -> dict:
    """The load the module docstring describes, as a dict of its JSON line."""
    targets = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        targets.append((parts.hostname, parts.port or 80, parts.path or "/"))
    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        conns: dict[tuple, http.client.HTTPConnection] = {}
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            host, port, path = targets[i % len(targets)]
            conn = conns.pop((host, port), None) or http.client.HTTPConnection(
                host, port, timeout=TIMEOUT
            )
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                key, ms = str(resp.status), (time.perf_counter() - started) * 1000
            except (OSError, http.client.HTTPException):
                key, ms = "fail", None
                conn.close()
            else:
                if keepalive:
                    conns[(host, port)] = conn
                else:
                    conn.close()
            with lock:
                statuses[key] += 1
                if ms is not None:
                    latencies.append(ms)
        for conn in conns.values():
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "ok": statuses["200"],
        "statuses": dict(statuses),
        "seconds": round(seconds, 3),
        "rps": round(statuses["200"] / seconds, 1) if seconds else None,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def main() -> int:
    """Command line: run one load, print its JSON line. Exit 2 on bad arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("urls", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--keepalive", action="store_true")
    a = ap.parse_args()
    if not 1 <= a.requests <= 1_000_000 or not 1 <= a.parallel <= 256:
        ap.error("--requests 1..1000000, --parallel 1..256")
    print(json.dumps(run(a.urls, a.requests, a.parallel, a.keepalive)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
