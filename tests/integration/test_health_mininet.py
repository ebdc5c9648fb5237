"""Backend health in Mininet: a backend whose server dies, its link up, leaves the split.

The lab is topologies/serviceslab.py; here each backend's server is started by the test, so one
can be killed and started again. Times are printed (`pytest -s`) for docs/services.md.
"""

import time

import pytest

from tests.integration.conftest import require_lab
from topologies.harness import metric
from topologies.servers import Servers
from topologies.serviceslab import BACKENDS, PORT, VIP, leafspine_under_services, service_config
from topologies.wait import until

LIMIT = 5.0  # seconds: out of the split, and back in, within this
SILENT_LIMIT = 6.0  # seconds, for a backend that does not answer at all (its checks time out)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    folder = tmp_path_factory.mktemp("health")
    with leafspine_under_services(folder, service_config({"v1-a": 50, "v2-a": 50})) as (
        ctl,
        lab,
        port,
    ):
        servers = Servers(lab)
        try:
            for host in BACKENDS.values():
                servers.start(host)
            yield ctl, lab, port, servers
        finally:
            servers.stop()


def apply(ctl, port, text: str) -> None:
    assert ctl.rewrite_config(text, 10.0), ctl.log()[-2000:]
    live = lambda: metric(port, "osken_services_live_backends", service="user-service") >= 3  # noqa: E731
    assert until(live, 10.0), ctl.log()[-2000:]


def healthy(port: int, endpoint: str, service: str = "user-service") -> float:
    return metric(port, "osken_services_backend_healthy", service=service, backend=endpoint)


def out_and_back(ctl, lab, port, servers, method: str) -> tuple[float, float]:
    """Kill v1-a's server (h21), its link up: seconds until it is out of health, then, with
    its server started again, seconds until it is back. Checks that no connection fails once it
    is out, and that it takes its share again once back."""
    apply(ctl, port, service_config({"v1-a": 50, "v2-a": 50}, method=method))
    assert until(lambda: healthy(port, "v1-a") == 1, 5.0)
    got = lab.spread("h11", VIP, PORT, 40)
    assert got.get("h21", 0) > 0 and "fail" not in got, got
    servers.kill("h21")
    start = time.time()
    assert until(lambda: healthy(port, "v1-a") == 0, LIMIT, interval=0.05), ctl.log()[-2000:]
    out = time.time() - start
    got = lab.spread("h11", VIP, PORT, 200)
    assert got == {"h31": 200}, got  # no failed connection, none to the dead backend
    servers.start("h21")
    start = time.time()
    assert until(lambda: healthy(port, "v1-a") == 1, LIMIT, interval=0.05), ctl.log()[-2000:]
    back = time.time() - start
    got = lab.spread("h11", VIP, PORT, 100)
    assert "fail" not in got and got.get("h21", 0) > 0, got
    if method == "exact":
        assert got == {"h21": 50, "h31": 50}, got
    print(f"\n{method}: out of the split {out:.2f} s after the kill, back {back:.2f} s after")
    return out, back


def test_a_killed_server_leaves_the_exact_split_within_5_s_and_comes_back(env):
    out, back = out_and_back(*env, "exact")
    assert out < LIMIT and back < LIMIT


def test_a_killed_server_leaves_the_switchs_select_group_within_5_s_and_comes_back(env):
    out, back = out_and_back(*env, "switch")
    assert out < LIMIT and back < LIMIT


def test_a_backend_refusing_connections_is_ejected_and_counted(env):
    ctl, lab, port, servers = env
    apply(ctl, port, service_config({"v1-a": 50, "v2-a": 50}))
    refused = metric(port, "osken_services_health_checks", backend="v1-a", result="refused")
    ejected = metric(port, "osken_services_ejections", backend="v1-a", reason="health")
    servers.kill("h21")  # its kernel now answers every SYN with a RST
    try:
        assert until(lambda: healthy(port, "v1-a") == 0, LIMIT, interval=0.05)
        after = metric(port, "osken_services_health_checks", backend="v1-a", result="refused")
        assert after - refused >= 3
        assert metric(port, "osken_services_ejections", backend="v1-a", reason="health") == (
            ejected + 1
        )
        assert "v1-a:80 failed 3 health checks in a row" in ctl.log()
    finally:
        servers.start("h21")
    assert until(lambda: healthy(port, "v1-a") == 1, LIMIT, interval=0.05)


