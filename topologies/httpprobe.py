#!/usr/bin/env python3
"""HTTP in lab hosts (stdlib only: Mininet hosts use Debian's python3).

httpprobe.py serve 80 --name v1        # answer every request: 200, body "v1"; until killed
                                       #   /slow?s=2: answer after 2 s (at most 30)
                                       #   /_status?code=500: answer 500 from now on
                                       #   /_peak: most requests in flight at once since the
                                       #   last /_peak (control paths not counted)
                                       #   /_count: requests answered since the last /_count
httpprobe.py get http://10.0.100.10/ 2000 [--parallel 8] [--header 'canary: true']
                                       # N requests, each on a new connection: JSON count of
                                       # "<status> <body>" ("fail" when none came back)
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse
from collections import Counter

MAX_DELAY = 30.0  # seconds a /slow request may ask for


class Backend:
    """What a serving backend answers, and how many requests it has in flight (its peak)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = 200
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    def enter(self) -> None:
        """A request starts."""
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        """A request has been answered."""
        with self.lock:
            self.in_flight -= 1
            self.served += 1

    def take_count(self) -> int:
        """Requests answered since the last call."""
        with self.lock:
            served, self.served = self.served, 0
            return served

    def take_peak(self) -> int:
        """The peak since the last call; the next peak starts from what is in flight now."""
        with self.lock:
            peak, self.peak = self.peak, self.in_flight
            return peak


def serve(port: int, name: str) -> int:
    """Answer every GET, POST, PUT, DELETE... on `port` with 200 (or the status set by
    /_status) and `name`; /slow?s=SECONDS waits first; /_peak tells the peak concurrency,
    /_count how many requests it answered.
    Prints "serving" once bound. Never returns."""
    body = name.encode()
    state = Backend()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY the body waits for the
        # peer's delayed ACK (40 ms) on a kept-alive connection, as Envoy's upstream ones are.
        disable_nagle_algorithm = True

        def _send(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/_status":
                state.status = int(query.get("code", "200"))
                return self._send(200, body)
            if url.path == "/_peak":
                return self._send(200, str(state.take_peak()).encode())
            if url.path == "/_count":
                return self._send(200, str(state.take_count()).encode())
            state.enter()
            try:
                if url.path == "/slow":
                    time.sleep(min(float(query.get("s", "1")), MAX_DELAY))
                self._send(state.status, body)
            finally:
                state.leave()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the default 5 drops SYNs of a burst: 1 s retransmits

    server = Server(("0.0.0.0", port), Handler)
    print("serving", port, flush=True)
    server.serve_forever()
    return 0


def get(url: str, n: int, parallel: int, headers: dict, method: str, timeout: float) -> int:
    """`n` requests to `url`, `parallel` at a time, each on a new connection; prints JSON of
    how many came back as each "<status> <body>" ("fail": no answer within `timeout` s)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    counts: Counter = Counter()
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
            try:
                conn.request(method, path, headers=headers)
                resp = conn.getresponse()
                key = f"{resp.status} {resp.read().decode(errors='replace').strip()}"
            except OSError:
                key = "fail"
            finally:
                conn.close()
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(dict(counts)), flush=True)
    return 0


def main() -> int:
    """Run the mode the command line names (see the module's usage); its exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["serve", "get"])
    p.add_argument("args", nargs="+")
    p.add_argument("--name", default="")
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--method", default="GET")
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    if a.mode == "serve":
        return serve(int(a.args[0]), a.name)
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    return get(a.args[0], int(a.args[1]), a.parallel, headers, a.method, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
