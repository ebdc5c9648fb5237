"""Conntrack zone limits on the local Open vSwitch, through `ovs-appctl dpctl/ct-set-limits`.

A zone limit caps the entries one conntrack zone may hold: a commit past it is refused. Open
vSwitch 3.1 takes it only from `ovs-appctl` (OVSDB's `CT_Zone` limit came in 3.3; OpenFlow
has none), so it can be set only where the switches' ovs-vswitchd runs beside the controller,
and it holds per datapath: in a lab whose bridges share one userspace datapath, a zone's
limit is one count for all of them. Measured on 3.1.0's userspace datapath: docs/services.md.

`ZoneLimits.apply` brings the datapath's limits to the wanted ones (only zones it set itself
are ever removed); `usable` says whether a local ovs-vswitchd answers, and why not.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

LOG = logging.getLogger("osken_suite.ctlimits")
TIMEOUT = 5.0  # seconds for one ovs-appctl call

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def run_appctl(args: Sequence[str]) -> subprocess.CompletedProcess:
    """`ovs-appctl args...`, output captured; a missing binary or a hang is an error result."""
    try:
        return subprocess.run(
            ["ovs-appctl", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["ovs-appctl", *args], 127, "", str(exc))


class ZoneLimits:
    """The zone limits this controller set on the local datapath: {zone: limit}."""

    def __init__(self, run: Runner | None = None) -> None:
        self._run = run or run_appctl
        self.in_force: dict[int, int] = {}

    def usable(self) -> str | None:
        """None when a local ovs-vswitchd takes zone limits, else why not (one line)."""
        r = self._run(["dpctl/ct-get-limits"])
        if r.returncode == 0:
            return None
        return (r.stderr or r.stdout).strip() or f"ovs-appctl exited {r.returncode}"

    def apply(self, wanted: dict[int, int]) -> str | None:
        """Set the zones of `wanted` ({zone: limit}) and delete the ones set before and no longer
        wanted. Returns None on success, else the error (what was in force stays recorded as
        what the datapath said it holds)."""
        changed = {z: n for z, n in wanted.items() if self.in_force.get(z) != n}
        gone = sorted(set(self.in_force) - set(wanted))
        if changed:
            err = self._call(
                "dpctl/ct-set-limits", [f"zone={z},limit={n}" for z, n in sorted(changed.items())]
            )
            if err:
                return err
            self.in_force.update(changed)
        if gone:
            err = self._call("dpctl/ct-del-limits", [",".join(f"{z}" for z in gone)], "zone=")
            if err:
                return err
            for z in gone:
                del self.in_force[z]
        return None

    def clear(self) -> str | None:
        """Remove every limit this controller set."""
        return self.apply({})

    def _call(self, command: str, args: list[str], prefix: str = "") -> str | None:
        r = self._run([command, *(prefix + a for a in args)])
        if r.returncode == 0:
            LOG.info("ctlimits: %s %s", command, " ".join(prefix + a for a in args))
            return None
        return f"{command}: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}"
