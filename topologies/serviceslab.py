"""A lab for weighted services: leaf-spine, clients on one side, named backends on the others.

Shared by the services integration tests and scripts/bench_services.py. Leaf-spine with 2 spines,
3 leaves and 3 hosts per leaf; clients h11, h12, h13 and h33 open connections to the VIP;
backends v1-a (h21), v2-a (h31), v3-a (h23), v0 (h32) and spare (h22, the backup) greet every
connection with their host's name, so a client can count who answered.
"""

from __future__ import annotations

import textwrap
import time
from contextlib import contextmanager

from topologies.harness import PROBE, Controller, Lab, free_port, metric
from topologies.leafspine import LeafSpineTopo
from topologies.wait import until

VIP = "10.0.100.10"
PORT = 80
BACKENDS = {"v1-a": "h21", "v2-a": "h31", "v3-a": "h23", "v0": "h32", "spare": "h22"}
IPS = {
    "h21": "10.0.0.4",
    "h22": "10.0.0.5",
    "h23": "10.0.0.6",
    "h31": "10.0.0.7",
    "h32": "10.0.0.8",
}
CLIENTS = ["h11", "h12", "h13", "h33"]


def service_config(weights: dict[str, int], method: str = "exact", backup: bool = True) -> str:
    """The lab's config: every backend an endpoint (no MACs: learned), one weighted service."""
    endpoints = "".join(f"  - {{name: {n}, ip: {IPS[h]}}}\n" for n, h in BACKENDS.items())
    backends = "".join(f"      - {{endpoint: {n}, weight: {w}}}\n" for n, w in weights.items())
    if backup:
        backends += "      - {endpoint: spare, backup: true}\n"
    service = textwrap.dedent(
        f"""\
        services:
          - name: user-service
            vip: {VIP}
            port: {PORT}
            method: {method}
            backends:
        """
    )
    # Method "exact" sends every new connection's first packet to the controller: the packet-in
    # meter (1,000/s per switch by default) must exceed the clients' connection rate, or their
    # SYNs are dropped and retried (at 4 clients x 8 in parallel, leaf 1 alone offers ~750/s).
    meter = "controller: {packet_in_rate: 5000, packet_in_burst: 1000}\n"
    return meter + "endpoints:\n" + endpoints + service + backends


class ServicesLab:
    """The services lab: a controller, a leaf-spine Mininet lab, and the config steps of a rollout.

    Parameters
    ----------
    ctl : Controller
        The running controller whose config file the steps rewrite.
    lab : Lab
        The running leaf-spine lab.
    metrics_port : int
        The controller's Prometheus port (/metrics).
    """

    def __init__(self, ctl: Controller, lab: Lab, metrics_port: int) -> None:
        self.ctl, self.lab, self.metrics_port = ctl, lab, metrics_port

    def apply(self, text: str, timeout: float = 10.0, want: int | None = None) -> None:
        """A new config, in force and with user-service's backends ready (their MACs known):
        `want` of them, by default every "{endpoint:" in the text. `timeout` is in seconds for
        each of the two waits; RuntimeError if either runs out."""
        if not self.ctl.rewrite_config(text, timeout):
            raise RuntimeError("the controller did not take the config:\n" + self.ctl.log()[-2000:])
        want = text.count("{endpoint:") if want is None else want

        def ready() -> bool:
            live = metric(self.metrics_port, "osken_services_live_backends", service="user-service")
            return live >= want

        if not until(ready, timeout):
            raise RuntimeError("backends never became ready")

    def spread(self, n: int, parallel: int = 8) -> dict[str, int]:
        """`n` new connections, shared by the clients, all at once: count per backend host."""
        return self.lab.spread_from(CLIENTS, VIP, PORT, n, parallel)

    def udp_answered(self, src: str, ip: str, port: int, n: int) -> int:
        """`n` datagrams from `src` to ip:port, each from a new socket (a new connection):
        how many were answered from ip:port."""
        out = self.lab.host(src).cmd(
            f"for i in $(seq {n}); do /usr/bin/python3 {PROBE} udp {ip} {port} && echo answered;"
            " done"
        )
        return out.count("answered")

    def backend_failover(self, host: str, limit: float = 5.0) -> float:
        """Take a backend's link down; seconds until new connections stop going to it (and
        all of them open). RuntimeError if that takes more than `limit` seconds."""
        self.lab.link(host, self.leaf_of(host), "down")
        start = time.time()
        while time.time() - start < limit:
            got = self.lab.spread("h11", VIP, PORT, 20, timeout=1.0)
            if host not in got and "fail" not in got:
                return time.time() - start
        raise RuntimeError(f"{host} still got connections after {limit} s")

    def restore(self, host: str) -> None:
        """Its link up again, and the fabric has seen it speak (RuntimeError if its ping to h11
        does not get through within 10 s)."""
        self.lab.link(host, self.leaf_of(host), "up")
        if not self.lab.wait_ping(host, "h11", timeout=10):
            raise RuntimeError(f"{host} did not come back")
        time.sleep(1.0)

    @staticmethod
    def leaf_of(host: str) -> str:
        """The leaf switch a host hangs off: "h21" -> "lf2" (LeafSpineTopo's names)."""
        return f"lf{host[1]}"

    def spine_cut_loss(self, seconds: int = 4) -> tuple[int, int, float]:
        """A 1 ms ping from leaf 1 to leaf 3 while the spine link it uses is cut: (pings sent,
        pings lost, milliseconds of loss). The link is put back after."""
        _, _, sent, lost, lost_ms = self.lab.cut_under_ping(
            "h11", "h33", lambda a, b: "lf1" in (a, b) and "sp" in a + b, seconds
        )
        return sent, lost, lost_ms


@contextmanager
def leafspine_under_services(folder, config: str, apps: tuple[str, ...] = ()):
    """The services app (metrics on) and `apps` with `config` as folder/lab.yaml, and a
    leaf-spine lab (2 spines, 3 leaves, 3 hosts each) connected to it: yields (controller, lab,
    metrics port); both stopped after. Raises RuntimeError if the lab does not connect within
    60 s."""
    cfg = folder / "lab.yaml"
    cfg.write_text(config)
    port = free_port()
    ctl = Controller(
        ["apps/services", *apps],
        config=str(cfg),
        log_path=str(folder / "ctl.log"),
        extra=["--prometheus-port", str(port)],
    ).start()
    lab = Lab(LeafSpineTopo(2, 3, 3), ctl.port)
    try:
        lab.start()
        if lab.wait_connected(timeout=60) is None:
            raise RuntimeError("the lab never connected")
        yield ctl, lab, port
    finally:
        lab.stop()
        ctl.stop()


@contextmanager
def services_lab(folder, weights: dict[str, int] | None = None):
    """Controller (services app, metrics on) and the lab, servers running; all stopped after.

    Raises RuntimeError if the lab does not come up.
    """
    config = service_config(weights or {"v1-a": 90, "v2-a": 10})
    with leafspine_under_services(folder, config) as (ctl, lab, port):
        for host in BACKENDS.values():
            lab.serve(host, "tcp:80", name=host)
        yield ServicesLab(ctl, lab, port)
