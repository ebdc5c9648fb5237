"""topologies/httpload.py, bench_l7's client, against topologies/httpprobe.py's server on
loopback: every request counted, latencies ranked, and no 40 ms delayed-ACK stall on a
kept-alive connection (the server's two writes went out with Nagle on before)."""

import os
import subprocess
import sys

import pytest

from topologies.harness import free_port
from topologies.httpload import percentile, run

PROBE = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "httpprobe.py")


@pytest.fixture
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, PROBE, "serve", str(port), "--name", "x"], stdout=subprocess.PIPE
    )
    try:
        proc.stdout.readline()
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.kill()
        proc.wait()


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([3.0], 0.99) == 3.0 and percentile([], 0.5) is None


@pytest.mark.parametrize("keepalive", [False, True])
def test_every_request_is_counted_and_timed(server, keepalive):
    got = run([server, server + "a"], 200, 4, keepalive)
    assert (got["requests"], got["ok"], got["statuses"]) == (200, 200, {"200": 200})
    assert 0 < got["p50_ms"] <= got["p99_ms"] and got["rps"] > 0


def test_a_kept_alive_connection_is_not_held_by_delayed_acks(server):
    got = run([server], 50, 1, True)
    assert got["p50_ms"] < 20, got  # 40+ ms each with Nagle on at the server


def test_a_closed_port_counts_as_fail():
    port = free_port()
    got = run([f"http://127.0.0.1:{port}/"], 3, 1, False)
    assert got["statuses"] == {"fail": 3} and got["p50_ms"] is None
