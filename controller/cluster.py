"""Who masters which switch: an election per switch on etcd, as plain Python taking `now`.

Each replica holds one lease (TTL `ttl` seconds, refreshed every ttl/3) and, under it, a member
key `/osken/members/<replica>`. For every switch it is connected to, the master is whoever
holds `/osken/masters/<dpid as 16 hex digits>` (value: the replica id), created only if absent,
under the holder's lease: when the holder dies its lease expires and the key goes with it. The
key's create revision is the switch's OpenFlow generation id: etcd revisions only grow, so a
later master always sends a larger one and Open vSwitch refuses the earlier master's
(OFPRRFC_STALE), which fences it (docs/ha.md).

Spread: a free switch is claimed at once by its preferred replica (rendezvous hashing over the
live members), by any other after `grace` seconds free; a replica claims nothing in its first
`grace` seconds, so that replicas started together see each other. A held key is never taken
over, so a replica that rejoins takes nothing back (no flap). Replica ids must be unique: a
replica joins only once it holds its member key (`join`), and claims nothing while another
lease holds it.

No flap after an etcd outage: when etcd was away longer than the TTL, every key went with its
lease. The last master of a switch reclaims it at once; every other replica claims nothing for
`ttl + grace` seconds after etcd answers it again, and leaves a switch alone for 2 x `grace`
seconds while its last master is a live member (it reclaims at once when it still can: a slow
incumbent is waited for, a dead one, whose member key expired with its masterships, is not).

A master that loses its connection to a switch for `grace` seconds releases the switch's key
(only that key, by its create revision), so a connected replica can take it: a switch is never
held by a replica that cannot reach it. A replica that is not `eligible` (it could not apply
the config version the others enforce, controller/sharedconfig.py) releases every key it holds
at once and claims none until it is eligible again.

The store is anything with the `Store` methods (controller/etcd.py wraps etcd3gw; the tests use
a fake with their clock). Calls that fail raise StoreUnavailable: the last ownership seen is
kept (a master keeps serving while etcd is away; the generation id is its fence).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

LOG = logging.getLogger("osken_suite.cluster")

MEMBERS = "/osken/members/"
MASTERS = "/osken/masters/"
DEFAULT_TTL = 1  # seconds: etcd's shortest lease with the lab's timeouts
DEFAULT_GRACE = 1.0  # seconds a free switch waits for its preferred replica


class StoreUnavailable(Exception):
    """The store did not answer (down, partitioned, timed out)."""


class DuplicateReplica(Exception):
    """Another live replica holds this replica's member key: two replicas share one
    --replica-id, would both take the same switches as master and depose each other on every
    write."""


class Store(Protocol):
    """The few etcd operations the election needs (etcd v3 semantics)."""

    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its id."""

    def refresh(self, lease: int) -> bool:
        """Keep the lease alive; False if it no longer exists (expired or revoked)."""

    def create(self, key: str, value: str, lease: int) -> bool:
        """Put `key` under `lease` only if absent; True if this call created it."""

    def get_prefix(self, prefix: str) -> dict[str, tuple[str, int]]:
        """key -> (value, create revision) for every key under `prefix`."""

    def release(self, key: str, revision: int) -> bool:
        """Delete `key` only if its create revision is `revision`; True if this call did."""


def master_key(dpid: int) -> str:
    """The etcd key whose holder is switch `dpid`'s master (16 hex digits)."""
    return f"{MASTERS}{dpid:016x}"


def preferred(dpid: int, members: list[str]) -> str | None:
    """The replica a free switch goes to first: highest rendezvous hash of (replica, dpid).

    >>> preferred(1, ["a", "b"]) in ("a", "b"), preferred(1, [])
    (True, None)
    """
    if not members:
        return None
    return max(members, key=lambda m: hashlib.sha256(f"{m}/{dpid:016x}".encode()).digest())


@dataclass(frozen=True)
class Owner:
    """The master of a switch: its replica id and the generation id it must send."""

    replica: str
    generation: int


