"""Method "switch" in Mininet: the connections each backend got, as counted from Open vSwitch's
select group bucket counters, are the connections the backends really greeted."""

import json
import time
import urllib.request

import pytest

from apps.services.counting import STATS_INTERVAL
from tests.integration.conftest import require_lab
from topologies.harness import metric
from topologies.serviceslab import BACKENDS, service_config, services_lab


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    with services_lab(tmp_path_factory.mktemp("counting")) as c:
        yield c


def counted(env) -> dict[str, float]:
    return {
        name: metric(env.metrics_port, "osken_services_connections", backend=name)
        for name in ("v1-a", "v2-a", "v3-a")
    }


def test_each_backends_connections_are_counted_from_the_buckets_exactly(env):
    env.apply(service_config({"v1-a": 50, "v2-a": 30, "v3-a": 20}, method="switch"))
    time.sleep(2 * STATS_INTERVAL + 0.5)  # the new groups' counters are polled once at least
    before = counted(env)
    got = env.spread(300)
    assert got.get("fail", 0) == 0, got
    time.sleep(2 * STATS_INTERVAL + 0.5)
    after = counted(env)
    grew = {name: after[name] - before[name] for name in after}
    assert grew == {name: got.get(BACKENDS[name], 0) for name in grew}, (grew, got)
    assert all(grew.values()), grew  # every backend took some: the split was really hashed
    page = json.load(urllib.request.urlopen(f"http://127.0.0.1:{env.metrics_port}/api/v1/topology"))
    observed = page["services"][0]["observed"]
    assert {name: observed[name] for name in after} == after, observed
