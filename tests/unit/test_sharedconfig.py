"""The replicas' shared config on a fake etcd (controller/sharedconfig.py): a config edited at
one replica is checked, published with a compare-and-swap and applied by every replica (the
publisher too) only once it is in etcd; a refused config changes nothing anywhere; a lost
compare-and-swap names the winner; etcd away while publishing leaves the edit pending."""

from __future__ import annotations

import json
import logging
import os
from types import MappingProxyType

import pytest

from apps.firewall import Firewall
from apps.l2_learning import L2Learning
from controller.app import SuiteApp
from controller.config import Config, ConfigError, load_config
from controller.core import Core
from controller.sharedconfig import CONFIG_KEY, SharedConfig, Snapshot, materialize, snapshot
from tests.fakeetcd import FakeEtcd
from tests.unit.test_firewall import A, B, C, tcp
from tests.unit.test_l2 import leaf_spine

BASE = "firewall:\n  rules_file: rules/fw.yaml\n"
OPEN = "rules: []\n"
CLOSE_22 = "rules:\n  - {action: deny, protocol: tcp, port: 22}\n"


OPENED: list[SharedConfig] = []


@pytest.fixture(autouse=True)
def _close_shared_configs():
    """Every SharedConfig a test made removes its private folder."""
    yield
    while OPENED:
        OPENED.pop().close()


class Replica:
    """A core on a fake network, its local config files and its side of the shared config."""

    def __init__(self, name: str, etcd: FakeEtcd, root, rules: str = OPEN) -> None:
        self.name = name
        self.dir = root / name
        (self.dir / "rules").mkdir(parents=True)
        self.write(BASE, rules)
        self.core = Core()
        self.core.add_app(L2Learning)
        self.core.add_app(Firewall)
        self.shared = SharedConfig(etcd, name, self.core, self.core.metrics.registry)
        OPENED.append(self.shared)
        self.etcd = etcd
        self.net = None

    @property
    def cfg(self) -> str:
        return str(self.dir / "lab.yaml")

    def write(self, lab: str, rules: str | None = None) -> None:
        (self.dir / "lab.yaml").write_text(lab)
        if rules is not None:
            (self.dir / "rules" / "fw.yaml").write_text(rules)

    def start(self) -> None:
        """As CoreApp.setup and start do: join, then apply what join chose."""
        config = self.shared.join(load_config(self.cfg))
        self.core.configure(config, 1000.0)
        self.net = leaf_spine(self.core)
        self.net.now = 1000.0
        self.net.start()
        for a, b in [(A, B), (A, C), (B, C)]:
            self.net.converse(a, b)

    def edit(self) -> None:
        """SIGHUP: check and publish the local files."""
        self.shared.publish(lambda: load_config(self.cfg), "SIGHUP")

    def step(self) -> None:
        """One round of the cluster thread, and the event loop handling what it posted."""
        changed = self.shared.poll(self.etcd)
        if changed is not None:
            self.net.deliver(self.shared.observe(*changed, self.net.now))

    def ssh_open(self) -> bool:
        return tcp(self.net, A, B, 22)

    def publishes(self, result: str) -> float:
        return self.shared.publishes.labels(self.name, result)._value.get()

    def failures(self) -> float:
        return self.shared.apply_failures.labels(self.name)._value.get()

    def gauge(self) -> float:
        return self.shared.version_gauge.labels(self.name)._value.get()


@pytest.fixture
def cluster(tmp_path):
    """Replicas a, b, c started in turn on one fake etcd, each with its own copy of the same
    files (ssh open)."""
    etcd = FakeEtcd()
    replicas = {n: Replica(n, etcd, tmp_path) for n in "abc"}
    for r in replicas.values():
        r.start()
    return etcd, replicas


def run(replicas, rounds: int = 1) -> None:
    for _ in range(rounds):
        for r in replicas.values():
            r.step()


def etcd_snapshot(etcd: FakeEtcd) -> Snapshot:
    return Snapshot.from_json(etcd.get(CONFIG_KEY)[0])


def test_the_first_replica_publishes_its_config_the_others_enforce_it(cluster):
    etcd, replicas = cluster
    snap = etcd_snapshot(etcd)
    assert (snap.version, snap.by, snap.entry) == (1, "a", "lab.yaml")
    assert set(snap.files) == {"lab.yaml", "rules/fw.yaml"}
    assert etcd.puts == 1  # b and c found it there: the same files, nothing more published
    for r in replicas.values():
        assert (r.shared.version, r.gauge()) == (1, 1)
        assert r.core.config.path.startswith(r.shared.folder)
        assert r.ssh_open()


