"""DestinationRule trafficPolicy, EnvoyFilter and route actions at the waypoint, in Mininet
through a real Envoy, from the seed's files unmodified: the user-service rule (maxConnections
10, http1MaxPendingRequests 10, and its legacy circuitBreaker: 3 consecutive errors eject for
30 s, swept every 30 s), and rate-limiting.yml (100 tokens, 10 more per 60 s) for
`app: api-gateway`, l7-policy.yml's `api-l7-policy` for a user-api service on h13:8080 (h11 is
its `frontend`, h12 its `admin-panel`); and tests/data/waypoint/actions.yml (fault abort and
delay, a timeout) for an `actions` service on h22.

The lab is topologies/waypointlab.py with an api-gateway backend on h33; its backends
(topologies/httpprobe.py) record how many requests they have in flight at once and can be told
to answer 500.
"""

import os
import time
from collections import Counter

import pytest

from tests.integration.conftest import require_lab
from topologies.harness import ROOT
from topologies.scrape import metric
from topologies.wait import until
from topologies.waypointlab import HTTP_PROBE, VIP, Extra, waypoint_lab

V1 = ("h21", "h23", "h31")  # the 90/10 rule's backends: v1-a, v1-b, v2-a
CONCURRENT = 60
EJECTION = 30.0  # seconds: the seed's baseEjectionTime
INTERVAL = 30.0  # seconds: the seed's interval (Envoy lets ejected hosts back on its sweeps)
GATEWAY_VIP = "10.0.100.12"
ACTIONS_VIP = "10.0.100.13"
USER_API_VIP = "10.0.100.14"
SEEDS = os.path.join(ROOT, "tests", "data")
EXTRA = Extra(
    backends={
        "h33": ("api-gateway", "10.0.0.9", "{app: api-gateway}"),
        "h11": ("front", "10.0.0.1", "{app: frontend}"),
        "h12": ("admin", "10.0.0.2", "{app: admin-panel}"),
        "h13": ("user-api-1", "10.0.0.3", "{app: user-api}"),
    },
    services=(
        f"{{name: api-gateway, vip: {GATEWAY_VIP}, port: 80, "
        "backends: [{endpoint: api-gateway}]}",
        f"{{name: actions, vip: {ACTIONS_VIP}, port: 80, "
        "backends: [{endpoint: web}, {endpoint: mobile}]}",
        f"{{name: user-api, vip: {USER_API_VIP}, port: 8080, "
        "backends: [{endpoint: user-api-1}]}",
    ),
    policies=(
        os.path.join(SEEDS, "seed-mesh", "rate-limiting.yml"),
        os.path.join(SEEDS, "seed-policies", "l7-policy.yml"),
    ),
    routing=(os.path.join(SEEDS, "waypoint", "actions.yml"),),
)
TOKENS = 100  # the seed's max_tokens


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    with waypoint_lab(tmp_path_factory.mktemp("waypoint-policy"), extra=EXTRA) as c:
        yield c


def _peak(env, host: str) -> int:
    """Most requests `host` had in flight at once since last asked."""
    [(peak, _)] = env.get(host, "http://127.0.0.1/_peak", 1, parallel=1).items()
    return int(peak)


def _statuses(got: dict[str, int]) -> Counter:
    """Answers by status ("fail": none); WaypointLab.get keys a 200 by its backend alone."""
    out: Counter = Counter()
    for key, n in got.items():
        out["fail" if key == "fail" else int(key[:3]) if key[:3].isdigit() else 200] += n
    return out


def test_60_concurrent_slow_requests_no_backend_sees_more_than_10_the_rest_get_503(env):
    for h in V1:
        _peak(env, h)  # start counting afresh
    got = env.get("h12", f"http://{VIP}/slow?s=1.5", CONCURRENT, parallel=CONCURRENT)
    peaks = {h: _peak(env, h) for h in V1}
    statuses = _statuses(got)
    print(f"{CONCURRENT} concurrent slow requests: {dict(statuses)}; peak in flight {peaks}")
    assert max(peaks.values()) <= 10, peaks
    assert sum(peaks.values()) >= 5, peaks  # the limit was what held them, not a lack of load
    # 10 in flight and 10 pending are served, the overflow is refused at once
    assert statuses.get("fail", 0) == 0 and sum(statuses.values()) == CONCURRENT, got
    assert statuses[200] >= 10 and statuses[503] >= 30, statuses


def test_a_backend_answering_500_three_times_in_a_row_is_ejected_for_30s(env):
    env.get("h21", "http://127.0.0.1/_status?code=500", 1, parallel=1)
    try:
        got = env.get("h11", f"http://{VIP}/", 30, parallel=1)
        ejected_at = time.monotonic()
    finally:
        env.get("h21", "http://127.0.0.1/_status?code=200", 1, parallel=1)
    print(f"30 requests while v1-a answers 500: {got}")
    assert got.get("500 h21") == 3 and got.get("h21", 0) == 0, got
    assert got.get("h23", 0) + got.get("h31", 0) == 27, got
    back_after = None
    deadline = ejected_at + EJECTION + INTERVAL + 10
    while time.monotonic() < deadline:
        if env.get("h11", f"http://{VIP}/", 4, parallel=1).get("h21"):
            back_after = time.monotonic() - ejected_at
            break
        time.sleep(0.5)
    print(f"v1-a ejected after 3 answers of 500, back after {back_after} s")
    assert back_after is not None, "v1-a never came back"
    assert EJECTION - 1 <= back_after <= EJECTION + INTERVAL + 5, back_after


