"""A throwaway etcd for labs and tests: loopback only, a temporary data dir, free ports,
stopped by its pid.

From Python:

    with EtcdLab() as etcd:          # or etcd = EtcdLab().start(); ...; etcd.stop()
        run(["osken-manager", "--cluster", etcd.url, ...])

From a shell (prints `URL PID DATA_DIR`; `stop` kills that pid and removes that dir):

    read url pid dir < <(python -m topologies.etcdlab start)
    python -m topologies.etcdlab stop "$pid" "$dir"

The binary is Debian's `etcd-server` (3.4, /usr/bin/etcd; scripts/setup.sh installs it). The
heartbeat and election timeout are shortened (50 ms / 500 ms) so that etcd's shortest lease is
1 s (3.4: 1.5 x election timeout, rounded up), which the replicas' failover needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from topologies.controller_process import free_port
from topologies.wait import until

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 10.0  # seconds
STOP_TIMEOUT = 5.0


class EtcdLabError(RuntimeError):
    """etcd is missing, or did not become healthy in time (its log's tail is in the text)."""


class EtcdLab:
    """One single-member etcd on 127.0.0.1: `url` for clients, `pid` and `data_dir` to stop it."""

    def __init__(self, binary: str = ETCD) -> None:
        self.binary = binary
        self.client_port = self.peer_port = 0
        self.data_dir = ""
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The client URL, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        """etcd's process id, 0 when not running."""
        return self.proc.pid if self.proc else 0

    def start(self) -> EtcdLab:
        """Start etcd and wait until /health says true.

        Raises:
            EtcdLabError: no etcd binary, or not healthy within START_TIMEOUT seconds.
        """
        if not os.access(self.binary, os.X_OK):
            raise EtcdLabError(f"{self.binary} not found: run scripts/setup.sh (etcd-server)")
        self.client_port, self.peer_port = free_port(), free_port()
        self.data_dir = tempfile.mkdtemp(prefix="osken-etcd-")
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(os.path.join(self.data_dir, "etcd.log"), "wb")  # noqa: SIM115 (child's)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--name=lab",
                f"--data-dir={self.data_dir}/data",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lab={peer}",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not until(self.healthy, START_TIMEOUT, 0.1):
            tail = self.log()[-800:]
            self.stop()
            raise EtcdLabError(f"etcd did not become healthy in {START_TIMEOUT} s: {tail}")
        return self

    def healthy(self) -> bool:
        """True if etcd's /health answers true within 1 s."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except (OSError, urllib.error.URLError):
            return False

    def log(self) -> str:
        """etcd's log so far (empty if none)."""
        try:
            with open(os.path.join(self.data_dir, "etcd.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: etcd stops answering, as if unreachable."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused etcd (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill etcd by its pid and remove its data dir; safe to call twice."""
        if self.proc is not None:
            stop(self.proc.pid, self.data_dir)
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None
        elif self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop(pid: int, data_dir: str) -> None:
    """Kill the etcd with this pid (SIGCONT first, in case it was paused) and remove its
    temporary data dir. Only a dir this module made (osken-etcd-*) is removed.

    Raises:
        ValueError: a pid that names no single process (0 or negative: a process group).
    """
    if pid <= 0:
        raise ValueError(f"pid {pid} is not one process")
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
    if os.path.basename(data_dir.rstrip("/")).startswith("osken-etcd-"):
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """`start` prints URL, pid and data dir of a new etcd; `stop PID DIR` ends it. Exit status."""
    if argv[:1] == ["start"]:
        lab = EtcdLab().start()
        print(lab.url, lab.pid, lab.data_dir)
        lab.proc = None  # outlives us: the caller stops it by pid
        return 0
    if argv[:1] == ["stop"] and len(argv) == 3:
        stop(int(argv[1]), argv[2])
        return 0
    print("usage: python -m topologies.etcdlab start | stop PID DATA_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
