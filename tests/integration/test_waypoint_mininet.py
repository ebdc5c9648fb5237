"""The L7 waypoint in Mininet: real HTTP through a real Envoy that the controller runs and feeds.

The lab is topologies/waypointlab.py: the services lab's leaf-spine, the seed's routing files
unmodified, HTTP backends answering with their host's name, one waypoint replica on leaf 3.
"""

import pytest

from tests.integration.conftest import require_lab
from topologies.waypointlab import FIFTY_FIFTY, MOBILE_VIP, VIP, shares, waypoint_lab

REQUESTS = 2000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    with waypoint_lab(tmp_path_factory.mktemp("waypoint")) as c:
        yield c


def test_canary_true_always_reaches_v2(env):
    """The seed's first rule: before the waypoint, 18 of 20 such requests went to v1."""
    assert env.get("h11", f"http://{VIP}/", 200, {"canary": "true"}) == {"h31": 200}


def test_other_requests_split_90_10_per_request_within_2_points(env):
    got = env.get("h12", f"http://{VIP}/", REQUESTS)
    assert got.get("fail", 0) == 0 and sum(got.values()) == REQUESTS, got
    v1, v2 = shares(got).values()
    print(f"90/10 over {REQUESTS} requests: v1 {v1:.2f}%, v2 {v2:.2f}% ({got})")
    assert abs(v1 - 90) <= 2 and abs(v2 - 10) <= 2, got


def test_a_mobile_user_agent_takes_the_mobile_route(env):
    url = f"http://{MOBILE_VIP}/"
    assert env.get("h13", url, 50, {"User-Agent": "Foo Mobile Bar"}) == {"h32": 50}
    assert env.get("h13", url, 50, {"User-Agent": "curl/7.88"}) == {"h22": 50}


def test_a_reload_reaches_envoy_without_a_restart(env):
    before = env.replica()
    assert before["running"], before
    with env.routing_edited(FIFTY_FIFTY):
        got = env.get("h11", f"http://{VIP}/", 200)
        assert got == {"h21": 50, "h23": 50, "h31": 100}, got  # exact: round-robin by weight
        assert env.replica() == before  # the same Envoy, never restarted