def test_an_edit_at_one_replica_is_applied_by_every_replica_once_in_etcd(cluster):
    etcd, replicas = cluster
    b = replicas["b"]
    b.write(BASE, CLOSE_22)
    b.edit()
    snap = etcd_snapshot(etcd)
    assert (snap.version, snap.by) == (2, "b")
    assert b.publishes("published") == 1
    # Not applied at the publisher before it is read back from etcd, as everywhere.
    assert b.shared.version == 1 and b.ssh_open()
    run(replicas)
    for r in replicas.values():
        assert (r.shared.version, r.gauge()) == (2, 2), r.name
        assert not r.ssh_open(), r.name
    # Their local files are untouched: the edit is b's, the cluster's config is etcd's.
    assert "deny" not in (replicas["a"].dir / "rules" / "fw.yaml").read_text()


def test_a_refused_config_is_not_published_and_changes_nothing_anywhere(cluster, caplog):
    etcd, replicas = cluster
    a = replicas["a"]
    revision = etcd.get(CONFIG_KEY)[1]
    a.write(BASE, "rules:\n  - {action: deny, protocol: tcp, port: 70000}\n")
    with caplog.at_level(logging.ERROR):
        a.edit()
    assert "config rejected, not published; version 1 stays in force" in caplog.text
    assert "fw.yaml:2: rules[0].port" in caplog.text  # located in a's own file
    assert etcd.get(CONFIG_KEY)[1] == revision
    assert a.publishes("rejected") == 1
    run(replicas, 3)
    for r in replicas.values():
        assert r.shared.version == 1 and r.ssh_open()
        assert r.core.metrics.config_reloads.labels("rejected")._value.get() == 0


def test_a_lost_compare_and_swap_names_the_winner_and_applies_its_config(cluster, caplog):
    etcd, replicas = cluster
    a, b = replicas["a"], replicas["b"]
    a.write(BASE, CLOSE_22)
    b.write(BASE, "rules:\n  - {action: deny, protocol: tcp, port: 23}\n")
    a.edit()  # a wins; b has not read it back yet and swaps on the revision it last saw
    with caplog.at_level(logging.INFO):
        b.edit()
    assert b.publishes("conflict") == 1
    assert "config edit not published: a published version 2 first" in caplog.text
    assert "SIGHUP this replica again" in caplog.text
    run(replicas)
    for r in replicas.values():
        assert r.shared.version == 2 and not r.ssh_open()
    # Retrying as the log says publishes b's edit on top of a's.
    b.edit()
    run(replicas)
    assert etcd_snapshot(etcd).version == 3
    for r in replicas.values():
        assert r.shared.version == 3 and r.ssh_open() and not tcp(r.net, A, B, 23)


def test_a_compare_and_swap_lost_to_the_same_files_is_a_success(cluster):
    etcd, replicas = cluster
    a, b = replicas["a"], replicas["b"]
    for r in (a, b):  # the same edit made at both (say, files on shared storage)
        r.write(BASE, CLOSE_22)
    a.edit()
    b.edit()
    assert (a.publishes("published"), b.publishes("same"), b.publishes("conflict")) == (1, 1, 0)
    run(replicas)
    assert all(r.shared.version == 2 and not r.ssh_open() for r in replicas.values())


def test_an_edit_already_in_etcd_publishes_nothing(cluster):
    etcd, replicas = cluster
    puts = etcd.puts
    replicas["c"].edit()
    assert etcd.puts == puts


def test_etcd_away_while_publishing_leaves_the_edit_pending_then_publishes_it(cluster, caplog):
    etcd, replicas = cluster
    a = replicas["a"]
    a.write(BASE, CLOSE_22)
    etcd.down = True
    with caplog.at_level(logging.WARNING):
        a.edit()
    assert "not published, etcd does not answer" in caplog.text
    assert a.publishes("unavailable") == 1
    run(replicas, 2)  # every poll fails: nothing is applied, half or whole
    a.shared.retry()
    for r in replicas.values():
        assert r.shared.version == 1 and r.ssh_open() and not r.shared.reachable
    etcd.down = False
    run(replicas)  # the thread finds etcd again
    a.shared.retry()  # the next tick publishes
    assert a.publishes("published") == 1 and a.shared.pending is None
    run(replicas)
    assert all(r.shared.version == 2 and not r.ssh_open() for r in replicas.values())


def test_a_pending_edit_does_not_overwrite_a_version_published_meanwhile(cluster):
    etcd, replicas = cluster
    a, b = replicas["a"], replicas["b"]
    a.write(BASE, CLOSE_22)
    etcd.down = True
    a.edit()
    etcd.down = False
    b.write(BASE, "rules:\n  - {action: deny, protocol: tcp, port: 23}\n")
    b.edit()
    a.shared.retry()  # swaps on the revision a saw before b's edit: lost, not overwritten
    assert a.publishes("conflict") == 1
    run(replicas)
    assert all(r.shared.version == 2 and r.ssh_open() for r in replicas.values())


