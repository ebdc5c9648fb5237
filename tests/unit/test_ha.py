"""Replicas on a fake etcd and fake switches that keep roles as Open vSwitch does
(controller/cluster.py, controller/roles.py, FakeSwitch.apply_from): one master per switch,
writes held until ROLE_REPLY, demotion on OFPBRC_IS_SLAVE, stale generation ids fenced,
failover within 3 s, no flap on rejoin, masters keep serving while etcd is down."""

from __future__ import annotations

import itertools

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from apps.l2_learning import COOKIE as L2_COOKIE
from controller.cluster import DuplicateReplica, Election, Owner
from controller.core import Core
from controller.flows import flow, flow_mod
from controller.pipeline import PIPELINE
from controller.roles import RoleGate
from tests.fakeetcd import FakeEtcd
from tests.fakenet import BROADCAST, FakeNetwork, frame, payload_for
from tests.fakeswitch import FakeSwitch
from tests.unit.test_l2 import core_with_l2

MASTER, SLAVE = ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE
STEP = 0.1  # seconds between election steps, as the replica's thread runs them


class Replica:
    def __init__(self, name: str) -> None:
        xids = itertools.count(0x100)
        self.name = name
        self.election = Election(name)
        self.gate = RoleGate(name, lambda: next(xids))
        self.alive = True
        self.promotions: list[int] = []
        self.connected: set[int] = set()


class Lab:
    """Replicas, switches and etcd on one clock; `run(seconds)` steps every live replica."""

    def __init__(self, names=("a", "b"), dpids=(1, 2, 3, 4)) -> None:
        self.etcd = FakeEtcd()
        self.replicas = {n: Replica(n) for n in names}
        self.switches = {d: FakeSwitch(d) for d in dpids}
        for r in self.replicas.values():
            self.connect(r)

    def connect(self, r: Replica) -> None:
        for d in self.switches:
            r.connected.add(d)
            self.wire(r, r.gate.connected(d))

    def wire(self, r: Replica, outbox: dict[int, list]) -> None:
        """Deliver a replica's messages (through its gate) and feed back replies and errors."""
        for dpid, msgs in r.gate.gate(outbox).items():
            sw = self.switches[dpid]
            for xid, role, gen in sw.apply_from(r.name, msgs):
                held, promoted = r.gate.role_reply(dpid, role, gen, xid)
                if promoted:
                    r.promotions.append(dpid)
                self.wire(r, held)
            errors, sw.errors = sw.errors, []
            for _, err_type, code in errors:
                r.gate.error(dpid, err_type, code)

    def step(self, r: Replica) -> None:
        owners = r.election.step(self.etcd, r.connected, self.etcd.now)
        self.wire(r, r.gate.ownership(owners))

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.etcd.now = round(self.etcd.now + STEP, 6)
            for r in self.replicas.values():
                if r.alive:
                    self.step(r)

    def masters(self) -> dict[int, list[str]]:
        """dpid -> the controllers the switch itself holds as master."""
        return {
            d: [c for c, role in sw.roles.items() if role == MASTER]
            for d, sw in self.switches.items()
        }


def a_flow_mod(port: int = 1):
    return flow_mod(flow(0, 10, {"in_port": port}, cookie=0x1))


def test_one_master_per_switch_and_spread():
    lab = Lab()
    lab.run(1.5)
    masters = lab.masters()
    assert all(len(m) == 1 for m in masters.values()), masters
    assert {m[0] for m in masters.values()} == {"a", "b"}  # spread across replicas
    for r in lab.replicas.values():
        for dpid, role in r.gate.roles().items():
            assert (role == "master") == (masters[dpid] == [r.name])


def test_generation_id_is_the_keys_create_revision_and_grows():
    lab = Lab(dpids=(1,))
    lab.run(1.5)
    first = lab.switches[1].election_id
    owner = lab.masters()[1][0]
    lab.replicas[owner].alive = False
    lab.run(3.0)
    assert lab.switches[1].election_id > first