@dataclass
class Election:
    """One replica's side of the per-switch elections. Call `step` every ~100 ms."""

    replica: str
    ttl: int = DEFAULT_TTL
    grace: float = DEFAULT_GRACE
    lease: int | None = None
    reachable: bool = False
    owners: dict[int, Owner] = field(default_factory=dict)  # last seen, per connected switch
    _refreshed: float = float("-inf")
    _hold_until: float = float("inf")  # no claims of others' switches before (join, outage)
    _free_since: dict[int, float] = field(default_factory=dict)
    _away_since: dict[int, float] = field(default_factory=dict)  # held by us, not connected
    leader_changes: int = 0  # switches this replica became master of
    eligible: bool = True  # False: hold no switch (it cannot enforce the cluster's config)
    member: bool = False  # this replica holds its member key under its own lease
    _member_lost: bool = False  # the lease expired while holding it (logged if now taken)

    def join(self, store: Store, clock, sleep, timeout: float) -> None:
        """Before the first `step`: take the lease and the member key. A key held by a dead
        replica of the same id (restarted at once) expires with its lease: wait for that, up
        to `timeout` seconds of `clock()` (seconds), sleeping with `sleep(seconds)`.

        Raises:
            DuplicateReplica: the key is still held after `timeout`: another live replica
                runs with this id.
            StoreUnavailable: etcd does not answer.
        """
        start = clock()
        self._keep_lease(store, start)
        while not self.member:
            if clock() - start >= timeout:
                raise DuplicateReplica(
                    f"another replica runs with --replica-id {self.replica!r}: its member key "
                    f"{MEMBERS}{self.replica} is held under a live lease; give each replica "
                    "its own id"
                )
            sleep(self.ttl / 10)
            self._keep_lease(store, clock())

    def step(self, store: Store, dpids: set[int], now: float) -> dict[int, Owner]:
        """Refresh the lease, read the masters, claim free switches, release the ones we hold
        but have not been connected to for `grace` seconds; the owners per switch (of `dpids`)
        as now known. Never raises: an unreachable store keeps the last view."""
        try:
            self._keep_lease(store, now)
            masters = store.get_prefix(MASTERS)
            members = sorted(k[len(MEMBERS) :] for k in store.get_prefix(MEMBERS))
            if not self.reachable:  # joined, or etcd is back: see who is there first
                back = self._hold_until != float("inf")
                self._hold_until = now + (self.ttl + self.grace if back else self.grace)
            owners = {}
            for dpid in sorted(dpids):
                held = masters.get(master_key(dpid))
                if held is None and self.eligible and self.member:
                    held = self._claim(store, dpid, members, now)
                else:
                    self._free_since.pop(dpid, None)
                if held is not None:
                    owners[dpid] = Owner(held[0], held[1])
            self._release_unreachable(store, masters, dpids, now)
        except StoreUnavailable as exc:
            if self.reachable:
                LOG.warning("etcd unreachable (%s): roles stay as they are", exc)
            self.reachable = False
            return {d: o for d, o in self.owners.items() if d in dpids}
        if not self.reachable:
            LOG.info("etcd reachable")
        self.reachable = True
        for dpid, owner in owners.items():
            if owner.replica == self.replica and self.owners.get(dpid) != owner:
                self.leader_changes += 1
        self.owners = owners
        return dict(owners)

    def _keep_lease(self, store: Store, now: float) -> None:
        # (`now` before the last refresh: a clock stepped back; refresh rather than wait.)
        if self.lease is not None and not 0 <= now - self._refreshed < self.ttl / 3:
            if store.refresh(self.lease):
                self._refreshed = now
            else:
                LOG.warning(
                    "replica %s: lease %x expired; its masterships are gone",
                    self.replica,
                    self.lease,
                )
                self.lease, self.member, self._member_lost = None, False, self.member
        if self.lease is None:
            self.lease = store.grant(self.ttl)
            self._refreshed = now
        if not self.member:  # held by a twin (or a dead replica's lease, for up to the TTL)
            self.member = store.create(MEMBERS + self.replica, self.replica, self.lease)
            if not self.member and self._member_lost:
                self._member_lost = False  # said once: join() raises, a running replica waits
                LOG.error(
                    "replica %s: the member key %s%s is held by another lease: "
                    "claiming no switch while it is",
                    self.replica,
                    MEMBERS,
                    self.replica,
                )

    def _claim(
        self, store: Store, dpid: int, members: list[str], now: float
    ) -> tuple[str, int] | None:
        since = self._free_since.setdefault(dpid, now)
        last = self.owners.get(dpid)
        if last is None or last.replica != self.replica:  # the incumbent reclaims at once
            wait = 0.0 if preferred(dpid, members) == self.replica else self.grace
            if last is not None and last.replica in members:  # alive: it reclaims if it can
                wait = max(wait, 2 * self.grace)
            if now < self._hold_until or now - max(since, self._hold_until) < wait:
                return None
        assert self.lease is not None
        if store.create(master_key(dpid), self.replica, self.lease):
            self._free_since.pop(dpid, None)
        return store.get_prefix(master_key(dpid)).get(master_key(dpid))

    def _release_unreachable(
        self, store: Store, masters: dict[str, tuple[str, int]], dpids: set[int], now: float
    ) -> None:
        mine = {
            int(key[len(MASTERS) :], 16): revision
            for key, (holder, revision) in masters.items()
            if holder == self.replica
        }
        for dpid in set(self._away_since) - set(mine).difference(dpids):
            del self._away_since[dpid]
        for dpid, revision in mine.items():
            if not self.eligible:
                if store.release(master_key(dpid), revision):
                    LOG.warning(
                        "switch %016x: mastership released, reason: this replica cannot "
                        "enforce the cluster's config version",
                        dpid,
                    )
                continue
            if dpid in dpids:
                continue
            away = self._away_since.setdefault(dpid, now)
            if now - away >= self.grace and store.release(master_key(dpid), revision):
                LOG.warning(
                    "switch %016x: mastership released, reason: not connected for %.1f s",
                    dpid,
                    now - away,
                )
                del self._away_since[dpid]
