"""The controller's web answers on the metrics port (issue 16): the trace API now; the
topology API and the live page join it. Mounted on `Metrics` (controller/metrics.py), so
there is one HTTP server per controller.

    GET /api/v1/trace?src=IP&dst=IP&proto=tcp|udp|icmp&dport=N[&sport=N]   (JSON)
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from controller.trace.ovs import OvsSwitches
from controller.trace.tracer import InLoop, TraceError, Tracer

LOG = logging.getLogger("osken_suite.web")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


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
    if not text.isdigit():
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
        self.tracer = Tracer(core, switches or OvsSwitches(), in_loop)

    def mount(self, metrics) -> None:
        """Serve these paths on `metrics`' HTTP server."""
        metrics.mount("/api/v1/trace", self.trace)

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