def test_a_replica_starting_with_other_files_enforces_etcds_and_says_so(tmp_path, caplog):
    etcd = FakeEtcd()
    a = Replica("a", etcd, tmp_path, rules=CLOSE_22)
    a.start()
    b = Replica("b", etcd, tmp_path, rules=OPEN)
    with caplog.at_level(logging.WARNING):
        b.start()
    assert "lab.yaml differs from the cluster's version 1" in caplog.text
    assert "SIGHUP to publish the local files" in caplog.text
    assert etcd.puts == 1
    assert not b.ssh_open() and b.shared.version == 1


def test_a_replica_without_a_config_runs_none_until_one_is_published(tmp_path):
    etcd = FakeEtcd()
    a = Replica("a", etcd, tmp_path, rules=CLOSE_22)
    assert a.shared.join(Config()).path is None
    assert etcd.get(CONFIG_KEY) is None and a.shared.version == 0
    b = Replica("b", etcd, tmp_path, rules=CLOSE_22)
    b.start()
    a.core.configure(Config(), 1000.0)
    a.net = leaf_spine(a.core)
    a.net.start()
    a.step()
    assert a.shared.version == 1 and not a.ssh_open()


class Extra(SuiteApp):
    """An app only replica a loads: its section is an unknown key anywhere else."""

    name = "extra"
    config_section = "extra"
    config_schemas = MappingProxyType({"extra": {"type": "object"}})


def test_a_version_a_replica_cannot_check_is_counted_and_changes_nothing_there(tmp_path):
    etcd = FakeEtcd()
    a, b = Replica("a", etcd, tmp_path), Replica("b", etcd, tmp_path)
    a.core.add_app(Extra)
    a.start()
    b.start()
    a.write(BASE + "extra: {}\n", CLOSE_22)
    a.edit()
    a.step()
    b.step()
    assert a.shared.version == 2 and not a.ssh_open()
    assert b.failures() == 1 and b.shared.version == 1 and b.gauge() == 1 and b.ssh_open()
    assert b.shared.behind and not a.shared.behind  # b gives up its switches (test_ha.py)
    b.step()  # the same revision again: not retried, not counted again
    assert b.failures() == 1
    a.write(BASE, CLOSE_22)  # a version b can apply: b is back in step
    a.edit()
    a.step()
    b.step()
    assert b.shared.version == 3 and not b.shared.behind


def test_etcds_config_that_does_not_check_here_stops_the_start(tmp_path):
    etcd = FakeEtcd()
    a, b = Replica("a", etcd, tmp_path), Replica("b", etcd, tmp_path)
    a.core.add_app(Extra)
    a.write(BASE + "extra: {}\n")
    a.start()
    with pytest.raises(ConfigError, match=r"extra: unknown key \(the cluster's version 1, publ"):
        b.shared.join(load_config(b.cfg))


def test_a_file_named_by_an_absolute_path_is_refused_with_its_line(tmp_path):
    etcd = FakeEtcd()
    a = Replica("a", etcd, tmp_path)
    rules = a.dir / "rules" / "fw.yaml"
    a.write(f"# shared\nfirewall:\n  rules_file: {rules}\n")
    with pytest.raises(ConfigError, match=r"lab.yaml:3: names .*fw.yaml by an absolute path"):
        a.shared.join(load_config(a.cfg))
    assert etcd.get(CONFIG_KEY) is None


def test_relative_references_above_the_config_file_keep_working(tmp_path):
    """`..` in a reference: the snapshot's root is the common folder of every file."""
    etcd = FakeEtcd()
    a = Replica("a", etcd, tmp_path, rules=CLOSE_22)
    (a.dir / "conf").mkdir()
    (a.dir / "conf" / "lab.yaml").write_text("firewall:\n  rules_file: ../rules/fw.yaml\n")
    config = a.shared.join(load_config(str(a.dir / "conf" / "lab.yaml")))
    snap = etcd_snapshot(etcd)
    assert (snap.entry, sorted(snap.files)) == ("conf/lab.yaml", ["conf/lab.yaml", "rules/fw.yaml"])
    assert config.path == os.path.join(a.shared.folder, "conf", "lab.yaml")
    assert all(f.startswith(a.shared.folder) for f in a.core.parse(config).config.files())


