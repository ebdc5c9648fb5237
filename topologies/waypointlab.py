"""A lab for the L7 waypoint: the services lab's leaf-spine, HTTP backends, Envoy on leaf 3.

Shared by the waypoint integration tests and scripts/bench_l7.py. Leaf-spine with 2 spines, 3
leaves and 3 hosts per leaf (topologies/serviceslab.py's addresses). The seed's
traffic-routing.yml routes user-service (v1-a on h21, v1-b on h23, v2-a on h31) and its
istio-configuration.yml routes `service` (mobile on h32, web on h22); every backend answers
HTTP with its host's name. The controller runs the waypoint: one replica on leaf 3.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from apps.services.mesh import WAYPOINT_NAME
from topologies.harness import ROOT, Controller, Lab
from topologies.serviceslab import IPS, VIP, leafspine_under_services
from topologies.wait import until
from vnf.waypoint.runner import Runner, Spec

HTTP_PROBE = os.path.join(ROOT, "topologies", "httpprobe.py")
SEEDS = os.path.join(ROOT, "tests", "data", "seed-routing")
MOBILE_VIP = "10.0.100.11"
WAYPOINT = "10.0.0.250"
BRIDGE = "lf3"
IN_FORCE = "waypoint: config .* in force"  # the controller's log line once Envoy has a config
BACKENDS = {"h21": "v1-a", "h23": "v1-b", "h31": "v2-a", "h32": "mobile", "h22": "web"}
# The operator's edit of traffic-routing.yml: its default route goes 50/50.
FIFTY_FIFTY = {"weight: 90": "weight: 50", "weight: 10": "weight: 50"}
VERSIONS = {"v1": ("h21", "h23"), "v2": ("h31",)}  # user-service's subsets, by backend host
LABELS = {
    "h21": "{app: user-service, version: v1}",
    "h23": "{app: user-service, version: v1}",
    "h31": "{app: user-service, version: v2}",
    "h32": "{app: mobile-service, version: v2}",
    "h22": "{app: web-service, version: v1}",
}
# The seed's VirtualService for `service` names subsets of two hosts no seed file defines.
SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mobile-service}
spec: {host: mobile-service, subsets: [{name: v2, labels: {version: v2}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-service}
spec: {host: web-service, subsets: [{name: v1, labels: {version: v1}}]}
"""


def shares(got: dict[str, int]) -> dict[str, float]:
    """Percent of all answers in `got` (WaypointLab.get's counts) that each of user-service's
    versions gave: {"v1": 90.0, "v2": 10.0}."""
    total = sum(got.values()) or 1
    return {v: sum(got.get(h, 0) for h in hosts) * 100 / total for v, hosts in VERSIONS.items()}


@dataclass(frozen=True)
class Extra:
    """More for one lab: backends (host -> (endpoint name, IP, labels as YAML flow text)),
    service lines (`{name: ..., vip: ..., port: ...}`), and `policies:` and `routing:` files
    (copied into the lab's folder unmodified)."""

    backends: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    services: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    routing: tuple[str, ...] = ()


def lab_config(folder, runtime: str | None = None, extra: Extra = Extra()) -> str:
    """The lab's config text; the seed's routing files are copied into `folder` unmodified."""
    routing = []
    for name in ("traffic-routing.yml", "istio-configuration.yml"):
        shutil.copy(os.path.join(SEEDS, name), folder / name)
        routing.append(str(folder / name))
    (folder / "subsets.yaml").write_text(SUBSETS)
    routing.append(str(folder / "subsets.yaml"))
    for path in extra.routing:
        shutil.copy(path, folder / os.path.basename(path))
        routing.append(str(folder / os.path.basename(path)))
    backends = {h: (n, IPS[h], LABELS[h]) for h, n in BACKENDS.items()} | extra.backends
    endpoints = "".join(
        f"  - {{name: {n}, ip: {ip}, labels: {labels}}}\n" for n, ip, labels in backends.values()
    )
    more = "".join(f"  - {line}\n" for line in extra.services)
    policies = []
    for path in extra.policies:
        shutil.copy(path, folder / os.path.basename(path))
        policies.append(str(folder / os.path.basename(path)))
    if policies:
        more += f"policies: {json.dumps(policies)}\n"
    options = f", runtime: {runtime}" if runtime else ""
    return (
        "endpoints:\n"
        + endpoints
        + textwrap.dedent(
            f"""\
            services:
              - {{name: user-service, vip: {VIP}, port: 80}}
              - {{name: service, vip: {MOBILE_VIP}, port: 80}}
            """
        )
        + more
        + textwrap.dedent(
            f"""\
            routing: {json.dumps(routing)}
            mesh:
              waypoint: {{bridge: {BRIDGE}, addresses: [{WAYPOINT}/8]{options}}}
            """
        )
    )


