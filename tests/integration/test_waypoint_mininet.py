"""The L7 waypoint in Mininet: real HTTP through a real Envoy that the controller runs and feeds.

The lab is topologies/waypointlab.py: the services lab's leaf-spine, the seed's routing files
unmodified, HTTP backends answering with their host's name, one waypoint replica on leaf 3.
"""

import re
import subprocess

import pytest

from tests.integration.conftest import require_lab
from topologies.waypointlab import MOBILE_VIP, VIP, waypoint_lab

REQUESTS = 2000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    with waypoint_lab(tmp_path_factory.mktemp("waypoint")) as c:
        yield c


def _started(name: str = "osken-waypoint-waypoint-0") -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", name], capture_output=True, text=True
    )
    return out.stdout.strip() or "namespace"


def test_canary_true_always_reaches_v2(env):
    """The seed's first rule: before the waypoint, 18 of 20 such requests went to v1."""
    assert env.get("h11", f"http://{VIP}/", 200, {"canary": "true"}) == {"h31": 200}


def test_other_requests_split_90_10_per_request_within_2_points(env):
    got = env.get("h12", f"http://{VIP}/", REQUESTS)
    assert got.get("fail", 0) == 0 and sum(got.values()) == REQUESTS, got
    v1 = (got.get("h21", 0) + got.get("h23", 0)) / REQUESTS * 100
    v2 = got.get("h31", 0) / REQUESTS * 100
    print(f"90/10 over {REQUESTS} requests: v1 {v1:.2f}%, v2 {v2:.2f}% ({got})")
    assert abs(v1 - 90) <= 2 and abs(v2 - 10) <= 2, got


def test_a_mobile_user_agent_takes_the_mobile_route(env):
    url = f"http://{MOBILE_VIP}/"
    assert env.get("h13", url, 50, {"User-Agent": "Foo Mobile Bar"}) == {"h32": 50}
    assert env.get("h13", url, 50, {"User-Agent": "curl/7.88"}) == {"h22": 50}


def test_a_reload_reaches_envoy_without_a_restart(env):
    started = _started()
    routing = env.folder / "traffic-routing.yml"
    seed = routing.read_text()
    before = len(re.findall("waypoint: config .* in force", env.ctl.log()))
    routing.write_text(seed.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))
    try:
        assert env.ctl.wait_log("waypoint: config .* in force", count=before + 1, timeout=15)
        got = env.get("h11", f"http://{VIP}/", 200)
        assert got == {"h21": 50, "h23": 50, "h31": 100}, got  # exact: round-robin by weight
        assert _started() == started  # the same Envoy, never restarted
    finally:
        routing.write_text(seed)
        env.ctl.wait_log("waypoint: config .* in force", count=before + 2, timeout=15)
