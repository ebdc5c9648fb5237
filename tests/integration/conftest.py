"""Integration tests need root, Open vSwitch and Mininet. Locally they skip without them; in CI
(CI=true) a missing prerequisite fails, so a broken setup can never pass as green."""

import os
import shutil
import subprocess

import pytest

from topologies.etcdlab import ETCD, EtcdLab
from topologies.harness import Controller, Lab
from topologies.linear import LinearTopo
from topologies.replicas import ReplicaSet
from topologies.wait import until


def _lab_problem() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root"
    if shutil.which("ovs-vsctl") is None or shutil.which("mn") is None:
        return "Open vSwitch or Mininet is not installed (run scripts/setup.sh)"
    if subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode:
        return "Open vSwitch is not running (run scripts/setup.sh)"
    return None


def require_lab() -> None:
    """Skip without a lab locally; fail in CI. Module-scoped fixtures call it themselves, as
    they are set up before the autouse check below runs."""
    problem = _lab_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(autouse=True)
def _needs_lab():
    require_lab()


@pytest.fixture
def controller(tmp_path):
    """A factory: start osken-manager with the given apps; every one started is stopped."""
    started = []

    def start(apps=("apps/l2_learning.py",), **kwargs):
        ctl = Controller(
            list(apps), log_path=str(tmp_path / f"controller{len(started)}.log"), **kwargs
        )
        started.append(ctl)
        return ctl.start()

    yield start
    for ctl in started:
        ctl.stop()


@pytest.fixture
def lab():
    """A factory: start a Mininet lab; every one started is torn down, leaving nothing behind."""
    started = []

    def start(topo, port, **kwargs):
        lab_ = Lab(topo, port, **kwargs)
        started.append(lab_)
        return lab_.start()

    yield start
    for lab_ in started:
        lab_.stop()


@pytest.fixture
def etcd():
    """A lab etcd on loopback (topologies/etcdlab.py), stopped by pid after the test. Without
    /usr/bin/etcd: skipped locally, failed in CI."""
    if not os.access(ETCD, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"no {ETCD} (scripts/setup.sh installs etcd-server)")
        pytest.skip(f"no {ETCD}")
    with EtcdLab() as lab_:
        yield lab_


@pytest.fixture
def cluster(etcd, lab, tmp_path):
    """A factory: replicas `names` on the lab etcd (ReplicaSet's arguments: apps, configs,
    metrics ...) and a line of `switches` switches with two quiet hosts each (they send only
    what a test makes them send), connected to every replica, each switch with one master.
    Returns (ReplicaSet, lab); every replica is stopped after the test."""
    started = []

    def start(names=("a", "b"), switches=2, **kwargs):
        rs = ReplicaSet(etcd.url, names, log_dir=str(tmp_path), **kwargs)
        started.append(rs)
        rs.start()
        topo = LinearTopo(n=switches, hosts_per_switch=2)
        net = lab(topo, rs.replicas[names[0]].port, quiet=True)
        assert rs.connect(net), rs.masters()
        assert until(lambda: net.ping("h1x1", "h2x1", count=1)[0], 20)
        return rs, net

    try:
        yield start
    finally:
        for rs in started:
            rs.stop()