def test_the_seeds_rate_limit_answers_429_to_request_101_within_the_minute(env):
    url = f"http://{GATEWAY_VIP}/"
    first = env.get("h11", url, TOKENS, parallel=8)
    more = env.get("h11", url, 11, parallel=1)
    print(f"rate limit: first {TOKENS} requests {first}; 11 more at once {more}")
    assert first == {"h33": TOKENS}, first
    # at most one refill (10 tokens a minute) can fall between the two batches
    assert _statuses(more)[429] >= 1, more
    assert env.get("h11", f"http://{VIP}/", 20).get("fail", 0) == 0  # other services unlimited


def test_route_actions_fault_abort_delay_and_timeout(env):
    url = f"http://{ACTIONS_VIP}"
    assert env.get("h12", f"{url}/", 6, parallel=1) == {"h22": 3, "h32": 3}
    aborted = env.get("h12", f"{url}/abort", 5, parallel=1)
    assert _statuses(aborted) == {418: 5}, aborted  # answered by Envoy, no backend asked
    started = time.monotonic()
    delayed = env.get("h12", f"{url}/delay", 3, parallel=1)
    took = time.monotonic() - started
    assert sum(delayed.values()) == 3 and took >= 3.0, (delayed, took)
    started = time.monotonic()
    timed_out = env.get("h12", f"{url}/slow?s=3", 2, parallel=1)
    took = time.monotonic() - started
    print(f"actions: abort {aborted}, 3 delayed in {took:.2f} s, timeout {timed_out}")
    assert _statuses(timed_out) == {504: 2} and took < 5.0, (timed_out, took)


def _count(env, host: str) -> int:
    """Requests `host`'s server answered since last asked."""
    [(count, _)] = env.get(host, "http://127.0.0.1/_count", 1, parallel=1).items()
    return int(count)


def test_route_actions_retries_and_mirror(env):
    url = f"http://{ACTIONS_VIP}"
    env.get("h32", "http://127.0.0.1/_status?code=500", 1, parallel=1)
    try:
        plain = env.get("h12", f"{url}/", 10, parallel=1)
        retried = env.get("h12", f"{url}/retry", 10, parallel=1)
    finally:
        env.get("h32", "http://127.0.0.1/_status?code=200", 1, parallel=1)
    _count(env, "h31")  # v2-a, the mirror's target: count from here
    mirrored = env.get("h12", f"{url}/mirror", 10, parallel=1)
    time.sleep(1.0)  # copies are sent beside each request, their answers dropped
    copies = _count(env, "h31")
    print(f"actions: mobile answering 500: plain {plain}, retried {retried}; mirror {copies}")
    assert plain.get("500 h32", 0) == 5, plain  # round robin: every other one
    assert retried == {"h22": 10}, retried  # each 500 retried on the next backend
    assert sum(mirrored.values()) == 10 and copies == 10, (mirrored, copies)


def test_the_seeds_cilium_l7_policy_at_the_user_api_vip(env):
    """api-l7-policy: GET /users/<digits> and POST /users (JSON) from frontend, DELETE from
    admin-panel; anything else through the VIP gets 403 from the waypoint."""
    env.lab.run_server("h13", ["/usr/bin/python3", HTTP_PROBE, "serve", "8080", "--name", "h13"])
    url = f"http://{USER_API_VIP}:8080/users"
    json_type = {"Content-Type": "application/json"}
    got = {
        "front GET /users/42": env.get("h11", f"{url}/42", 3, parallel=1),
        "front GET /users/abc": env.get("h11", f"{url}/abc", 2, parallel=1),
        "front POST json": env.get("h11", url, 2, json_type, 1, "POST"),
        "front POST plain": env.get("h11", url, 2, parallel=1, method="POST"),
        "front DELETE": env.get("h11", f"{url}/42", 2, parallel=1, method="DELETE"),
        "admin DELETE": env.get("h12", f"{url}/42", 2, parallel=1, method="DELETE"),
        "admin GET": env.get("h12", f"{url}/42", 2, parallel=1),
        "other GET": env.get("h21", f"{url}/42", 2, parallel=1),
    }
    print(f"cilium L7: {got}")
    allowed = {"front GET /users/42": 3, "front POST json": 2, "admin DELETE": 2}
    for what, answers in got.items():
        want = {"h13": allowed[what]} if what in allowed else {403: 2}
        assert (answers if what in allowed else dict(_statuses(answers))) == want, what


def test_envoys_statistics_reach_the_controllers_metrics(env):
    """After the tests above (in file order): the overflows and the ejection of user-service,
    the 429s of api-gateway, the 418s of actions, counted per service by the controller."""

    def counts() -> dict[str, float]:
        port = env.metrics_port
        return {
            "overflows": metric(port, "osken_waypoint_overflows", service="user-service"),
            "ejections": metric(port, "osken_waypoint_ejections", service="user-service"),
            "rate_limited": metric(port, "osken_waypoint_rate_limited", service="api-gateway"),
            "gateway_4xx": metric(
                port, "osken_waypoint_requests", service="api-gateway", code="4xx"
            ),
            "actions_4xx": metric(port, "osken_waypoint_requests", service="actions", code="4xx"),
        }

    want = {"overflows": 30, "ejections": 1, "rate_limited": 1, "gateway_4xx": 1}
    want["actions_4xx"] = 5
    assert until(lambda: all(counts()[k] >= v for k, v in want.items()), 15, 1), counts()
    print(f"waypoint metrics: {counts()}")
