"""The replicas' shared config (`--cluster`, docs/ha.md): etcd holds it, every replica enforces it.

etcd's key `/osken/config` holds a snapshot: the config file and every file it reads (rules,
routing, policy files and listed folders), as text under their paths relative to a common root,
with a version, a sha256 digest over the files and the replica that published it. A replica
materializes a snapshot into a private folder (the same relative layout, so relative
references and `..` keep working) and loads it there with the normal loader.

- **Publish** (SIGHUP or a settled file edit, at any replica): the local files are loaded and
  fully checked (`Core.parse`: the check `Core.reload` runs, without applying), then the
  snapshot is materialized and checked again as every replica will read it; only then is it
  put with a compare-and-swap on the mod revision last seen (etcd transaction). Nothing is
  applied here: the publisher applies it as every other replica does, once read back.
- **Apply**: the replica's cluster thread reads the key every round (one get) and hands a new
  revision to the event loop (`SharedConfig.observe`), which reloads through `Core.reload`:
  atomically, or not at all (logged and counted; the running config stays).
- A config the check refuses is logged (file, line, field) and never published: nothing
  changes anywhere. A compare-and-swap lost to the same files is a success; lost to other
  files, it is logged naming the winner, and the winner's version is applied. etcd unreachable:
  the edit stays pending and is retried (with the same compare-and-swap) once etcd answers.
- A config that names a file by an absolute path cannot be shared (every replica would read
  its own copy): publishing it is refused, naming the file and line.

Metrics: `osken_cluster_config_version{replica}` (the version enforced),
`osken_cluster_config_publish_total{replica,result}` (published, same, conflict, rejected,
unavailable), `osken_cluster_config_apply_failures_total{replica}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.cluster import StoreUnavailable
from controller.config import Config, ConfigError, load_config
from controller.core import Core, Outbox
from controller.inputs import read_text

LOG = logging.getLogger("osken_suite.sharedconfig")
CONFIG_KEY = "/osken/config"
MAX_SNAPSHOT_BYTES = 1 << 20  # etcd refuses requests over 1.5 MiB (--max-request-bytes)
PUBLISH_RESULTS = ("published", "same", "conflict", "rejected", "unavailable")


class ConfigStore(Protocol):
    """The etcd operations the shared config needs (etcd v3 semantics); both raise
    StoreUnavailable when etcd does not answer."""

    def get(self, key: str) -> tuple[str, int] | None:
        """(value, mod revision) of `key`, or None when absent."""

    def mod_revision(self, key: str) -> int | None:
        """The mod revision of `key` without its value, or None when absent."""

    def cas(self, key: str, value: str, revision: int) -> bool:
        """Put `key` only if its mod revision is `revision` (0: absent); True if it did."""


@dataclass(frozen=True)
class Snapshot:
    """A whole config as etcd holds it: `files` maps paths relative to a common root (with `/`)
    to their text, `dirs` are the folders it lists (they exist even when empty), `entry` is
    the config file's relative path; `digest` is `digest_of(entry, files, dirs)`."""

    version: int
    digest: str
    entry: str
    files: dict[str, str]
    dirs: tuple[str, ...]
    by: str

    def to_json(self) -> str:
        """The etcd value (JSON)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """Read an etcd value back.

        Raises:
            ValueError: not a snapshot, a path outside its root, or a digest that does not
                match the files.
        """
        try:
            raw = json.loads(text)
            snap = cls(
                int(raw["version"]),
                str(raw["digest"]),
                str(raw["entry"]),
                {str(k): str(v) for k, v in raw["files"].items()},
                tuple(str(d) for d in raw["dirs"]),
                str(raw["by"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a config snapshot ({type(exc).__name__}: {exc})") from None
        for rel in [snap.entry, *snap.files, *snap.dirs]:
            if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
                raise ValueError(f"path {rel!r} leaves the snapshot's folder")
        if snap.entry not in snap.files:
            raise ValueError(f"the config file {snap.entry!r} is not among its files")
        if digest_of(snap.entry, snap.files, snap.dirs) != snap.digest:
            raise ValueError("the digest does not match the files")
        return snap


def digest_of(entry: str, files: dict[str, str], dirs: tuple[str, ...]) -> str:
    """sha256 (hex) over the config's relative paths and texts: equal files, equal digest,
    wherever each replica keeps them."""
    canonical = json.dumps({"entry": entry, "files": files, "dirs": sorted(dirs)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def snapshot(config: Config, version: int, by: str) -> Snapshot:
    """The snapshot of a loaded and parsed `config` (its `files()`: parsing adds the files
    the apps read), read from disk now.

    Raises:
        ConfigError: a file cannot be read (`read_text`'s gates), or the snapshot is larger
            than MAX_SNAPSHOT_BYTES.
    """
    assert config.path, "a config without a file has nothing to share"
    paths = [os.path.abspath(p) for p in config.files()]
    root = common_root(config)
    files, dirs = {}, []
    for path in paths:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if os.path.isdir(path):
            dirs.append(rel)
        else:
            files[rel] = read_text(path)
    entry = os.path.relpath(paths[0], root).replace(os.sep, "/")
    snap = Snapshot(version, digest_of(entry, files, tuple(dirs)), entry, files, tuple(dirs), by)
    size = len(snap.to_json().encode())
    if size > MAX_SNAPSHOT_BYTES:
        raise config.error(
            (),
            f"too large to share through etcd: {size} bytes with the files it reads, "
            f"at most {MAX_SNAPSHOT_BYTES}",
        )
    return snap


def common_root(config: Config) -> str:
    """The deepest folder holding the config file and every file it reads."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in config.files()])


def materialize(snap: Snapshot, folder: str) -> str:
    """Write `snap` into `folder` (emptied first), in its relative layout; the config file's
    path there."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for rel in snap.dirs:
        os.makedirs(os.path.join(folder, rel), exist_ok=True)
    for rel, text in snap.files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return os.path.join(folder, snap.entry)


def _located(local: Config, snap: Snapshot, needle: str, message: str) -> ConfigError:
    """A ConfigError at the first line of the local files that mentions `needle`."""
    root = common_root(local)
    for rel, text in snap.files.items():
        at = text.find(needle)
        if at >= 0:
            return ConfigError(os.path.join(root, rel), text.count("\n", 0, at) + 1, "", message)
    return ConfigError(local.path or "<config>", None, "", message)


class SharedConfig:
    """One replica's side of the shared config. Everything runs in the core's event loop
    except `poll`, which the cluster thread calls each round.

    Parameters
    ----------
    store : ConfigStore
        The loop's etcd client (publishing blocks the loop for at most its timeout per
        endpoint, 0.5 s with controller/etcd.py).
    replica : str
        This replica's id (`--replica-id`).
    core : Core
        The core whose config is shared: `parse` checks a config, `reload` applies one.
    registry : CollectorRegistry
        Where the metrics go (the core's).
    """

    def __init__(
        self, store: ConfigStore, replica: str, core: Core, registry: CollectorRegistry
    ) -> None:
        self.store, self.replica, self.core = store, replica, core
        self.folder = tempfile.mkdtemp(prefix=f"osken-config-{replica}-")
        self.version, self.digest = 0, ""  # what this replica enforces (0: nothing shared yet)
        self.seen: tuple[int, int, str] = (0, 0, "")  # etcd's (mod revision, version, digest)
        self.local: Config | None = None  # the local config last read, checked or not
        self.pending: tuple[Snapshot, int] | None = None  # (snapshot, revision) to publish
        self.reachable = True  # the thread's last get answered
        self._polled: int | None = None  # the revision the thread last handed over
        self.behind = False  # a version the others enforce could not be applied here
        self._published = ""  # the digest of this replica's last published edit
        self.version_gauge = Gauge(
            "osken_cluster_config_version",
            "The shared config version this replica enforces",
            ["replica"],
            registry=registry,
        )
        self.publishes = Counter(
            "osken_cluster_config_publish",
            "Config publishes from this replica, by result",
            ["replica", "result"],
            registry=registry,
        )
        self.apply_failures = Counter(
            "osken_cluster_config_apply_failures",
            "Shared config versions this replica could not apply",
            ["replica"],
            registry=registry,
        )
        self.version_gauge.labels(replica).set(0)
        for result in PUBLISH_RESULTS:
            self.publishes.labels(replica, result)

    # --- start ---------------------------------------------------------------------------------

    def join(self, local: Config) -> Config:
        """At start, before the event loop runs: the config to start with. etcd's, if it has
        one (a warning when the local files differ); else the local config, published as
        version 1 (if another replica publishes first, its config).

        Raises:
            ConfigError: the local config cannot be shared (checked as `publish` does), or
                etcd's does not check here (e.g. an app it configures is not loaded).
            StoreUnavailable: etcd does not answer.
        """
        self.local = local
        current = self.store.get(CONFIG_KEY)
        mine = None
        if local.path and current is None:
            mine = self._checked(local, 1)
            if self.store.cas(CONFIG_KEY, mine.to_json(), 0):
                LOG.info("published the local config %s as version 1", local.path)
            current = self.store.get(CONFIG_KEY)
        elif local.path:
            try:  # only to compare: etcd's config is the one enforced
                mine = snapshot(self.core.parse(local, warn=False).config, 0, self.replica)
            except ConfigError as exc:
                LOG.warning("the local config cannot be compared with etcd's: %s", exc)
        if current is None:  # no config anywhere yet: run with none
            return Config()
        value, revision = current
        try:
            snap = Snapshot.from_json(value)
        except ValueError as exc:
            raise ConfigError(CONFIG_KEY, None, "", f"etcd's config: {exc}") from None
        config = self._load(snap)
        try:
            self.core.parse(config)
        except ConfigError as exc:
            raise ConfigError(
                exc.path,
                exc.line,
                exc.where,
                f"{exc.message} (the cluster's version "
                f"{snap.version}, published by {snap.by}, does not check on this replica)",
            ) from None
        if mine is not None and mine.digest != snap.digest:
            LOG.warning(
                "the local config %s differs from the cluster's version %d (digest %s, by %s): "
                "enforcing the cluster's; SIGHUP to publish the local files",
                local.path,
                snap.version,
                snap.digest[:12],
                snap.by,
            )
        self._enforce(snap)
        self.seen = (revision, snap.version, snap.digest)
        return config

    # --- publish (event loop) ------------------------------------------------------------------

    def publish(self, loader: Callable[[], Config], why: str) -> None:
        """Read the local config, check all of it, and publish it as the next version
        (compare-and-swap on the revision last seen). Never raises; see the module's doc."""
        try:
            local = self.local = loader()
            snap = self._checked(local, self.seen[1] + 1)
        except ConfigError as exc:
            self._count("rejected")
            LOG.error(
                "%s: config rejected, not published; version %d stays in force on every "
                "replica: %s",
                why,
                self.version,
                exc,
            )
            return
        if snap.digest == self.seen[2]:
            LOG.info("%s: the config is etcd's version %d already", why, self.seen[1])
            self.pending = None
            return
        self.pending = (snap, self.seen[0])
        self._try_publish()

    def retry(self) -> None:
        """Publish a pending edit again once etcd answers (call it every tick)."""
        if self.pending is not None and self.reachable:
            self._try_publish()

    def _try_publish(self) -> None:
        assert self.pending is not None
        snap, revision = self.pending
        try:
            won = self.store.cas(CONFIG_KEY, snap.to_json(), revision)
            current = None if won else self.store.get(CONFIG_KEY)
        except StoreUnavailable as exc:
            self._count("unavailable")
            LOG.warning(
                "config version %d not published, etcd does not answer (%s): nothing changed "
                "on any replica; retried when etcd answers",
                snap.version,
                exc,
            )
            return
        self.pending = None
        if won:
            self._published = snap.digest
            self._count("published")
            LOG.info("published config version %d (digest %s)", snap.version, snap.digest[:12])
            return
        if current is None:  # the key is gone (etcd wiped, or deleted): nothing to overwrite
            self.pending = (snap, 0)
            self._try_publish()
            return
        winner = _parse(current[0])
        if winner is not None and (winner.by, winner.digest) == (self.replica, self._published):
            # Lost to this replica's own last edit, not read back yet: it was seen.
            self.pending = (replace(snap, version=winner.version + 1), current[1])
            self._try_publish()
            return
        if winner is not None and winner.digest == snap.digest:  # the same files: done
            self._count("same")
            LOG.info(
                "config version %d (the same files) was published by %s", winner.version, winner.by
            )
            return
        self._count("conflict")
        LOG.error(
            "config edit not published: %s published version %s first (digest %s); it is "
            "applied instead. To publish this edit on top of it, SIGHUP this replica again",
            winner.by if winner else "another replica",
            winner.version if winner else "?",
            winner.digest[:12] if winner else "?",
        )

    def _checked(self, local: Config, version: int) -> Snapshot:
        """The full check of a local config, then of its snapshot as every replica will load
        it (materialized here). Raises ConfigError, located."""
        self.core.parse(local)
        snap = snapshot(local, version, self.replica)
        shared = self._load(snap)
        self.core.parse(shared, warn=False)
        folder = os.path.realpath(self.folder) + os.sep
        for path in shared.files():
            if not os.path.realpath(path).startswith(folder):
                raise _located(
                    local,
                    snap,
                    path,
                    f"names {path} by an absolute path, which cannot be shared: every replica "
                    "would read its own copy; name it relative to the config file",
                )
        return snap

    # --- apply (event loop) --------------------------------------------------------------------

    def poll(self, store: ConfigStore | None) -> tuple[str, int] | None:
        """In the cluster thread, once a round: (value, mod revision) of the config key when
        its revision is new since the last call, else None; the value is read only then.
        Never raises. `store` None: etcd
        is known to be away this round (nothing is read)."""
        try:
            if store is None:
                raise StoreUnavailable("the election could not reach etcd")
            # The value (up to 1 MiB) only when its revision moved: a round reads ~100 bytes.
            revision = store.mod_revision(CONFIG_KEY)
            current = None if revision in (None, self._polled) else store.get(CONFIG_KEY)
        except StoreUnavailable:
            self.reachable = False
            return None
        self.reachable = True
        if current is None or current[1] == self._polled:
            return None
        self._polled = current[1]
        return current

    def observe(self, value: str, revision: int, now: float) -> Outbox:
        """In the event loop: apply the config etcd holds at `revision`, if new. Returns the
        messages to send; never raises (a version that cannot be applied is logged and
        counted, the running config stays)."""
        if revision == self.seen[0]:
            return {}
        snap = _parse(value)
        if snap is None:
            self.seen = (revision, self.seen[1], "")
            self.apply_failures.labels(self.replica).inc()
            return {}
        self.seen = (revision, snap.version, snap.digest)
        if snap.digest == self.digest:
            self._enforce(snap)
            return {}
        loaded: list[Config] = []

        def load() -> Config:
            loaded.append(self._load(snap))
            return loaded[0]

        out = self.core.reload(load, now)
        if not loaded or self.core.config is not loaded[0]:
            self.apply_failures.labels(self.replica).inc()
            self.behind = True
            LOG.error(
                "config version %d (digest %s, by %s) could not be applied on this replica; "
                "version %d stays in force here, and this replica gives up its switches until "
                "it can apply the cluster's version",
                snap.version,
                snap.digest[:12],
                snap.by,
                self.version,
            )
            return {}
        self._enforce(snap)
        return out

    def _enforce(self, snap: Snapshot) -> None:
        self.version, self.digest, self.behind = snap.version, snap.digest, False
        self.version_gauge.labels(self.replica).set(snap.version)
        LOG.info(
            "config version %d in force (digest %s, published by %s)",
            snap.version,
            snap.digest[:12],
            snap.by,
        )

    def _load(self, snap: Snapshot) -> Config:
        """The snapshot as loaded from the private folder; the files it writes (flow_log.path)
        go next to this replica's own config file (or the working folder), not into it."""
        config = load_config(materialize(snap, self.folder))
        local = self.local.path if self.local is not None else None
        config.output_base = os.path.dirname(os.path.abspath(local)) if local else os.getcwd()
        return config

    def _count(self, result: str) -> None:
        self.publishes.labels(self.replica, result).inc()

    def close(self) -> None:
        """Remove the private folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _parse(value: str) -> Snapshot | None:
    try:
        return Snapshot.from_json(value)
    except ValueError as exc:
        LOG.error("etcd's %s is not a config this replica can read: %s", CONFIG_KEY, exc)
        return None
