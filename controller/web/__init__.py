"""The controller's web answers on the metrics port (issue 16), mounted on `Metrics`
(controller/metrics.py), so there is one HTTP server per controller:

    GET /api/v1/trace?src=IP&dst=IP&proto=tcp|udp|icmp&dport=N[&sport=N]   (JSON)
    GET /api/v1/topology                                                    (JSON, topology.py)
    GET /                 the live topology page (static/index.html)
    GET /static/NAME      its script, style and graph library (served from this package)

Nothing is loaded from elsewhere: the graph library (Cytoscape.js) is installed into
static/vendor/ by scripts/setup.sh (docs/dependencies.md).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from controller.trace.ovs import OvsSwitches
from controller.trace.tracer import InLoop, TraceError, Tracer
from controller.web.topology import topology_of

LOG = logging.getLogger("osken_suite.web")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
STATIC = os.path.join(os.path.dirname(__file__), "static")
# What /static/ serves: these files only, by name (no path from the request reaches the disk).
FILES = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "vendor/cytoscape.min.js": "text/javascript; charset=utf-8",
}


def respond(start_response: Callable, status: int, body: Any) -> list[bytes]:
    """A JSON answer (UTF-8, indented for people reading it with curl)."""
    data = (json.dumps(body, indent=2) + "\n").encode()
    start_response(
        f"{status} {REASONS.get(status, '')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _port(query: dict, name: str) -> int | None:
    text = query.get(name, [None])[0]
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise TraceError(f"{name}: {text!r} is not a port number")
    return int(text)


class Web:
    """The WSGI apps of the metrics port's observability paths.

    Parameters
    ----------
    core : controller.core.Core
        Read only through `in_loop`.
    in_loop : callable
        Runs a function in the core's event loop, returns its result; raises queue.Empty when
        the loop does not answer in time.
    switches : object, optional
        What a trace asks (default: this machine's Open vSwitch, controller/trace/ovs.py).
    """

    def __init__(self, core, in_loop: InLoop, switches=None) -> None:
        self.core, self.in_loop = core, in_loop
        self.tracer = Tracer(core, switches or OvsSwitches(), in_loop)

    def mount(self, metrics) -> None:
        """Serve these paths on `metrics`' HTTP server."""
        metrics.mount("/api/v1/trace", self.trace)
        metrics.mount("/api/v1/topology", self.topology)
        metrics.mount("/", self.page)
        metrics.mount("/static/", self.static)

    def topology(self, environ: dict, start_response: Callable) -> list[bytes]:
        """GET /api/v1/topology: the network as JSON (controller/web/topology.py), switch
        names from Open vSwitch where it can be asked; 503 when the event loop does not
        answer."""
        try:
            body = self.in_loop(lambda: topology_of(self.core, time.time()))
        except queue.Empty:
            return respond(start_response, 503, {"error": "the controller's loop is busy"})
        for switch in body["switches"]:
            switch["name"] = self.tracer.name(int(switch["dpid"], 16))
        return respond(start_response, 200, body)

    def page(self, environ: dict, start_response: Callable) -> list[bytes]:
        """GET /: the live topology page."""
        return self._file(start_response, "index.html", "text/html; charset=utf-8")

    def static(self, environ: dict, start_response: Callable) -> list[bytes]:
        """GET /static/NAME: one of FILES; 404 for anything else."""
        name = environ.get("PATH_INFO", "")[len("/static/") :]
        if name not in FILES:
            return respond(start_response, 404, {"error": f"no such file: {name}"})
        return self._file(start_response, name, FILES[name])

    @staticmethod
    def _file(start_response: Callable, name: str, content_type: str) -> list[bytes]:
        try:
            with open(os.path.join(STATIC, name), "rb") as f:
                data = f.read()
        except OSError:
            return respond(
                start_response, 404, {"error": f"{name} is not installed (run scripts/setup.sh)"}
            )
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-cache"),
            ],
        )
        return [data]

    def trace(self, environ: dict, start_response: Callable) -> list[bytes]:
        """GET /api/v1/trace: the trace as JSON; 400 for a bad query, 404 for an address no
        host is known by, 503 when the event loop does not answer."""
        query = parse_qs(environ.get("QUERY_STRING", ""))
        missing = [k for k in ("src", "dst", "proto") if not query.get(k)]
        if missing:
            return respond(start_response, 400, {"error": f"missing {', '.join(missing)}"})
        try:
            body = self.tracer.trace(
                query["src"][0],
                query["dst"][0],
                query["proto"][0].lower(),
                _port(query, "dport"),
                _port(query, "sport"),
            )
        except TraceError as exc:
            return respond(start_response, exc.status, {"error": str(exc)})
        except queue.Empty:
            return respond(start_response, 503, {"error": "the controller's loop is busy"})
        return respond(start_response, 200, body)
