"""The replicas' shared config on a real etcd and Open vSwitch (issue 14): a firewall rule written
through one replica's own files and SIGHUP is published through etcd and enforced by the master
of each switch, whichever replica that is; the version metric is equal on both replicas; a bad
edit (seen by the other replica's file watcher) is refused everywhere and changes nothing."""

from __future__ import annotations

import re
import signal
import time

import pytest

from controller.cluster import StoreUnavailable
from controller.etcd import EtcdStore
from topologies.scrape import metric
from topologies.wait import until

LAB = "firewall:\n  rules_file: rules/fw.yaml\n"
OPEN = "rules: []\n"
# h1x1 -> h2x1 enters at s1, h2x2 -> h1x2 at s2: each switch's master must enforce a rule.
BLOCK = """rules:
  - {{action: deny, protocol: icmp, source: {h1x1}/32, destination: {h2x1}/32}}
  - {{action: deny, protocol: icmp, source: {h2x2}/32, destination: {h1x2}/32}}
"""
BAD = "rules:\n  - {action: deny, protocol: icmp, source: 10.0.0.999/32}\n"
APPLIED = r"config version (\d+) in force \(digest (\w+), published by (\w+)\)"


@pytest.fixture
def replicas(cluster, tmp_path):
    """Replicas a and b (firewall and l2 learning), each with its own copy of the config and a
    metrics port, on the lab etcd, and a two-switch lab (the `cluster` fixture)."""
    configs = {}
    for name in ("a", "b"):
        (tmp_path / name / "rules").mkdir(parents=True)
        (tmp_path / name / "lab.yaml").write_text(LAB)
        (tmp_path / name / "rules" / "fw.yaml").write_text(OPEN)
        configs[name] = str(tmp_path / name / "lab.yaml")
    return cluster(apps=["apps/l2_learning.py", "apps/firewall"], configs=configs, metrics=True)


def pings(net, src: str, dst: str) -> bool:
    return net.ping(src, dst, count=2)[0] > 0


def test_a_rule_edited_at_one_replica_is_enforced_by_every_switchs_master(replicas, tmp_path):
    rs, net = replicas
    started = rs.replicas
    for name, r in started.items():
        assert len(re.findall(APPLIED, r.log())) == 1, r.log()[-2000:]
        assert metric(rs.http[name], "osken_cluster_config_version", replica=name) == 1
    assert pings(net, "h1x1", "h2x1") and pings(net, "h2x2", "h1x2")
    owners = {b: rs.master_of(b) for b in rs.bridges}
    # Publish through the replica that does not master s2: s2's master then enforces a rule
    # that another replica's files and SIGHUP made (masters may well be spread either way).
    pub = next(n for n in started if n != owners[rs.bridges[1]])
    ips = {h: net.host(h).IP() for h in ("h1x1", "h1x2", "h2x1", "h2x2")}
    (tmp_path / pub / "rules" / "fw.yaml").write_text(BLOCK.format(**ips))
    hup = time.monotonic()
    started[pub].proc.send_signal(signal.SIGHUP)
    took: dict[str, float] = {}
    while len(took) < 2 and time.monotonic() - hup < 10:
        for name, r in started.items():
            if name not in took and len(re.findall(APPLIED, r.log())) >= 2:
                took[name] = time.monotonic() - hup
        time.sleep(0.005)
    print(f"masters {owners}; SIGHUP at {pub} -> version 2 in force: {took}")
    assert len(took) == 2, [r.log()[-2000:] for r in started.values()]
    for name, r in started.items():
        version, _, by = re.findall(APPLIED, r.log())[-1]
        assert (version, by) == ("2", pub)
        assert metric(rs.http[name], "osken_cluster_config_version", replica=name) == 2
    assert metric(rs.http[pub], "osken_cluster_config_publish", result="published") == 1
    # Blocked at s1 and at s2, whoever masters them; what the rules leave alone still works.
    assert until(lambda: not pings(net, "h1x1", "h2x1"), 5)
    assert until(lambda: not pings(net, "h2x2", "h1x2"), 5)
    assert pings(net, "h1x2", "h2x1") and pings(net, "h2x2", "h1x1")

    # A bad edit at the other replica, seen by its file watcher (no SIGHUP): refused there,
    # published nowhere, nothing changes on either replica.
    other = next(n for n in started if n != pub)
    a = started[other]
    (tmp_path / other / "rules" / "fw.yaml").write_text(BAD)
    refused = r"config file changed: config rejected, not published; version 2 stays in force"
    assert a.wait_log(refused, timeout=10), a.log()[-2000:]
    assert re.search(r"fw\.yaml:2: rules\[0\]\.source", a.log()), a.log()[-2000:]
    time.sleep(1.0)
    for name, r in started.items():
        assert len(re.findall(APPLIED, r.log())) == 2
        assert metric(rs.http[name], "osken_cluster_config_version", replica=name) == 2
    assert metric(rs.http[other], "osken_cluster_config_publish", result="rejected") == 1
    assert not pings(net, "h1x1", "h2x1") and not pings(net, "h2x2", "h1x2")
    assert not any("Traceback" in r.log() for r in started.values())


def test_compare_and_swap_on_a_real_etcd(etcd):
    """EtcdStore's get and cas as controller/sharedconfig.py relies on them (etcd 3.4's JSON
    gateway omits `succeeded` when a transaction fails)."""
    store = EtcdStore(etcd.url)
    assert store.get("/osken/test") is None
    assert store.cas("/osken/test", "one", 0)
    assert not store.cas("/osken/test", "two", 0)  # not absent any more
    value, revision = store.get("/osken/test")
    assert value == "one" and revision > 0
    assert not store.cas("/osken/test", "two", revision - 1)
    assert store.cas("/osken/test", "two", revision)
    assert store.get("/osken/test")[0] == "two" and store.get("/osken/test")[1] > revision
    etcd.pause()
    try:
        with pytest.raises(StoreUnavailable):
            store.cas("/osken/test", "three", revision)
    finally:
        etcd.resume()