def test_a_backend_resetting_new_connections_is_ejected_by_outlier_detection(env, tmp_path):
    """Active checks off: the DestinationRule's outlierDetection alone ejects it."""
    ctl, lab, port, servers = env
    rule = tmp_path / "rule.yaml"
    rule.write_text(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
        "metadata: {name: user-service}\nspec:\n  host: user-service\n  trafficPolicy:\n"
        "    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 5s}\n"
    )
    config = service_config({"v1-a": 50, "v2-a": 50}).replace(
        "    method: exact\n", "    method: exact\n    health: false\n"
    )
    apply(ctl, port, config + f"routing: [{rule}]\n")
    before = metric(port, "osken_services_ejections", backend="v1-a", reason="outlier")
    servers.kill("h21")
    try:
        start = time.time()
        got = lab.spread("h11", VIP, PORT, 20, parallel=1)
        # Three refused (a fourth may leave before the third's RST is in), then it is out.
        assert got.get("fail", 0) in (3, 4) and "h21" not in got, got
        ejections = metric(port, "osken_services_ejections", backend="v1-a", reason="outlier")
        assert ejections == before + 1
        assert lab.spread("h11", VIP, PORT, 100) == {"h31": 100}
        print(f"\noutlier: ejected after 3 refused connects, {time.time() - start:.2f} s")
    finally:
        servers.start("h21")
    time.sleep(5.5)  # baseEjectionTime: then it takes its share again
    got = lab.spread("h11", VIP, PORT, 40)
    assert "fail" not in got and got.get("h21", 0) > 0, got


def test_a_backend_that_drops_syns_silently_leaves_within_5_s(env):
    """No RST to tell: its checks time out (iptables in its namespace drops what comes in)."""
    ctl, lab, port, _ = env
    apply(ctl, port, service_config({"v1-a": 50, "v2-a": 50}))
    assert until(lambda: healthy(port, "v1-a") == 1, 5.0)
    drop = f"INPUT -p tcp --dport {PORT} -j DROP"
    lab.host("h21").cmd(f"iptables -I {drop}")
    try:
        start = time.time()
        # Three timeouts: up to interval + 3 x timeout (4 s) and the controller's tick.
        assert until(lambda: healthy(port, "v1-a") == 0, SILENT_LIMIT, interval=0.05)
        out = time.time() - start
        assert lab.spread("h11", VIP, PORT, 100) == {"h31": 100}
        timeouts = metric(port, "osken_services_health_checks", backend="v1-a", result="timeout")
        assert timeouts >= 3
        print(f"\nsilent: out of the split {out:.2f} s after its SYNs were dropped")
    finally:
        lab.host("h21").cmd(f"iptables -D {drop}")
    assert until(lambda: healthy(port, "v1-a") == 1, LIMIT, interval=0.05)


def test_a_udp_backend_is_checked_with_a_payload_and_leaves_when_its_server_dies(env):
    ctl, lab, port, servers = env
    dns = (
        "  - name: dns\n    vip: 10.0.100.11\n    port: 53\n    protocol: udp\n"
        "    health: {send: ping, expect: ping}\n"
        "    backends: [{endpoint: v1-a, weight: 50}, {endpoint: v2-a, weight: 50}]\n"
    )
    for host in ("h21", "h31"):
        servers.start(host, "udp:53")  # echoes each datagram
    try:
        apply(ctl, port, service_config({"v1-a": 50, "v2-a": 50}) + dns)
        assert until(lambda: healthy(port, "v1-a", "dns") == 1, 5.0)
        checks = metric(port, "osken_services_health_checks", service="dns", result="success")
        assert until(
            lambda: (
                metric(port, "osken_services_health_checks", service="dns", result="success")
                >= checks + 4
            ),
            5.0,
        )
        servers.kill("h21", "udp:53")
        start = time.time()
        assert until(lambda: healthy(port, "v1-a", "dns") == 0, SILENT_LIMIT, interval=0.05)
        print(f"\nudp: out of the split {time.time() - start:.2f} s after the kill")
        assert healthy(port, "v2-a", "dns") == 1
    finally:
        if servers.running("h21", "udp:53"):
            servers.kill("h21", "udp:53")
        servers.kill("h31", "udp:53")
