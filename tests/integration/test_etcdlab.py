"""The lab etcd (topologies/etcdlab.py): starts on loopback, serves a 1 s lease, stops by pid
and leaves no data dir behind. Loopback only, no Mininet: no lab lock needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from topologies.etcdlab import ETCD, EtcdLab

pytestmark = pytest.mark.skipif(not os.access(ETCD, os.X_OK), reason="no /usr/bin/etcd")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_lease_expires_within_two_seconds_and_stop_cleans_up():
    from etcd3gw.client import Etcd3Client

    with EtcdLab() as lab:
        assert lab.url.startswith("http://127.0.0.1:")
        client = Etcd3Client(host="127.0.0.1", port=lab.client_port, timeout=1)
        lease = client.lease(ttl=1)
        assert client.create("/owner", "a", lease=lease)
        assert not client.create("/owner", "b")  # create-if-absent
        start = time.monotonic()
        while client.get("/owner") and time.monotonic() - start < 5:
            time.sleep(0.05)
        assert time.monotonic() - start < 2.0
        pid, data_dir = lab.pid, lab.data_dir
    time.sleep(0.2)
    assert not _alive(pid)
    assert not os.path.exists(data_dir)


def test_script_start_and_stop_by_pid():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = [sys.executable, "-m", "topologies.etcdlab"]
    out = subprocess.run([*run, "start"], cwd=root, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    url, pid, data_dir = out.stdout.split()
    assert url.startswith("http://127.0.0.1:") and _alive(int(pid))
    subprocess.run([*run, "stop", pid, data_dir], cwd=root, check=True, timeout=30)
    time.sleep(0.3)
    assert not _serving(int(pid))
    assert not os.path.exists(data_dir)


def _serving(pid: int) -> bool:
    """Running and not a zombie (an orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_store_on_real_etcd_releases_only_the_key_it_holds():
    from controller.etcd import EtcdStore

    with EtcdLab() as lab:
        store = EtcdStore(lab.url)
        lease = store.grant(5)
        assert store.create("/osken/masters/01", "a", lease)
        (_, revision) = store.get_prefix("/osken/masters/01")["/osken/masters/01"]
        assert not store.release("/osken/masters/01", revision + 1)  # not the key we held
        assert store.get_prefix("/osken/masters/01")
        assert store.release("/osken/masters/01", revision)
        assert store.get_prefix("/osken/masters/") == {}
        assert not store.release("/osken/masters/01", revision)  # gone already
