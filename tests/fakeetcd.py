"""An in-memory etcd for the election's unit tests: leases expire on the test's clock, keys
carry create revisions from one growing counter, and `down` makes every call fail as an
unreachable etcd does (controller/cluster.py's Store, controller/sharedconfig.py's
ConfigStore: keys put without a lease carry their mod revision too)."""

from __future__ import annotations

from controller.cluster import StoreUnavailable


class FakeEtcd:
    def __init__(self) -> None:
        self.now = 0.0
        self.revision = 1
        self.down = False
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at)
        self.keys: dict[str, tuple[str, int, int]] = {}  # key -> (value, create rev, lease)
        self.modified: dict[str, int] = {}  # key -> mod revision, for keys without a lease
        self.puts = 0  # compare-and-swaps that put
        self.values_read = 0  # gets of a value (not of a revision alone)

    def _up(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")
        for lease, (_, expires) in list(self.leases.items()):
            if self.now >= expires:
                self.revoke(lease)

    def revoke(self, lease: int) -> None:
        self.leases.pop(lease, None)
        for key in [k for k, v in self.keys.items() if v[2] == lease]:
            del self.keys[key]
            self.revision += 1

    def grant(self, ttl: int) -> int:
        self._up()
        lease = len(self.leases) + 1000 + self.revision
        self.leases[lease] = (ttl, self.now + ttl)
        return lease

    def refresh(self, lease: int) -> bool:
        self._up()
        if lease not in self.leases:
            return False
        ttl = self.leases[lease][0]
        self.leases[lease] = (ttl, self.now + ttl)
        return True

    def create(self, key: str, value: str, lease: int) -> bool:
        self._up()
        if key in self.keys or lease not in self.leases:
            return False
        self.revision += 1
        self.keys[key] = (value, self.revision, lease)
        return True

    def get_prefix(self, prefix: str) -> dict[str, tuple[str, int]]:
        self._up()
        return {k: (v[0], v[1]) for k, v in self.keys.items() if k.startswith(prefix)}

    def release(self, key: str, revision: int) -> bool:
        self._up()
        if key not in self.keys or self.keys[key][1] != revision:
            return False
        del self.keys[key]
        self.modified.pop(key, None)
        self.revision += 1
        return True

    def get(self, key: str) -> tuple[str, int] | None:
        self._up()
        self.values_read += 1
        return (self.keys[key][0], self.modified[key]) if key in self.modified else None

    def mod_revision(self, key: str) -> int | None:
        self._up()
        return self.modified.get(key)

    def cas(self, key: str, value: str, revision: int) -> bool:
        self._up()
        if self.modified.get(key, 0) != revision:
            return False
        self.revision += 1
        self.puts += 1
        created = self.keys[key][1] if key in self.keys else self.revision
        self.keys[key] = (value, created, 0)
        self.modified[key] = self.revision
        return True
