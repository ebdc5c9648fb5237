"""Method "switch": connections per backend counted from the select groups' bucket counters."""

from collections import Counter
from fractions import Fraction

from apps.services.compile import select_group_id
from apps.services.counting import STATS_INTERVAL, GroupCounts
from apps.services.settings import Backend, Route, Service
from controller.flows import Bucket, group, group_action
from controller.switch import GroupStat
from tests.unit.test_services import V1A, V2A, connect, make, reload, service


def unchecked(config: str) -> str:
    """`config` with its service's health checks off: the fake backends answer no probe, and
    these tests count connections, not health."""
    return config.replace("    method: switch\n", "    method: switch\n    health: false\n")


def served(app) -> dict[str, float]:
    """osken_services_connections_total per backend, as Prometheus would scrape it."""
    return {
        sample.labels["backend"]: sample.value
        for family in app.core.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "osken_services_connections_total"
    }


def test_the_switch_method_counts_each_backends_connections_as_its_buckets_committed(tmp_path):
    net, app, _ = make(tmp_path, unchecked(service(50, 50, method="switch")))
    net.advance(STATS_INTERVAL)  # the first poll is the baseline
    got = Counter(connect(net, sport=20000 + i)[0] for i in range(200))
    for i in range(50):  # later packets of the same connections are +est: not counted again
        connect(net, sport=20000 + i)
    net.advance(STATS_INTERVAL + 0.5)
    want = {"v1-a": got[V1A], "v2-a": got[V2A]}
    assert set(got) == {V1A, V2A} and served(app) == want
    observed = app.describe()["services"][0]["observed"]
    assert observed == {"v1-a": got[V1A], "v2-a": got[V2A], "v1-b": 0}


def test_a_weight_change_replaces_the_group_and_its_counters_start_again(tmp_path):
    net, app, cfg = make(tmp_path, unchecked(service(50, 50, method="switch")))
    net.advance(STATS_INTERVAL)
    first = Counter(connect(net, sport=20000 + i)[0] for i in range(100))
    net.advance(STATS_INTERVAL + 0.5)
    reload(net, cfg, unchecked(service(100, 0, method="switch")))
    second = Counter(connect(net, sport=30000 + i)[0] for i in range(30))
    net.advance(STATS_INTERVAL + 0.5)
    assert second == {V1A: 30}
    assert served(app) == {"v1-a": first[V1A] + 30, "v2-a": first[V2A]}


def _service() -> Service:
    a = Backend("v1-a", "10.0.0.3", "00:00:00:00:00:03", 80)
    b = Backend("v2-a", "10.0.0.5", "00:00:00:00:00:05", 80)
    return Service(
        name="web",
        vip="10.0.100.10",
        port=80,
        protocol="tcp",
        method="switch",
        backends=(a, b),
        routes=(Route(None, ((a.key, Fraction(75)), (b.key, Fraction(25))), "test"),),
        backups=(),
    )


def test_buckets_are_read_by_the_backend_they_name_and_a_backends_buckets_are_summed():
    s = _service()
    ff = {"web": {"v1-a:80": 11, "v2-a:80": 12}}
    gid = select_group_id(0, 0)
    # Several buckets per backend, in no particular order: position says nothing.
    g = group(
        gid,
        "select",
        [
            Bucket((group_action(12),), weight=1),
            Bucket((group_action(11),), weight=1),
            Bucket((group_action(11),), weight=1),
            Bucket((group_action(11),), weight=1),
        ],
    )
    counted: Counter = Counter()
    counts = GroupCounts(lambda svc, endpoint, n: counted.update({(svc.name, endpoint): n}))
    counts.add(1, [GroupStat(gid, 0, 100.0, (0, 0, 0, 0))], False, 0.0, [s], {gid: g}, ff)
    counts.add(1, [GroupStat(gid, 10, 102.0, (2, 3, 4, 1))], False, 2.0, [s], {gid: g}, ff)
    assert counted == {("web", "v2-a"): 2, ("web", "v1-a"): 8}
    # Replaced (younger than before): its counters are new connections from zero.
    counts.add(1, [GroupStat(gid, 1, 0.5, (1, 0, 0, 0))], False, 4.0, [s], {gid: g}, ff)
    assert counted == {("web", "v2-a"): 3, ("web", "v1-a"): 8}


def test_a_group_seen_first_counts_whole_only_when_made_since_the_last_poll():
    s = _service()
    gid = select_group_id(0, 0)
    g = group(gid, "select", [Bucket((group_action(11),), weight=3)])
    counted: Counter = Counter()
    counts = GroupCounts(lambda svc, endpoint, n: counted.update({endpoint: n}))
    ff = {"web": {"v1-a:80": 11}}
    counts.add(1, [GroupStat(gid, 40, 600.0, (40,))], False, 0.0, [s], {gid: g}, ff)
    assert counted == {}  # older than this controller's first look: not its to count
    counts.forget([])
    counts.add(1, [], False, 10.0, [s], {}, ff)
    counts.add(1, [GroupStat(gid, 5, 1.0, (5,))], False, 12.0, [s], {gid: g}, ff)
    assert counted == {"v1-a": 5}  # made within the last 2 s: all of it is new
    mismatched = group(gid, "select", [Bucket((group_action(11),), weight=3)] * 2)
    counts.add(1, [GroupStat(gid, 9, 3.0, (9,))], False, 14.0, [s], {gid: mismatched}, ff)
    assert counted == {"v1-a": 5}  # not what the controller declared: nothing is guessed
