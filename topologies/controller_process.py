"""The controller as a child process: start it on a free port, wait for it, stop it by pid.

with Controller(["apps/l2_learning.py"]) as ctl:
    assert listening(ctl.port)
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile

from topologies.paths import ROOT
from topologies.wait import until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:`port` (0.5 s connect timeout)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_listening(port: int, timeout: float) -> bool:
    """True once 127.0.0.1:`port` accepts connections, False after `timeout` seconds."""
    return bool(until(lambda: listening(port), timeout))


class Controller:
    """osken-manager (``python -m controller.cli``) in a child process, its log in a file.

    Parameters
    ----------
    apps : list of str
        App files or modules, as the CLI takes them.
    port : int, optional
        OpenFlow listening port; a free one by default.
    config : str, optional
        Path of the config file (``--config``).
    log_path : str, optional
        Where stdout and stderr go; a fresh temporary file by default.
    extra : list of str, optional
        More CLI arguments.

    The Prometheus endpoint gets a free port (``--prometheus-port 0``). As a context manager it
    starts on entry and stops (SIGTERM, then SIGKILL after 5 s) on exit.
    """

    def __init__(
        self,
        apps: list[str],
        port: int | None = None,
        config: str | None = None,
        log_path: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.apps = apps
        self.port = port or free_port()
        self.config = config
        self.log_path = log_path or tempfile.mktemp(prefix="osken-", suffix=".log")
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> Controller:
        """Start the process and wait up to 20 s for its OpenFlow port.

        Raises
        ------
        RuntimeError
            The port never opened; the process is stopped and the message carries its log.
        """
        cmd = [
            sys.executable,
            "-m",
            "controller.cli",
            *self.apps,
            "--ofp-tcp-listen-port",
            str(self.port),
            "--prometheus-port",
            "0",
            *self.extra,
        ]
        if self.config:
            cmd += ["--config", self.config]
        log = open(self.log_path, "a")  # noqa: SIM115 (the child keeps it open)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_listening(self.port, 20):
            self.stop()
            raise RuntimeError(f"controller did not start; see {self.log_path}:\n{self.log()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Send `sig`, wait `timeout` seconds, then SIGKILL: its exit code (None if not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code, self.proc = self.proc.returncode, None
        return code

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to clean anything up."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        """Everything the process has logged so far ("" if the file is unreadable)."""
        try:
            with open(self.log_path) as fh:
                return fh.read()
        except OSError:
            return ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> bool:
        """True once the log holds `count` matches of regex `pattern`; False after `timeout` s."""
        return bool(until(lambda: len(re.findall(pattern, self.log())) >= count, timeout, 0.1))

    def rewrite_config(self, text: str, timeout: float = 10.0) -> bool:
        """Replace the config file it runs with; True once it has reloaded it within `timeout`
        seconds (the file watch picks the change up, no signal needed)."""
        before = len(re.findall("config reloaded", self.log()))
        with open(self.config, "w") as fh:
            fh.write(text)
        return self.wait_log("config reloaded", count=before + 1, timeout=timeout)

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