def test_writes_wait_for_role_reply_then_go_out():
    gate = RoleGate("a", iter(range(1, 100)).__next__)
    out = gate.connected(7)
    requests = gate.ownership({7: Owner("a", 5)})
    assert [m.role for m in requests[7]] == [MASTER] and requests[7][0].generation_id == 5
    assert gate.gate({7: [a_flow_mod()]}) == {}  # held: no ROLE_REPLY yet
    held, promoted = gate.role_reply(7, MASTER, 5)
    assert promoted and len(held[7]) == 1
    assert gate.gate({7: [a_flow_mod()]})[7]  # master: writes pass
    assert out[7]  # the async config went out at connect


def test_slave_sends_only_reads_and_drops_writes():
    gate = RoleGate("b", iter(range(1, 100)).__next__)
    gate.connected(7)
    (req,) = gate.ownership({7: Owner("a", 5)})[7]
    assert (req.role, req.generation_id) == (SLAVE, 5)
    gate.role_reply(7, SLAVE, 5)
    assert gate.gate({7: [a_flow_mod()]}) == {}
    assert gate.dropped == 1


def test_kill_of_a_master_fails_over_within_3_s():
    lab = Lab()
    lab.run(1.5)
    dead = lab.replicas["a"]
    orphaned = [d for d, m in lab.masters().items() if m == ["a"]]
    assert orphaned
    dead.alive = False
    start = lab.etcd.now
    took = None
    while lab.etcd.now - start < 5:
        lab.run(STEP)
        if all(lab.masters()[d] == ["b"] for d in orphaned) and took is None:
            took = lab.etcd.now - start
    assert took is not None and took <= 3.0, took
    assert set(orphaned) <= set(lab.replicas["b"].promotions)


def test_a_frozen_master_is_fenced_and_does_not_flap():
    lab = Lab(dpids=(1,))
    lab.run(1.5)
    old = lab.replicas[lab.masters()[1][0]]
    new = next(r for r in lab.replicas.values() if r is not old)
    old.alive = False  # SIGSTOP past its lease
    lab.run(3.0)
    assert lab.masters()[1] == [new.name]
    before = lab.switches[1].flows()
    # SIGCONT: it still believes it is master and writes before its election runs again.
    assert old.gate.is_master(1)
    lab.wire(old, {1: [a_flow_mod(9)]})
    assert lab.switches[1].flows() == before  # the switch refused it
    assert not old.gate.is_master(1)  # it noticed: demoted
    # It asks for MASTER again with its old generation id: refused as stale.
    stale = old.election.owners[1].generation
    old.gate.switches[1].requested = SLAVE
    old.gate.switches[1].generation = -1
    lab.wire(old, old.gate.ownership({1: Owner(old.name, stale)}))
    assert lab.masters()[1] == [new.name]
    old.alive = True
    lab.run(2.0)  # back in the election: it sees the new master and stays a slave
    assert lab.masters()[1] == [new.name]
    assert old.gate.roles()[1] == "slave"


def test_a_rejoining_replica_takes_nothing_back():
    lab = Lab()
    lab.run(1.5)
    lab.replicas["a"].alive = False
    lab.run(3.0)
    assert all(m == ["b"] for m in lab.masters().values())
    back = lab.replicas["a"] = Replica("a")  # restarted: new process, new lease
    lab.connect(back)
    lab.run(3.0)
    assert all(m == ["b"] for m in lab.masters().values())
    assert back.promotions == []


def test_masters_keep_serving_while_etcd_is_down_and_settle_without_flap():
    lab = Lab()
    lab.run(1.5)
    masters = lab.masters()
    lab.etcd.down = True
    lab.run(5.0)
    assert lab.masters() == masters
    for r in lab.replicas.values():
        assert not r.election.reachable
        for dpid, m in masters.items():
            assert r.gate.is_master(dpid) == (m == [r.name])
            if m == [r.name]:
                assert r.gate.gate({dpid: [a_flow_mod()]})  # still writing
    lab.etcd.down = False  # every lease expired while etcd was away (its clock ran on)
    promotions = {n: list(r.promotions) for n, r in lab.replicas.items()}
    for _ in range(30):
        lab.run(STEP)
        assert lab.masters() == masters  # the incumbents claim their switches back at once
    assert {n: r.promotions for n, r in lab.replicas.items()} == promotions  # no flap


