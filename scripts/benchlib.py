"""What the peer and scale benchmarks share: waiting, process cost, and counting OpenFlow.

- `until(check, timeout)`: poll until a check holds (raises TimeoutError).
- `rss_mib(pid)`, `cpu_seconds(pid)`: a process's resident memory and CPU time, from /proc.
- `OpenFlowTap`: a TCP relay between switches and a controller that counts the OpenFlow
  messages the controller sends, by type, by kind (scripts/ofkinds.py: changes, barriers,
  packet-outs, the rest) and by flow-mod command, so two controllers are counted the same way,
  on the wire.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime

from ofkinds import WORK_KINDS, read_messages

from topologies import wait

CLK_TCK = os.sysconf("SC_CLK_TCK")


def until(check: Callable[[], object], timeout: float = 120.0, step: float = 0.005) -> float:
    """time.time() when `check()` first returned something true (polled by topologies/wait.py's
    loop every `step` s); TimeoutError after `timeout` s."""
    if wait.until(check, timeout, step) is None:
        raise TimeoutError(f"not true within {timeout:g} s")
    return time.time()


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def reconciled_at(log: str) -> float | None:
    """When the controller's log (os-ken's "%Y-%m-%d %H:%M:%S,%f" stamps) last says a switch was
    reconciled on connect, as epoch seconds; None if it never does."""
    stamps = []
    for line in log.splitlines():
        if "reconciled (connect)" not in line:
            continue
        try:
            stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
        except ValueError:  # a continuation line (a traceback's) names it without a stamp
            continue
    return max(stamps) if stamps else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class OpenFlowTap:
    """Listens on `port` and relays every connection to the controller on `upstream`.

    Counts what the controller sends: `sent` by OpenFlow message type number, `kinds` by
    ofkinds kind, `flow_mods` by command name (a flow-mod inside a bundle add, OpenFlow 1.4's
    or 1.3's ONF extension, counts too). `work()` is the changes and barriers, what a piece of
    work costs; periodic echoes, polls and probes are left out, and `quiet_for` waits on work
    alone. A switch whose controller goes away is disconnected, as it would be without the
    tap, and reconnects through it.

        with OpenFlowTap(upstream=6653, port=6654) as tap:   # switches point at tap.port
            tap.reset(); ...; print(tap.work(), tap.flow_mods)
    """

    def __init__(self, upstream: int, port: int) -> None:
        self.upstream = upstream
        self.port = port
        self.sent: collections.Counter[int] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.flow_mods: collections.Counter[str] = collections.Counter()
        self.last_work = 0.0  # time.time() of the last change or barrier sent
        self.error: str | None = None  # a stream that could not be framed: counts are short
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> OpenFlowTap:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(2)

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.kinds.clear()
            self.flow_mods.clear()

    def work(self) -> int:
        """Changes and barriers sent since the last reset.

        Raises:
            RuntimeError: a controller's stream could not be framed, so some went uncounted.
        """
        if self.error is not None:
            raise RuntimeError(f"the OpenFlow tap lost count: {self.error}")
        with self._lock:
            return sum(self.kinds[k] for k in WORK_KINDS)

    def quiet_for(self, seconds: float) -> bool:
        """Has the controller sent no change and no barrier for `seconds`? (Echoes, polls,
        packet-outs and the other periodic messages do not break the quiet.)"""
        return time.time() - self.last_work >= seconds

    def _accept(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.2)
            if not ready:
                continue
            try:
                switch, _ = self._listener.accept()
            except OSError:
                return
            try:
                controller = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                switch.close()
                continue
            for sock in (switch, controller):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._relay, args=(switch, controller), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, switch: socket.socket, controller: socket.socket) -> None:
        pending = b""
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([switch, controller], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(1 << 20)
                    if not data:
                        return
                    if sock is controller:
                        try:
                            pending = self._count(pending + data)
                        except ValueError as exc:  # a switch would drop such a connection too
                            self.error = str(exc)
                            return
                        switch.sendall(data)
                    else:
                        controller.sendall(data)
        except OSError:
            return
        finally:
            switch.close()
            controller.close()

    def _count(self, buf: bytes) -> bytes:
        """Count the whole messages at the start of `buf`; return the incomplete rest."""
        messages, rest = read_messages(buf)
        with self._lock:
            for msg in messages:
                self.sent[msg.mtype] += 1
                self.kinds[msg.kind] += 1
                if msg.flow_mod is not None:
                    self.flow_mods[msg.flow_mod] += 1
                if msg.kind in WORK_KINDS:
                    self.last_work = time.time()
        return rest
