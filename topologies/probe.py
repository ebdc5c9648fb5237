#!/usr/bin/env python3
"""Traffic probes to run inside lab hosts (stdlib only: Mininet hosts use Debian's python3).

probe.py serve tcp:80 tcp:443 udp:53        # accept TCP, echo UDP, until killed
probe.py tcp 10.0.0.2 80 [--timeout 1]      # exit 0 if a TCP connection opens
probe.py udp 10.0.0.2 53 [--timeout 1]      # exit 0 if a datagram comes back
probe.py matrix 10.0.0.2,10.0.0.3 tcp:80 udp:81  # all at once: "ip proto:port ok|fail" lines
"""

import argparse
import socket
import sys
import threading


def _tcp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        conn.sendall(b"ok\n")
        conn.close()


def _udp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", port))
    while True:
        data, peer = srv.recvfrom(2048)
        srv.sendto(data, peer)


def serve(specs: list[str]) -> int:
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


def probe_tcp(ip: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return 0 if conn.recv(8) == b"ok\n" else 1
    except OSError:
        return 1


def probe_udp(ip: str, port: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"probe", (ip, port))
        try:
            return 0 if s.recvfrom(64)[0] == b"probe" else 1
        except OSError:
            return 1


def matrix(targets: str, specs: list[str], timeout: float) -> int:
    """Probe every target on every port at the same time: one connection each, fresh ports."""
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["serve", "tcp", "udp", "matrix"])
    p.add_argument("args", nargs="+")
    p.add_argument("--timeout", type=float, default=1.0)
    a = p.parse_args()
    if a.mode == "serve":
        return serve(a.args)
    if a.mode == "matrix":
        return matrix(a.args[0], a.args[1:], a.timeout)
    ip, port = a.args[0], int(a.args[1])
    return (probe_tcp if a.mode == "tcp" else probe_udp)(ip, port, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
