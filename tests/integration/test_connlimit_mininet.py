"""connectionPool.tcp.maxConnections on real Open vSwitch (userspace datapath): a counting
conntrack zone per service, capped with ovs-appctl dpctl/ct-set-limits, serves exactly the cap
and refuses the excess; once the held connections close and their entries expire, new ones are
served again. The lab is topologies/serviceslab.py."""

import json
import re
import subprocess
import time

import pytest

from apps.services.connlimit import ZONES
from tests.integration.conftest import require_lab
from topologies.serviceslab import PORT, VIP, service_config, services_lab
from topologies.wait import until

CAP = 3
RULE = f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: user-service}}
spec:
  host: user-service
  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: {CAP}}}}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: user-service}}
spec:
  hosts: [user-service]
  tcp:
    - route:
        - destination: {{host: user-service}}
"""


def limits() -> str:
    return subprocess.run(
        ["ovs-appctl", "dpctl/ct-get-limits"], capture_output=True, text=True, check=False
    ).stdout


def counted() -> int:
    """The service's counting zone's entries now (0 while no limit is set)."""
    m = re.search(rf"zone={ZONES.first},limit=\d+,count=(\d+)", limits())
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    folder = tmp_path_factory.mktemp("connlimit")
    with services_lab(folder) as c:
        (folder / "rule.yaml").write_text(RULE)
        c.rule = folder / "rule.yaml"
        yield c
    assert f"zone={ZONES.first}," not in limits()  # lifted when the controller stopped


@pytest.mark.parametrize("method", ["exact", "switch"])
def test_exactly_the_cap_is_served_the_excess_refused_and_served_after_they_end(env, method):
    lab = env.lab
    config = service_config({"v1-a": 50, "v2-a": 50}, method=method, backup=False).replace(
        f"    method: {method}\n", f"    method: {method}\n    conntrack_cap: true\n"
    )
    env.apply(config + f"routing: [{env.rule}]\n", want=2)
    assert f"zone={ZONES.first},limit={CAP}" in limits()
    # An earlier case's entries (TIME_WAIT) count until conntrack's sweeper removes them.
    assert until(lambda: counted() == 0, 90, interval=0.5), limits()
    held = lab.hold("h11", VIP, PORT, CAP, seconds=5)
    assert f"zone={ZONES.first},limit={CAP},count={CAP}" in limits()
    assert lab.spread("h12", VIP, PORT, 2, timeout=2.0) == {"fail": 2}  # the excess
    out, _ = held.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["broken"] == 0 and sum(result["started"].values()) == CAP, result
    closed = time.time()
    while time.time() - closed < 90:  # their TIME_WAIT entries keep counting until they expire
        got = lab.spread("h12", VIP, PORT, 1, timeout=1.0)
        if "fail" not in got:
            break
    took = time.time() - closed
    print(f"connlimit[{method}]: a new connection served {took:.1f} s after the close")
    assert "fail" not in got, f"nothing served for {took:.0f} s after the close"