def test_resync_of_an_unchanged_switch_sends_no_flow_mods():
    net = FakeNetwork(Core())
    net.add_switch(1, 2)
    net.start()
    before = net.switches[1].flows()
    sent = len(net.switches[1].received)
    net.deliver(net.core.resync(1, net.now))
    new = net.switches[1].received[sent:]
    assert new and not [m for m in new if type(m).__name__ in ("OFPFlowMod", "OFPGroupMod")]
    assert net.switches[1].flows() == before


def test_cluster_flags_are_checked_before_start():
    import pytest

    from controller.cli import LaunchError, cluster_options, parse_args

    def opts(*argv):
        return cluster_options(parse_args([*argv, "apps/l2_learning.py"]))

    assert opts() == ("", "")
    assert opts("--cluster", "http://127.0.0.1:2379", "--replica-id", "a") == (
        "http://127.0.0.1:2379",
        "a",
    )
    for bad in (
        ["--cluster", "http://127.0.0.1:2379"],
        ["--replica-id", "a"],
        ["--cluster", "127.0.0.1:2379", "--replica-id", "a"],
    ):
        with pytest.raises(LaunchError):
            opts(*bad)


def test_etcd_outage_after_a_rejoin_does_not_hand_switches_to_their_preferred_replica():
    lab = Lab()
    lab.run(1.5)
    lab.replicas["a"].alive = False
    lab.run(3.0)  # b masters everything, including a's preferred switches
    back = lab.replicas["a"] = Replica("a")
    lab.connect(back)
    lab.run(3.0)
    masters = lab.masters()
    assert all(m == ["b"] for m in masters.values())
    lab.etcd.down = True
    lab.run(3.0)
    lab.etcd.down = False  # every lease expired meanwhile: all keys are free again
    for _ in range(30):
        lab.run(STEP)
        assert lab.masters() == masters
    assert back.promotions == []


def test_a_slow_incumbent_is_waited_for_after_an_etcd_outage():
    lab = Lab()
    lab.run(1.5)
    masters = lab.masters()
    lab.etcd.down = True
    lab.run(3.0)  # every lease expires meanwhile
    lab.etcd.down = False
    slow = lab.replicas["a"]  # its first round after etcd returns comes 1.5 s late (a loaded
    slow.alive = False  # machine, a long event-loop turn); it has not re-registered yet
    promotions = {n: list(r.promotions) for n, r in lab.replicas.items()}
    lab.run(1.5)
    slow.alive = True
    lab.run(2.0)
    assert lab.masters() == masters
    assert {n: r.promotions for n, r in lab.replicas.items()} == promotions  # no flap


def test_a_master_cut_off_from_a_switch_releases_it_to_a_replica_that_reaches_it(caplog):
    lab = Lab(dpids=(1,))
    lab.run(1.5)
    old = lab.replicas[lab.masters()[1][0]]
    new = next(r for r in lab.replicas.values() if r is not old)
    old.connected.discard(1)  # its connection closed; it is alive and in etcd
    old.gate.disconnected(1)
    assert "switch 0000000000000001: no longer master, reason: the connection closed" in (
        caplog.text
    )
    lab.switches[1].roles.pop(old.name)
    start = lab.etcd.now
    while lab.masters()[1] != [new.name] and lab.etcd.now - start < 10:
        lab.run(STEP)
    assert lab.masters()[1] == [new.name], lab.etcd.keys
    assert lab.etcd.now - start <= 3.5  # released after `grace`, claimed after 2 x `grace`
    assert "mastership released, reason: not connected" in caplog.text
    old.connected.add(1)  # it reconnects: a slave now, nothing taken back
    lab.wire(old, old.gate.connected(1))
    lab.run(2.0)
    assert lab.masters()[1] == [new.name] and old.gate.roles()[1] == "slave"