def test_listed_folders_are_shared_with_their_files_and_kept_when_empty(tmp_path):
    root = tmp_path / "x"
    (root / "policies").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "policies" / "p.yaml").write_text("kind: Policy\n")
    (root / "policies" / "notes.txt").write_text("not listed\n")
    (root / "lab.yaml").write_text("policies: [policies, empty]\n")
    config = load_config(str(root / "lab.yaml"))
    config.listed_files("policies")
    snap = snapshot(config, 1, "a")
    assert sorted(snap.dirs) == ["empty", "policies"]
    assert sorted(snap.files) == ["lab.yaml", "policies/p.yaml"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.yaml").write_text("x")  # a file of the version materialized before
    entry = materialize(snap, str(out))
    assert sorted(os.listdir(out)) == ["empty", "lab.yaml", "policies"]
    listed = load_config(entry).listed_files("policies")
    assert [p for _, p in listed] == [str(out / "policies" / "p.yaml")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(digest="0" * 64), "digest does not match"),
        (lambda raw: raw.update(entry="../lab.yaml"), "leaves the snapshot's folder"),
        (lambda raw: raw.pop("files"), "not a config snapshot"),
    ],
)
def test_a_malformed_value_in_etcd_is_refused(tmp_path, change, message):
    a = Replica("a", FakeEtcd(), tmp_path)
    raw = json.loads(snapshot(a.core.parse(load_config(a.cfg)).config, 1, "a").to_json())
    change(raw)
    with pytest.raises(ValueError, match=message):
        Snapshot.from_json(json.dumps(raw))


def test_a_second_edit_before_the_first_is_read_back_publishes_on_top_of_it(cluster, caplog):
    # Two SIGHUPs (or a SIGHUP and a settled file edit) within one 100 ms poll: the second
    # swapped on the revision before the first and lost to this replica's own edit, logged as
    # "a published version 2 first", and the second edit was published nowhere.
    etcd, replicas = cluster
    a = replicas["a"]
    a.write(BASE, CLOSE_22)
    a.edit()
    a.write(BASE, "rules:\n  - {action: deny, protocol: tcp, port: 23}\n")
    with caplog.at_level(logging.INFO):
        a.edit()
    assert (a.publishes("published"), a.publishes("conflict")) == (2, 0), caplog.text
    assert etcd_snapshot(etcd).version == 3
    run(replicas)
    for r in replicas.values():
        assert r.shared.version == 3 and r.ssh_open() and not tcp(r.net, A, B, 23)


def test_an_edit_after_the_config_key_vanished_is_published_again(cluster, caplog):
    # etcd restarted with a wiped data dir (or the key deleted): the swap on the last revision
    # seen lost to nothing, was logged as "another replica published version ? first", and
    # every later edit failed the same way.
    etcd, replicas = cluster
    del etcd.keys[CONFIG_KEY], etcd.modified[CONFIG_KEY]
    a = replicas["a"]
    a.write(BASE, CLOSE_22)
    with caplog.at_level(logging.INFO):
        a.edit()
    assert a.publishes("published") == 1 and "version ?" not in caplog.text
    assert etcd_snapshot(etcd).version == 2
    run(replicas)
    assert all(r.shared.version == 2 and not r.ssh_open() for r in replicas.values())


def test_polling_an_unchanged_config_reads_no_value(cluster):
    # Every replica read the whole snapshot (up to 1 MiB) every 100 ms round: 8% of a core per
    # replica on a real etcd, 14 MB/s each, for a value that had not changed.
    etcd, replicas = cluster
    run(replicas)
    reads = etcd.values_read
    run(replicas, 10)
    assert etcd.values_read == reads
    replicas["a"].write(BASE, CLOSE_22)
    replicas["a"].edit()
    reads = etcd.values_read
    run(replicas, 10)
    assert etcd.values_read == reads + len(replicas)  # one read of the new version each
    assert all(r.shared.version == 2 for r in replicas.values())


def test_a_relative_flow_log_goes_next_to_each_replicas_own_config_not_the_private_copy(
    tmp_path,
):
    """flow_log.path is a file the controller writes: every replica writes it beside its own
    --config file (the folder it was started with), for the config it joined and for each
    version published later, and denied connections are logged there."""
    etcd = FakeEtcd()
    a = Replica("a", etcd, tmp_path, rules=CLOSE_22)
    b = Replica("b", etcd, tmp_path, rules=CLOSE_22)
    a.write(BASE + "flow_log: {path: logs/flows.jsonl}\n")
    for r in (a, b):
        (r.dir / "logs").mkdir()
        r.start()
        assert r.core.flow_log.settings.path == str(r.dir / "logs" / "flows.jsonl")
    assert not b.ssh_open()
    lines = (b.dir / "logs" / "flows.jsonl").read_text().splitlines()
    assert [json.loads(line)["dport"] for line in lines] == [22]
    a.write(BASE + "flow_log: {path: logs/denied.jsonl, rate: 5}\n")
    a.edit()
    run({"a": a, "b": b})
    assert [r.core.flow_log.settings for r in (a, b)] == [
        type(a.core.flow_log.settings)(str(r.dir / "logs" / "denied.jsonl"), 5) for r in (a, b)
    ]
    private = [f for r in (a, b) for _, _, files in os.walk(r.shared.folder) for f in files]
    assert not [f for f in private if f.endswith(".jsonl")], private
