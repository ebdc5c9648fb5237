"""etcd for the replicas: etcd3gw (etcd's JSON gateway, /v3/) behind the `Store` methods of
controller/cluster.py. Every failure becomes StoreUnavailable; endpoints are tried in turn."""

from __future__ import annotations

import base64
import os
from urllib.parse import urlsplit

from controller.cluster import StoreUnavailable

TIMEOUT = 0.5  # seconds per call: a stuck etcd must not hold a failover back
LLDP_KEY = "/osken/lldp-key"


def endpoints(urls: str) -> list[tuple[str, str, int]]:
    """`--cluster` text (URL[,URL...]) as (scheme, host, port) triples.

    >>> endpoints("http://127.0.0.1:2379,http://[::1]:2380")
    [('http', '127.0.0.1', 2379), ('http', '::1', 2380)]

    Raises:
        ValueError: an item that is not an http(s) URL with a host, naming it.
    """
    out = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an etcd client URL (http://HOST:PORT)")
        out.append((parts.scheme, parts.hostname, parts.port or 2379))
    return out


def _b64(text: str) -> str:
    """Keys and values as etcd's JSON gateway takes them."""
    return base64.b64encode(text.encode()).decode()


class EtcdStore:
    """The election's store on a real etcd (3.4 or 3.5)."""

    def __init__(self, urls: str, timeout: float = TIMEOUT) -> None:
        from etcd3gw.client import Etcd3Client

        self.clients = [
            Etcd3Client(host=h, port=p, protocol=s, timeout=timeout) for s, h, p in endpoints(urls)
        ]
        self._last = 0  # the index of the endpoint that answered last

    def _call(self, op):
        """`op(client)` on the endpoint that answered last, then on the others in turn: an
        endpoint that accepts connections but never answers costs its timeout once, not on
        every call. Raises StoreUnavailable naming every endpoint's failure."""
        errors = []
        order = self.clients[self._last :] + self.clients[: self._last]
        for client in order:
            try:
                result = op(client)
            except Exception as exc:  # requests' and etcd3gw's errors alike: try the next
                errors.append(f"{client.host}:{client.port}: {type(exc).__name__}")
                continue
            self._last = self.clients.index(client)
            return result
        raise StoreUnavailable("; ".join(errors))

    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its id. Raises the store's error when etcd is away."""
        return self._call(lambda c: c.lease(ttl=ttl).id)

    def refresh(self, lease: int) -> bool:
        """Keep lease `lease` alive; False if etcd no longer knows it (it expired)."""
        from etcd3gw.lease import Lease

        return self._call(lambda c: Lease(lease, c).refresh()) > 0

    def create(self, key: str, value: str, lease: int) -> bool:
        """Put `key` only if absent, bound to `lease`; True if this call created it."""
        from etcd3gw.lease import Lease

        return self._call(lambda c: c.create(key, value, lease=Lease(lease, c)))

    def get_prefix(self, prefix: str) -> dict[str, tuple[str, int]]:
        """Every key under `prefix`: key -> (value, its create revision)."""
        rows = self._call(lambda c: c.get_prefix(prefix))
        return {
            meta["key"].decode(): (value.decode(), int(meta["create_revision"]))
            for value, meta in rows
        }

    def release(self, key: str, revision: int) -> bool:
        """Delete `key` only if its create revision is still `revision`; True if this call
        deleted it. Raises StoreUnavailable."""
        compare = {"target": "CREATE", "create_revision": revision}
        return self._txn(key, compare, {"request_delete_range": {"key": _b64(key)}})

    def get(self, key: str) -> tuple[str, int] | None:
        """(value, mod revision) of `key`, or None when absent. Raises StoreUnavailable."""
        rows = self._call(lambda c: c.get(key, metadata=True))
        return (rows[0][0].decode(), int(rows[0][1]["mod_revision"])) if rows else None

    def mod_revision(self, key: str) -> int | None:
        """The mod revision of `key` (etcd's keys_only range: no value), or None when absent.
        Raises StoreUnavailable."""
        rows = self._call(lambda c: c.get(key, metadata=True, keys_only=True))
        return int(rows[0][1]["mod_revision"]) if rows else None

    def cas(self, key: str, value: str, revision: int) -> bool:
        """Put `key` only if its mod revision is still `revision` (0: absent); True if it was
        put. Raises StoreUnavailable."""
        put = {"request_put": {"key": _b64(key), "value": _b64(value)}}
        return self._txn(key, {"target": "MOD", "mod_revision": revision}, put)

    def _txn(self, key: str, compare: dict, then: dict) -> bool:
        """One etcd transaction: `then` if `key` compares EQUAL on `compare`; True if it ran."""
        txn = {
            "compare": [{"key": _b64(key), "result": "EQUAL", **compare}],
            "success": [then],
            "failure": [],
        }
        return bool(self._call(lambda c: c.transaction(txn)).get("succeeded", False))

    def shared_secret(self, key: str = LLDP_KEY, size: int = 32) -> bytes:
        """A random secret every replica shares (the LLDP probes' key): created once, then
        read. Raises StoreUnavailable."""
        self._call(lambda c: c.create(key, os.urandom(size).hex()))
        value, _ = self.get_prefix(key)[key]
        return bytes.fromhex(value)
