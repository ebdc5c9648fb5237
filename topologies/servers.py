"""Lab servers a test or benchmark can kill and start again (topologies/probe.py serve).

`Lab.serve` starts servers that live as long as the lab; these are started, killed and
restarted one at a time, by pid, to play a backend whose process dies while its link stays up.
"""

from __future__ import annotations

import subprocess

from topologies.paths import PROBE


class Servers:
    """probe.py servers by (host, "proto:port"), each greeting with its host's name.

    Parameters
    ----------
    lab : topologies.mininet_lab.Lab
        The running lab whose hosts run them.
    """

    def __init__(self, lab) -> None:
        self.lab = lab
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}

    def start(self, host: str, spec: str = "tcp:80") -> None:
        """Start one in `host` and wait until it is bound."""
        argv = ["/usr/bin/python3", PROBE, "serve", spec, "--name", host]
        proc = self.lab.host(host).popen(argv, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # "serving ...": bound
        self.procs[(host, spec)] = proc

    def kill(self, host: str, spec: str = "tcp:80") -> None:
        """Kill the one in `host` (SIGKILL, by pid); its port is closed at once."""
        proc = self.procs.pop((host, spec))
        proc.kill()
        proc.wait()

    def running(self, host: str, spec: str = "tcp:80") -> bool:
        """Whether the one in `host` serving `spec` runs (as far as we started it)."""
        return (host, spec) in self.procs

    def stop(self) -> None:
        """Kill every one still running."""
        for host, spec in list(self.procs):
            self.kill(host, spec)