def test_release_deletes_only_the_key_it_held():
    etcd = FakeEtcd()
    lease = etcd.grant(1)
    assert etcd.create("/osken/masters/1", "a", lease)
    revision = etcd.get_prefix("/osken/masters/1")["/osken/masters/1"][1]
    assert not etcd.release("/osken/masters/1", revision + 1)
    assert etcd.release("/osken/masters/1", revision)
    assert etcd.get_prefix("/osken/masters/") == {}


def test_a_replica_behind_the_clusters_config_gives_up_its_switches_at_once(caplog):
    """controller/sharedconfig.py: a replica that cannot apply the version the others enforce
    must enforce nothing: it releases every switch and claims none until it is in step."""
    lab = Lab()
    lab.run(1.5)
    behind = lab.replicas["a"]
    assert "a" in {m[0] for m in lab.masters().values()}
    behind.election.eligible = False
    lab.run(1.0)  # released at once; b claims after 2 x grace (a is still a live member)
    lab.run(1.5)
    assert all(m == ["b"] for m in lab.masters().values()), lab.masters()
    assert "reason: this replica cannot enforce the cluster's config version" in caplog.text
    behind.election.eligible = True  # in step again: takes nothing back
    lab.run(2.0)
    assert all(m == ["b"] for m in lab.masters().values())


def test_a_stale_master_reply_does_not_open_the_gate_after_a_slave_request():
    gate = RoleGate("a", iter(range(1, 100)).__next__)
    gate.connected(7)
    (master_req,) = gate.ownership({7: Owner("a", 5)})[7]
    (slave_req,) = gate.ownership({7: Owner("b", 6)})[7]  # b took it before the reply came
    held, promoted = gate.role_reply(7, MASTER, 5, master_req.xid)  # late: ignored
    assert not promoted and not gate.is_master(7)
    assert gate.gate({7: [a_flow_mod()]}) == {}
    gate.role_reply(7, SLAVE, 6, slave_req.xid)
    assert gate.roles()[7] == "slave"


def test_an_election_whose_clock_steps_back_keeps_its_lease():
    etcd = FakeEtcd()
    e = Election("a")
    for t in (0.0, 0.4, 0.8):
        etcd.now = t
        e.step(etcd, {1}, t)
    lease = e.lease
    for i in range(1, 20):  # the clock it is given goes back an hour; etcd's keeps running
        etcd.now = 0.8 + i * 0.1
        e.step(etcd, {1}, 0.8 - 3600 + i * 0.1)
    assert e.lease == lease and lease in etcd.leases  # refreshed all along


def test_the_store_starts_at_the_endpoint_that_answered_last():
    from controller.etcd import EtcdStore

    class Client:
        def __init__(self, host, answers):
            self.host, self.port, self.answers, self.calls = host, 2379, answers, 0

        def get_prefix(self, prefix):
            self.calls += 1
            if not self.answers:
                raise TimeoutError("silent")
            return []

    store = EtcdStore("http://10.0.0.1:2379,http://10.0.0.2:2379")
    silent, good = Client("10.0.0.1", False), Client("10.0.0.2", True)
    store.clients = [silent, good]
    for _ in range(5):
        assert store.get_prefix("/osken/") == {}
    assert (silent.calls, good.calls) == (1, 5)  # the silent one cost one timeout, not five


def test_a_second_replica_with_the_same_id_is_refused_and_claims_nothing():
    # Two replicas named "a" both took every switch "a" holds as theirs and deposed each other
    # on every write (seen on Open vSwitch: 6 demotions each in 8 s).
    lab = Lab(names=("a",), dpids=(1,))
    lab.run(3)
    twin = Election("a")

    def sleep(seconds):
        lab.run(seconds)  # the live "a" keeps its lease meanwhile

    with pytest.raises(DuplicateReplica, match="another replica runs with --replica-id 'a'"):
        twin.join(lab.etcd, lambda: lab.etcd.now, sleep, 3.0)
    assert twin.step(lab.etcd, {1, 2}, lab.etcd.now) == {1: Owner("a", 3)}  # reads, no claim
    assert "/osken/masters/0000000000000002" not in lab.etcd.keys


