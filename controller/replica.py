"""A replica's link to the cluster (`osken-manager --cluster URL --replica-id NAME`): the one
place with a thread and the etcd client. Every STEP seconds the thread runs the election
(controller/cluster.py) and posts what it saw into the core's event loop, where the role gate
(controller/roles.py) asks the switches for roles; it also reads the shared config key's
revision (the value only when it moved) and posts a new revision (controller/sharedconfig.py),
which the loop applies. Nothing else is touched from the thread.

Metrics: osken_cluster_role{dpid,replica} (1 master, 0 slave, -1 equal: as the switch
confirmed), osken_cluster_leader_changes_total{replica} (switches this replica became master
of), osken_cluster_etcd_up{replica} (1 while etcd answers); the shared config's are in
controller/sharedconfig.py.
"""

from __future__ import annotations

import itertools
import logging
import time

from os_ken.controller import event
from os_ken.lib import hub
from prometheus_client import Counter, Gauge

from controller.cluster import Election, Owner
from controller.core import Core
from controller.etcd import EtcdStore
from controller.metrics import Metrics
from controller.roles import RoleGate
from controller.sharedconfig import SharedConfig

LOG = logging.getLogger("osken_suite.replica")
STEP = 0.1  # seconds between election rounds
FIRST_ROLE_XID = 0x7000_0000  # role requests: apart from os-ken's xids and the core's
JOIN_TIMEOUT = 3.0  # seconds for a dead predecessor's member key to expire (TTL 1 s)
ROLE_VALUES = {"master": 1, "slave": 0, "equal": -1}


class EventOwnership(event.EventBase):
    """The election's latest view: dpid -> Owner."""

    def __init__(self, owners: dict[int, Owner]) -> None:
        super().__init__()
        self.owners = owners


class EventSharedConfig(event.EventBase):
    """The shared config key's value at a new mod revision."""

    def __init__(self, value: str, revision: int) -> None:
        super().__init__()
        self.value, self.revision = value, revision


class ClusterLink:
    """The election thread, the role gate and their metrics, for one CoreApp."""

    def __init__(self, urls: str, replica: str, metrics: Metrics, core: Core) -> None:
        """Raises StoreUnavailable when etcd does not answer (a start needs it once),
        DuplicateReplica when another live replica runs with `replica` as its id."""
        self.replica = replica
        self.store = EtcdStore(urls)
        # The event loop publishes with a client of its own: none is shared between threads.
        self.shared = SharedConfig(EtcdStore(urls), replica, core, metrics.registry)
        self.lldp_key = self.store.shared_secret()
        self.election = Election(replica)
        # A twin of this id would depose this replica on every write: refuse to start.
        self.election.join(self.store, time.monotonic, time.sleep, JOIN_TIMEOUT)
        xids = itertools.count(FIRST_ROLE_XID)
        self.gate = RoleGate(replica, lambda: next(xids))
        r = metrics.registry
        self.role = Gauge(
            "osken_cluster_role",
            "Role per switch (1 master, 0 slave, -1 equal)",
            ["dpid", "replica"],
            registry=r,
        )
        self.leader_changes = Counter(
            "osken_cluster_leader_changes",
            "Switches this replica became master of",
            ["replica"],
            registry=r,
        )
        self.etcd_up = Gauge(
            "osken_cluster_etcd_up", "1 while etcd answers", ["replica"], registry=r
        )

    def start(self, post) -> None:
        """Run the election every STEP seconds; `post(event)` hands its view to the loop."""
        hub.spawn(self._run, post)

    def _run(self, post) -> None:
        while True:
            started = time.monotonic()
            before = self.election.leader_changes
            self.election.eligible = not self.shared.behind
            # Monotonic: the election measures intervals, and a wall clock can step back.
            owners = self.election.step(self.store, set(self.gate.switches), time.monotonic())
            self.leader_changes.labels(self.replica).inc(self.election.leader_changes - before)
            self.etcd_up.labels(self.replica).set(int(self.election.reachable))
            post(EventOwnership(owners))
            # One get, and only when the election reached etcd: a down etcd costs one timeout.
            changed = self.shared.poll(self.store if self.election.reachable else None)
            if changed is not None:
                post(EventSharedConfig(*changed))
            hub.sleep(max(0.0, STEP - (time.monotonic() - started)))

    def update_gauges(self) -> None:
        """Set the role gauge of every switch this replica knows (per dpid and replica)."""
        for dpid, role in self.gate.roles().items():
            self.role.labels(f"{dpid:016x}", self.replica).set(ROLE_VALUES[role])
