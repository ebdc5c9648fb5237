"""The waypoint's life as the services app drives it: start it, feed it each config, watch it.

- A config with waypointed services starts the replicas (vnf/waypoint/runner.py) in a thread of
  its own (a container takes about a second), so the controller keeps serving its switches.
  A config without any stops them; a changed placement (bridge, addresses) replaces them.
- Each applied config is rendered to Envoy's discovery files and swapped in at once, inside
  the reload that applies it: Envoy takes it without a restart. The config was checked by Envoy
  itself when it was parsed (settings.py), so what reaches the files is what Envoy accepts.
- A replica counts as serving once its Envoy is live and reports the current version for its
  listeners and clusters (`poll`, every tick); until then the switches steer nothing to it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from apps.services.mesh import Mesh
from vnf.waypoint import envoy
from vnf.waypoint.model import Plan
from vnf.waypoint.runner import Runner

LOG = logging.getLogger("osken_suite.waypoint")
BRIDGE_POLL = 0.5  # seconds between looks for the bridge the replicas plug into


def rendered(plan: Plan) -> tuple[str, str, str]:
    """(version, lds text, cds text) of a plan; the version is a digest of both."""
    listeners, clusters = envoy.resources(plan)
    probe = envoy.discovery_file("", listeners) + envoy.discovery_file("", clusters)
    version = hashlib.sha256(probe.encode()).hexdigest()[:12]
    return (
        version,
        envoy.discovery_file(version, listeners),
        envoy.discovery_file(version, clusters),
    )


class WaypointDriver:
    """Owns the running waypoint (at most one). `serving`: names of the replicas that serve the
    current version."""

    def __init__(self, runner: Callable[..., Runner] | None = None) -> None:
        self._make_runner = runner or Runner
        self.mesh: Mesh | None = None
        self.runner: Runner | None = None
        self.plan = Plan()
        self.version: str | None = None
        self.serving: frozenset[str] = frozenset()
        self._started = False
        self._failed: str | None = None
        self._lock = threading.RLock()

    def _spawn(self, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name="waypoint-start", daemon=True).start()

    def configure(self, mesh: Mesh | None, plan: Plan) -> None:
        """Run what `mesh` and `plan` ask for: nothing without listeners."""
        wanted = mesh if plan.listeners else None
        with self._lock:
            self.plan = plan
            if wanted != self.mesh:
                self._stop()
                self.mesh = wanted
                if wanted is not None:
                    self.runner = self._make_runner(wanted.spec)
                    self._spawn(self._start)
                return
            if self._started:
                self._feed()

    def _start(self) -> None:
        runner = self.runner
        # The usual order is the controller first, then the network (Mininet makes the bridge
        # after the controller listens): wait for the bridge, as long as this runner is wanted.
        if not runner.bridge_exists():
            LOG.info(
                "waypoint: waiting for Open vSwitch bridge %r (mesh.waypoint.bridge) to exist",
                runner.spec.bridge,
            )
            while not runner.bridge_exists():
                if runner is not self.runner:  # replaced or stopped meanwhile
                    return
                time.sleep(BRIDGE_POLL)
        try:
            runner.start()
        except Exception as exc:  # a replica that cannot start: say why, steer nothing to it
            self._failed = f"{type(exc).__name__}: {exc}"
            LOG.error("waypoint: could not start its replicas: %s", self._failed)
            return
        with self._lock:
            if runner is not self.runner:  # replaced or stopped meanwhile
                return
            self._started = True
            self._feed()

    def _feed(self) -> None:
        version, lds, cds = rendered(self.plan)
        if version == self.version:
            return
        self.runner.configure(lds, cds, version, self.plan.vips)
        self.version = version
        LOG.info(
            "waypoint: config %s in force: %d services, %d clusters",
            version,
            len(self.plan.listeners),
            len(self.plan.clusters),
        )

    def poll(self) -> bool:
        """Look at which replicas serve the current version; True if that changed."""
        with self._lock:
            serving: frozenset[str] = frozenset()
            if self._started and self.mesh is not None:
                serving = frozenset(
                    r.name
                    for i, r in enumerate(self.mesh.replicas)
                    if self.runner.serving(i, self.version)
                )
        changed = serving != self.serving
        if changed:
            LOG.info("waypoint: serving replicas now %s", sorted(serving) or "none")
        self.serving = serving
        return changed

    def announce(self, names: set[str]) -> None:
        """The replicas named (not located by the fabric yet) announce themselves."""
        with self._lock:
            if not self._started or self.mesh is None:
                return
            for i, r in enumerate(self.mesh.replicas):
                if r.name in names:
                    self.runner.announce(i)

    def admin_sockets(self) -> list[str]:
        """The admin API sockets of the replicas that serve (for their statistics)."""
        with self._lock:
            if not self._started or self.mesh is None:
                return []
            return [
                self.runner.admin_socket(i)
                for i, r in enumerate(self.mesh.replicas)
                if r.name in self.serving
            ]

    def held(self) -> frozenset[str]:
        """Names of the replicas that do not serve (for Locations.held)."""
        if self.mesh is None:
            return frozenset()
        return frozenset(r.name for r in self.mesh.replicas if r.name not in self.serving)

    def _stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.runner, self._started, self.version, self.serving = None, False, None, frozenset()

    def close(self) -> None:
        """Stop the replicas (the controller is stopping)."""
        with self._lock:
            self._stop()
            self.mesh = None
