"""Prometheus metrics for the controller (one registry per controller, so tests stay isolated).

The same HTTP port serves `/metrics` and any other path a part of the controller routes to it
(`Metrics.route`), such as the liveness check `/livez`, or mounts a WSGI app at
(`Metrics.mount`), such as the trace API and the topology page (controller/web).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

Handler = Callable[[], tuple[int, str]]  # () -> (HTTP status, plain text body)
WsgiApp = Callable[[dict, Callable], list[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        """Scrapes are not news: no line per request."""


LOG = logging.getLogger("osken_suite.metrics")


class Metrics:
    """The controller's Prometheus metrics, in a registry of its own.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry, optional
        A fresh one by default, so two controllers in one process never share counters.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.switches = Gauge("osken_switches", "Switches connected and synchronised", registry=r)
        self.ports = Gauge("osken_ports", "Live ports per switch", ["dpid"], registry=r)
        self.links = Gauge("osken_links", "Switch-to-switch links discovered", registry=r)
        self.hosts = Gauge("osken_hosts", "Hosts learned at edge ports", registry=r)
        self.flows = Gauge(
            "osken_flows", "Flows installed per table", ["dpid", "table"], registry=r
        )
        self.packet_ins = Counter("osken_packet_ins", "Packet-ins received", ["dpid"], registry=r)
        self.messages_sent = Counter(
            "osken_of_messages_sent", "OpenFlow messages sent", ["dpid", "type"], registry=r
        )
        self.errors = Counter(
            "osken_of_errors",
            "OpenFlow error messages from switches",
            ["dpid", "type", "code"],
            registry=r,
        )
        self.reconciles = Counter(
            "osken_reconciles", "Full table reconciliations with a switch", ["dpid"], registry=r
        )
        self.app_errors = Counter(
            "osken_app_errors",
            "Exceptions raised by an app's hook (caught: the other apps still get the event)",
            ["app", "hook"],
            registry=r,
        )
        self.lldp_refused = Counter(
            "osken_lldp_refused",
            "LLDP frames discovery refused, by the port they came in on and why",
            ["dpid", "port", "reason"],
            registry=r,
        )
        self.pipeline_violations = Counter(
            "osken_pipeline_violations",
            "Flows not sent because they break their table's contract (controller/pipeline.py)",
            ["app", "table"],
            registry=r,
        )
        self._sent: dict[tuple[int, type], object] = {}
        self._routes: dict[str, Handler] = {}
        self._mounts: dict[str, WsgiApp] = {}
        self._metrics_app = make_wsgi_app(self.registry)
        self.config_reloads = Counter(
            "osken_config_reloads", "Config reloads", ["result"], registry=r
        )

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A gauge of an app's, in this controller's registry."""
        return Gauge(name, doc, list(labels), registry=self.registry)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter of an app's, in this controller's registry."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def route(self, path: str, handler: Handler) -> None:
        """Serve `handler`'s answer at `path` (e.g. "/livez") beside /metrics."""
        self._routes[path] = handler

    def mount(self, path: str, app: WsgiApp) -> None:
        """Serve the WSGI `app` at `path`, or under it for a path that ends in "/" (other
        than "/" itself, which is the one path)."""
        self._mounts[path] = app

    def _mounted(self, path: str) -> WsgiApp | None:
        if path in self._mounts:
            return self._mounts[path]
        for prefix, app in self._mounts.items():
            if prefix != "/" and prefix.endswith("/") and path.startswith(prefix):
                return app
        return None

    def wsgi(self, environ: dict, start_response: Callable) -> list[bytes]:
        """The WSGI application: routed paths, mounted apps, then /metrics (prometheus_client)
        for the rest."""
        path = environ.get("PATH_INFO", "")
        handler = self._routes.get(path)
        if handler is None:
            app = self._mounted(path) or self._metrics_app
            return app(environ, start_response)
        status, text = handler()
        reason = {200: "OK", 503: "Service Unavailable"}.get(status, "")
        start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8")])
        return [text.encode()]

    def serve(self, port: int, host: str = "127.0.0.1") -> bool:
        """Serve over HTTP in a thread of its own; a busy port is logged, never fatal."""
        try:
            server = make_server(
                host, port, self.wsgi, server_class=_Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            LOG.warning(
                "metrics: cannot listen on %s:%d (%s); continuing without them", host, port, exc
            )
            return False
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        paths = " ".join(sorted([*self._routes, *self._mounts]))
        LOG.info("http://%s:%d serves /metrics %s", host, port, paths)
        return True

    def count_sent(self, dpid: int, msgs: list) -> None:
        """Count messages by type; runs once per event, so label lookups are cached."""
        counts: dict[type, int] = {}
        for msg in msgs:
            counts[type(msg)] = counts.get(type(msg), 0) + 1
        for kind, n in counts.items():
            child = self._sent.get((dpid, kind))
            if child is None:
                child = self._sent[(dpid, kind)] = self.messages_sent.labels(
                    f"{dpid:016x}", kind.__name__
                )
            child.inc(n)

    def set_flow_counts(self, dpid: int, counts: dict[int, int], n_tables: int) -> None:
        """Set osken_flows{dpid,table} for tables 0..`n_tables`-1 from `counts`
        (table to number of flows; a table not in it has 0).
        """
        for table in range(n_tables):
            self.flows.labels(f"{dpid:016x}", str(table)).set(counts.get(table, 0))
