"""Prometheus metrics for the controller (one registry per controller, so tests stay isolated)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

LOG = logging.getLogger("osken_suite.metrics")


class Metrics:
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
        self.lldp_refused = Counter(
            "osken_lldp_refused",
            "LLDP frames discovery refused, by the port they came in on and why",
            ["dpid", "port", "reason"],
            registry=r,
        )
        self._sent: dict[tuple[int, type], object] = {}
        self.config_reloads = Counter(
            "osken_config_reloads", "Config reloads", ["result"], registry=r
        )

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A gauge of an app's, in this controller's registry."""
        return Gauge(name, doc, list(labels), registry=self.registry)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter of an app's, in this controller's registry."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> bool:
        """Expose /metrics over HTTP; a busy port is logged, never fatal."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            LOG.warning(
                "metrics: cannot listen on %s:%d (%s); continuing without them", host, port, exc
            )
            return False
        LOG.info("metrics: http://%s:%d/metrics", host, port)
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
        for table in range(n_tables):
            self.flows.labels(f"{dpid:016x}", str(table)).set(counts.get(table, 0))