def test_a_replica_restarted_at_once_waits_for_its_old_lease_then_joins():
    lab = Lab(names=("a",), dpids=(1,))
    lab.run(3)
    lab.replicas["a"].alive = False  # kill -9: its lease expires within the TTL
    again = Election("a")
    again.join(lab.etcd, lambda: lab.etcd.now, lambda s: lab.run(s), 3.0)
    assert again.member and lab.etcd.now < 3 + 1.5


def test_a_generation_refused_as_stale_is_logged_once_with_its_likely_cause(caplog):
    # etcd restarted with a wiped data dir: revisions start again below the generation ids
    # Open vSwitch has accepted, every MASTER request is refused as stale every 100 ms, and
    # the log said only "the switch refused our role request (code 2)" once, or nothing.
    lab = Lab(names=("a",), dpids=(1,))
    lab.etcd.revision = 100  # a cluster that has run a while
    lab.run(3)
    assert lab.masters() == {1: ["a"]}
    lab.etcd.keys.clear()
    lab.etcd.leases.clear()
    lab.etcd.revision = 1
    with caplog.at_level("ERROR"):
        lab.run(2)
    stale = [r for r in caplog.records if "refused generation id" in r.getMessage()]
    assert len(stale) == 1, caplog.text
    assert "etcd restarted with a wiped data dir" in stale[0].getMessage()


class ReplicaView(FakeNetwork):
    """A second replica on the same fake switches: its writes pass its role gate, so as a
    slave they are dropped (controller/roles.py); reads pass. In the lab a slave hears the
    master's LLDP probes (signed with the key they share); here its own probes go out."""

    def __init__(self, core: Core, name: str, master: FakeNetwork) -> None:
        super().__init__(core)
        self.switches, self.wires, self.hosts = master.switches, master.wires, master.hosts
        self.now = master.now
        xids = itertools.count(0x100)
        self.gate = RoleGate(name, lambda: next(xids))

    def deliver(self, outbox, delivery=None) -> None:
        probes = {d: [m for m in msgs if lldp(m)] for d, msgs in outbox.items()}
        gated = self.gate.gate({d: [m for m in msgs if not lldp(m)] for d, msgs in outbox.items()})
        for d, msgs in probes.items():
            gated[d] = gated.get(d, []) + msgs
        super().deliver(gated, delivery)


def lldp(msg) -> bool:
    return isinstance(msg, parser.OFPPacketOut) and msg.data[12:14] == b"\x88\xcc"


def test_a_takeover_keeps_the_hosts_the_old_master_learned_unheard_by_the_new_one():
    """A replica that joins while the master runs hears a new host's first frame while its
    port is still on probation, and ignores it; the master learns it and writes its entries,
    after which the host sends no packet-in again. When that replica takes over, its repair
    reads the host from the switch, as a restart does, and keeps it: no flow-mod, where it
    used to delete the host's entries (what the old master learned and the new one had not)."""
    host, other = "00:00:00:00:00:01", "00:00:00:00:00:02"
    master = FakeNetwork(core_with_l2())
    sw = master.add_switch(1, 2)
    master.add_host(host, 1, 1)
    master.add_host(other, 1, 2)
    master.start()
    slave = ReplicaView(core_with_l2(), "b", master)
    slave.gate.connected(1)
    slave.connect()  # reads the switch; its ports are on probation for a second
    data = frame(BROADCAST, host, 0x0806, payload_for(0x0806, {"arp_sha": host}))
    master.inject(host, data)  # learned and installed by the master...
    classify = slave.core.pipeline.table("classify")
    slave.deliver(slave.core.packet_in(1, 1, data, classify, L2_COOKIE, slave.now))  # ...not here
    slave.advance(3.0)
    assert slave.core.ready(1)
    data = frame(BROADCAST, other, 0x0806, payload_for(0x0806, {"arp_sha": other}))
    master.inject(other, data)  # after the probation: heard by both
    slave.deliver(slave.core.packet_in(1, 2, data, classify, L2_COOKIE, slave.now))
    before, sent = sw.flows(), len(sw.received)
    held, promoted = slave.gate.role_reply(1, MASTER, 9)  # the master died: this one takes over
    assert promoted and not held
    slave.deliver(slave.core.resync(1, slave.now))
    writes = [type(m).__name__ for m in sw.received[sent:]]
    assert not [w for w in writes if "Mod" in w or "Bundle" in w], writes
    assert sw.flows() == before
    assert master.send(other, host).hosts == [host]  # still forwarded, not flooded


