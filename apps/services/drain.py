"""Backends a new config dropped keep steering what conntrack still holds for them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from apps.services.settings import Service

LOG = logging.getLogger("osken_suite.services")
# A backend taken out of the config keeps its translation flows this long: its connections
# end normally, and a client reusing a port whose conntrack entry still points at it (TIME_WAIT)
# is not sent into a void.
DRAIN_SECONDS = 300.0


class Draining:
    """Retired backends and until when their flows stay.

    `entries` lists (service, until): a service holding only the backends (with known MACs)
    that left the config, no routes and no backups; `until` in seconds of the core's clock.
    New connections never go to them.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[Service, float]] = []

    def retire(
        self,
        old: Mapping[str, Service],
        new: Iterable[Service],
        resolved: Mapping[str, Service],
        now: float,
    ) -> None:
        """Start draining what `old` (by name) had and `new` has not, for DRAIN_SECONDS from
        `now`; `resolved` gives the old services with their learned MACs."""
        kept = {s.name: {b.key for b in s.backends} for s in new}
        for name, s in old.items():
            gone = tuple(
                b
                for b in resolved.get(name, s).backends
                if b.key not in kept.get(name, set()) and b.mac
            )
            if gone:
                LOG.info(
                    "services: %s: %s drain for %.0f s",
                    name,
                    ", ".join(b.endpoint for b in gone),
                    DRAIN_SECONDS,
                )
                self.entries.append(
                    (
                        Service(s.name, s.vip, s.port, s.protocol, s.method, gone, (), ()),
                        now + DRAIN_SECONDS,
                    )
                )

    def expire(self, now: float) -> bool:
        """Drop what has drained by `now`; True if anything was dropped."""
        drained = [d for d in self.entries if d[1] > now]
        if len(drained) == len(self.entries):
            return False
        self.entries = drained
        return True
