"""Weighted services in Mininet: real TCP connections counted by which backend greeted them.

Leaf-spine, 2 spines x 3 leaves x 3 hosts. Clients h11, h12, h13 and h33 open connections to
the VIP; backends v1-a (h21), v2-a (h31), v3-a (h23), v0 (h32, weight 0) and the backup (h22)
each greet with their own name.
"""

import json
import os
import re
import subprocess
import textwrap
import threading
import time

import pytest

from tests.integration.conftest import require_lab
from topologies.harness import Controller, Lab, free_port, metric
from topologies.leafspine import LeafSpineTopo

VIP = "10.0.100.10"
BACKENDS = {"v1-a": "h21", "v2-a": "h31", "v3-a": "h23", "v0": "h32", "spare": "h22"}
IPS = {
    "h21": "10.0.0.4",
    "h22": "10.0.0.5",
    "h23": "10.0.0.6",
    "h31": "10.0.0.7",
    "h32": "10.0.0.8",
}
CLIENTS = ["h11", "h12", "h13", "h33"]
CONNECTIONS = 2000


def config(weights: dict[str, int], backup: bool = True) -> str:
    endpoints = "".join(
        f"  - {{name: {name}, ip: {IPS[host]}}}\n" for name, host in BACKENDS.items()
    )
    backends = "".join(f"      - {{endpoint: {n}, weight: {w}}}\n" for n, w in weights.items())
    if backup:
        backends += "      - {endpoint: spare, backup: true}\n"
    return (
        "endpoints:\n"
        + endpoints
        + textwrap.dedent(
            f"""\
            services:
              - name: user-service
                vip: {VIP}
                port: 80
                backends:
            """
        )
        + backends
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    tmp = tmp_path_factory.mktemp("canary")
    cfg = tmp / "lab.yaml"
    cfg.write_text(config({"v1-a": 90, "v2-a": 10}))
    ctl = Controller(
        ["apps/canary.py"],
        config=str(cfg),
        log_path=str(tmp / "ctl.log"),
        extra=["--prometheus-port", str(free_port())],
    ).start()
    lab = Lab(LeafSpineTopo(2, 3, 3), ctl.port).start()
    try:
        assert lab.wait_connected(timeout=60) is not None
        for host in BACKENDS.values():
            lab.serve(host, "tcp:80", name=host)
        yield ctl, lab, cfg
    finally:
        lab.stop()
        ctl.stop()


def apply(env, text: str) -> None:
    """A new config, in force and with every backend ready (its MAC known) before we go on."""
    ctl, _, cfg = env
    before = len(re.findall("config reloaded", ctl.log()))
    cfg.write_text(text)
    assert ctl.wait_log("config reloaded", count=before + 1, timeout=10), ctl.log()[-2000:]
    port = int(ctl.extra[ctl.extra.index("--prometheus-port") + 1])
    want = text.count("{endpoint:")
    deadline = time.time() + 5
    while metric(port, "osken_canary_live_backends", service="user-service") < want:
        assert time.time() < deadline, "backends never became ready"
        time.sleep(0.05)


def spread(lab, n: int = CONNECTIONS) -> dict[str, int]:
    """`n` new connections, shared by the clients, all at once: count per backend host."""
    totals: dict[str, int] = {}
    results = {}

    def run(client):
        results[client] = lab.spread(client, VIP, 80, n // len(CLIENTS), parallel=8)

    threads = [threading.Thread(target=run, args=(c,)) for c in CLIENTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        for k, v in got.items():
            totals[k] = totals.get(k, 0) + v
    return totals


@pytest.mark.parametrize(
    "weights",
    [
        {"v1-a": 90, "v2-a": 10, "v0": 0},
        {"v1-a": 70, "v2-a": 30, "v0": 0},
        {"v1-a": 99, "v2-a": 1, "v0": 0},
        {"v1-a": 33, "v2-a": 33, "v3-a": 34, "v0": 0},
    ],
    ids=["90-10", "70-30", "99-1", "33-33-34"],
)
def test_shares_are_within_2_points_of_the_weights_and_weight_0_gets_nothing(env, weights):
    _, lab, _ = env
    apply(env, config(weights))
    got = spread(lab)
    assert got.get("fail", 0) == 0, got
    total = sum(weights.values())
    for name, w in weights.items():
        share = got.get(BACKENDS[name], 0) / CONNECTIONS * 100
        assert abs(share - w * 100 / total) <= 2, (name, got)
    assert BACKENDS["v0"] not in got and BACKENDS["spare"] not in got


def test_weight_shifts_move_new_connections_and_never_established_ones(env):
    _, lab, _ = env
    apply(env, config({"v1-a": 90, "v2-a": 10}))
    held = lab.hold("h12", VIP, 80, 20, seconds=8)
    for weights in ({"v1-a": 50, "v2-a": 50}, {"v1-a": 0, "v2-a": 100}):
        apply(env, config(weights))
        got = lab.spread("h11", VIP, 80, 200)
        assert got == {
            h: 2 * w for h, w in zip(("h21", "h31"), weights.values(), strict=True) if w
        }, got
    out, _ = held.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["moved"] == 0 and result["broken"] == 0, result
    assert result["started"] == {"h21": 18, "h31": 2}, result


def test_a_dead_backend_stops_getting_connections_within_a_second_and_backups_wait(env):
    _, lab, _ = env
    apply(env, config({"v1-a": 50, "v2-a": 50}))
    try:
        lab.link("h21", "lf2", "down")
        start = time.time()
        while True:
            got = lab.spread("h11", VIP, 80, 20, timeout=1.0)
            if "h21" not in got and "fail" not in got:
                break
            assert time.time() - start < 5, got
        took = time.time() - start
        assert took < 1.0, took
        assert lab.spread("h11", VIP, 80, 100) == {"h31": 100}
        lab.link("h31", "lf3", "down")  # every primary down: the backup serves
        time.sleep(0.3)
        assert lab.spread("h11", VIP, 80, 50) == {"h22": 50}
    finally:
        lab.link("h21", "lf2", "up")
        lab.link("h31", "lf3", "up")
    assert lab.wait_ping("h21", "h11", timeout=10) and lab.wait_ping("h31", "h11", timeout=10)
    time.sleep(1.0)
    assert lab.spread("h11", VIP, 80, 100) == {"h21": 50, "h31": 50}


def _tx(switch: str) -> dict[int, int]:
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", switch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(r"port\s+(\d+):.*?tx pkts=(\d+)", out, re.S)
    }


def test_a_cut_spine_link_loses_under_50_ms_of_a_1_ms_ping(env):
    _, lab, _ = env
    before = _tx("lf1")
    lab.ping("h11", "h33", count=50, interval=0.01)
    after = _tx("lf1")
    busy = max((1, 2), key=lambda p: after.get(p, 0) - before.get(p, 0))
    spine = f"sp{busy}"
    ping = lab.host("h11").popen(
        ["ping", "-i", "0.001", "-w", "4", "-q", "10.0.0.9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    try:
        lab.link("lf1", spine, "down")
        out, _ = ping.communicate(timeout=30)
    finally:
        lab.link("lf1", spine, "up")
    m = re.search(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms", out, re.S)
    sent, received, elapsed = map(int, m.groups())
    lost_ms = (sent - received) * elapsed / sent
    assert sent > 1000, out  # it really was about one ping a millisecond
    assert lost_ms < 50, out
    if os.environ.get("CANARY_REPORT"):
        print(f"spine link cut: {sent - received} of {sent} pings lost, {lost_ms:.1f} ms")
