#!/usr/bin/env python3
"""Traffic probes to run inside lab hosts (stdlib only: Mininet hosts use Debian's python3).

probe.py serve tcp:80 udp:53 [--name v1]   # TCP: greet "ok v1", then answer "v1" to each
                                            # message; UDP: echo. Until killed
probe.py tcp 10.0.0.2 80 [--timeout 1]      # exit 0 if a TCP connection opens
probe.py udp 10.0.0.2 53 [--timeout 1]      # exit 0 if it is echoed from 10.0.0.2:53
probe.py matrix 10.0.0.2,10.0.0.3 tcp:80 udp:81  # all at once: "ip proto:port ok|fail" lines
probe.py spread 10.0.100.10 80 2000 [--parallel 20]  # N new connections: JSON count per server
probe.py hold 10.0.100.10 80 20 [--seconds 5]  # keep N connections talking: JSON of any that
                                            # moved to another server or broke
"""

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter

NAME = b""


def _session(conn: socket.socket) -> None:
    """Greet with our name, then answer every message with it until the client closes."""
    with conn:
        try:
            conn.sendall(b"ok " + NAME + b"\n")
            while conn.recv(64):
                conn.sendall(NAME + b"\n")
        except OSError:
            pass


def _tcp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(256)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_session, args=(conn,), daemon=True).start()


def _udp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", port))
    while True:
        data, peer = srv.recvfrom(2048)
        srv.sendto(data, peer)


def serve(specs: list[str]) -> int:
    """Serve every "proto:port" spec until killed; prints "serving ..." once all are bound.

    TCP servers greet each connection with "ok NAME" and answer each message with NAME; UDP
    servers echo each datagram. Returns 0 (never, in practice).
    """
    threads = []
    for spec in specs:
        proto, port = spec.split(":")
        target = _tcp_server if proto == "tcp" else _udp_server
        threads.append(threading.Thread(target=target, args=(int(port),), daemon=True))
    for t in threads:
        t.start()
    print("serving", " ".join(specs), flush=True)
    for t in threads:
        t.join()
    return 0


def _greeting(conn: socket.socket) -> str | None:
    """The server's name from its greeting line, or None."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 256:
        chunk = conn.recv(256)
        if not chunk:
            return None
        line += chunk
    return line[3:].strip().decode() if line.startswith(b"ok") else None


def probe_tcp(ip: str, port: int, timeout: float) -> int:
    """0 if a TCP connection to `ip`:`port` opens and greets within `timeout` seconds, else 1."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return 0 if _greeting(conn) is not None else 1
    except OSError:
        return 1


def spread(ip: str, port: int, n: int, parallel: int, timeout: float) -> int:
    """Open `n` new connections, `parallel` at a time, each given `timeout` seconds; print JSON
    of how many each server greeted ("fail": did not open)."""
    counts: Counter = Counter()
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            try:
                with socket.create_connection((ip, port), timeout=timeout) as conn:
                    conn.settimeout(timeout)
                    name = _greeting(conn) or "fail"
            except OSError:
                name = "fail"
            with lock:
                counts[name] += 1

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(dict(counts)), flush=True)
    return 0


def hold(ip: str, port: int, n: int, seconds: float, timeout: float) -> int:
    """Open `n` connections and keep asking each who it is; print "held" once they are open,
    then JSON: where they started, and how many moved to another server or broke, over
    `seconds` seconds (each exchange given `timeout` seconds)."""
    conns, names = [], []
    for _ in range(n):
        conn = socket.create_connection((ip, port), timeout=timeout)
        conn.settimeout(timeout)
        conns.append(conn)
        names.append(_greeting(conn))
    print("held", flush=True)
    moved = broken = rounds = 0
    alive = [name is not None for name in names]
    end = time.time() + seconds
    while time.time() < end:
        rounds += 1
        for i, conn in enumerate(conns):
            if not alive[i]:
                continue
            try:
                conn.sendall(b"?\n")
                got = conn.recv(256).strip().decode()
            except OSError:
                got = ""
            if got != names[i]:
                alive[i] = False
                moved += bool(got)
                broken += not got
        time.sleep(0.1)
    for conn in conns:
        conn.close()
    started = Counter(name or "fail" for name in names)
    print(json.dumps({"started": dict(started), "moved": moved, "broken": broken}), flush=True)
    return 0


def probe_udp(ip: str, port: int, timeout: float) -> int:
    """0 if a datagram to `ip`:`port` is echoed back from that address within `timeout`
    seconds, else 1.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"probe", (ip, port))
        try:
            data, peer = s.recvfrom(64)
        except OSError:
            return 1
        return 0 if (data, peer) == (b"probe", (ip, port)) else 1  # the answer, from ip:port


def matrix(targets: str, specs: list[str], timeout: float) -> int:
    """Probe every target on every port at the same time: one connection each, fresh ports,
    `timeout` seconds each. Prints "ip proto:port ok|fail" lines."""
    results: dict[tuple[str, str], bool] = {}

    def one(ip: str, spec: str) -> None:
        proto, port = spec.split(":")
        probe = probe_tcp if proto == "tcp" else probe_udp
        results[(ip, spec)] = probe(ip, int(port), timeout) == 0

    threads = [
        threading.Thread(target=one, args=(ip, spec)) for ip in targets.split(",") for spec in specs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (ip, spec), ok in sorted(results.items()):
        print(ip, spec, "ok" if ok else "fail")
    return 0


def main() -> int:
    """Run the mode the command line names (see the module's usage); its exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["serve", "tcp", "udp", "matrix", "spread", "hold"])
    p.add_argument("args", nargs="+")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--name", default="")
    p.add_argument("--parallel", type=int, default=10)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    if a.mode == "serve":
        global NAME
        NAME = a.name.encode()
        return serve(a.args)
    if a.mode == "spread":
        return spread(a.args[0], int(a.args[1]), int(a.args[2]), a.parallel, a.timeout)
    if a.mode == "hold":
        return hold(a.args[0], int(a.args[1]), int(a.args[2]), a.seconds, a.timeout)
    if a.mode == "matrix":
        return matrix(a.args[0], a.args[1:], a.timeout)
    ip, port = a.args[0], int(a.args[1])
    return (probe_tcp if a.mode == "tcp" else probe_udp)(ip, port, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
