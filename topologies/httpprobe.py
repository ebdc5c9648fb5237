#!/usr/bin/env python3
"""HTTP in lab hosts (stdlib only: Mininet hosts use Debian's python3).

httpprobe.py serve 80 --name v1        # answer every request: 200, body "v1"; until killed
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
import urllib.parse
from collections import Counter


def serve(port: int, name: str) -> int:
    """Answer every GET, POST, PUT, DELETE... on `port` with 200 and `name`; prints "serving"
    once bound. Never returns."""
    body = name.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY the body waits for the
        # peer's delayed ACK (40 ms) on a kept-alive connection, as Envoy's upstream ones are.
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
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