def test_a_takeover_of_several_switches_keeps_a_host_read_from_a_later_one():
    """The same across two switches, whichever is read first: the host is on switch 2, and the
    repair of switch 1 (its forwarding entry toward the host) waits for switch 2's learned
    entry to be read back."""
    host, other = "00:00:00:00:00:01", "00:00:00:00:00:02"
    master = FakeNetwork(core_with_l2())
    for dpid in (1, 2):
        master.add_switch(dpid, 2)
    master.link(1, 2, 2, 2)
    master.add_host(other, 1, 1)
    master.add_host(host, 2, 1)
    master.start()
    slave = ReplicaView(core_with_l2(), "b", master)
    for dpid in (1, 2):
        slave.gate.connected(dpid)
    slave.connect()
    data = frame(BROADCAST, host, 0x0806, payload_for(0x0806, {"arp_sha": host}))
    master.inject(host, data)  # learned by the master; the new replica is still settling
    classify = slave.core.pipeline.table("classify")
    slave.deliver(slave.core.packet_in(2, 1, data, classify, L2_COOKIE, slave.now))
    slave.advance(3.0)
    assert slave.core.ready(1) and slave.core.ready(2) and slave.core.topology.links
    before = {d: sw.flows() for d, sw in master.switches.items()}
    sent = {d: len(sw.received) for d, sw in master.switches.items()}
    rereads = {}
    for dpid in (1, 2):  # both switches confirm the new master before either is read back
        assert slave.gate.role_reply(dpid, MASTER, 9)[1]
        rereads[dpid] = slave.core.resync(dpid, slave.now)[dpid]
    for dpid in (1, 2):  # switch 1 answers first
        slave.deliver({dpid: rereads[dpid]})
    for dpid, sw in master.switches.items():
        writes = [type(m).__name__ for m in sw.received[sent[dpid] :]]
        assert not [w for w in writes if "Mod" in w or "Bundle" in w], (dpid, writes)
        assert sw.flows() == before[dpid]
    assert master.send(other, host).hosts == [host]


def test_a_switch_lost_during_a_takeover_does_not_hold_up_the_others_repair():
    """Switch 2 disconnects before answering its re-read: switch 1, read and waiting for it,
    is repaired then (a stray forwarding entry on it goes)."""
    net = FakeNetwork(core_with_l2())
    for dpid in (1, 2):
        net.add_switch(dpid, 2)
    net.link(1, 2, 2, 2)
    net.add_host("00:00:00:00:00:01", 1, 1)
    net.start()
    net.switches[1].apply(
        [
            flow_mod(
                flow(
                    PIPELINE.table("forwarding"),
                    5,
                    {"eth_dst": "00:00:00:00:00:09"},
                    cookie=L2_COOKIE,
                )
            )
        ]
    )
    assert net.core.resync(2, net.now)[2]  # its re-read is asked and never answered
    net.deliver(net.core.resync(1, net.now))
    assert any(f.priority == 5 for f in net.switches[1].flows())  # waiting for switch 2
    net.disconnect(2)
    assert not any(f.priority == 5 for f in net.switches[1].flows())  # repaired