class WaypointLab:
    """The running controller and lab, and HTTP from the lab's hosts."""

    def __init__(
        self, ctl: Controller, lab: Lab, folder, metrics_port: int, runtime: str | None = None
    ) -> None:
        self.ctl, self.lab, self.folder, self.metrics_port = ctl, lab, folder, metrics_port
        self.runner = Runner(Spec(WAYPOINT_NAME, BRIDGE, (f"{WAYPOINT}/8",), runtime=runtime))

    def get(
        self,
        client: str,
        url: str,
        n: int,
        headers: dict[str, str] | None = None,
        parallel: int = 8,
        method: str = "GET",
    ) -> dict[str, int]:
        """`n` HTTP requests from `client`, each on a new connection: count per answer, keyed
        by the answering backend's host name ("500 ..." / "fail" otherwise)."""
        args = ["/usr/bin/python3", HTTP_PROBE, "get", url, str(n), "--parallel", str(parallel)]
        args += ["--method", method]
        for k, v in (headers or {}).items():
            args += ["--header", f"{k}: {v}"]
        out = self.lab.host(client).cmd(" ".join(f"'{a}'" for a in args))
        got = json.loads(out.strip().splitlines()[-1])
        return {k.removeprefix("200 "): v for k, v in got.items()}

    def wait_serving(self, url: str, timeout: float = 60.0) -> bool:
        """True once a request from h11 to `url` is answered by a backend."""
        return bool(until(lambda: "fail" not in self.get("h11", url, 1, parallel=1), timeout, 0.5))

    def replica(self) -> dict:
        """The waypoint replica as its runtime sees it (vnf/runtime.py): {"running": bool} and
        Docker's "started" time or a namespace host's "pid"; the same "started"/"pid" before
        and after a reload means Envoy was not restarted."""
        state = self.runner.runtime.state(self.runner.spec.replica(0))
        return {k: state[k] for k in ("running", "started", "pid") if k in state}

    @contextmanager
    def routing_edited(self, edits: dict[str, str], timeout: float = 15.0) -> Iterator[None]:
        """traffic-routing.yml edited as an operator would (each key's text replaced by its
        value) and in force in Envoy for the block; the seed's text back, in force, after.
        RuntimeError if the controller does not log a new config in force within `timeout` s."""
        path = self.folder / "traffic-routing.yml"
        seed = text = path.read_text()
        for old, new in edits.items():
            text = text.replace(old, new)
        self._write_in_force(path, text, timeout)
        try:
            yield
        finally:
            self._write_in_force(path, seed, timeout)

    def _write_in_force(self, path, text: str, timeout: float) -> None:
        before = len(re.findall(IN_FORCE, self.ctl.log()))
        path.write_text(text)
        if not self.ctl.wait_log(IN_FORCE, count=before + 1, timeout=timeout):
            raise RuntimeError(f"{path.name}: the edit never reached the waypoint")


@contextmanager
def waypoint_lab(folder, runtime: str | None = None, extra: Extra = Extra()):
    """Controller (services app, metrics on), the lab with HTTP backends (and `extra`'s), the
    waypoint serving; all stopped after. Raises RuntimeError if the lab or the waypoint does
    not come up."""
    config = lab_config(folder, runtime, extra)
    with leafspine_under_services(folder, config) as (ctl, lab, port):
        for host in BACKENDS | extra.backends:
            lab.run_server(host, ["/usr/bin/python3", HTTP_PROBE, "serve", "80", "--name", host])
        env = WaypointLab(ctl, lab, folder, port, runtime)
        if not env.wait_serving(f"http://{VIP}/"):
            raise RuntimeError("the waypoint never served:\n" + ctl.log()[-3000:])
        yield env
