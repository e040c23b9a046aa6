"""`userlb run --metrics ADDR:PORT`: a Prometheus `/metrics` endpoint.

Served by the official `prometheus_client` library (its HTTP server runs in
a thread); the collector reads only the latest `Snapshot` (taken once a second
on the event loop), never the live configuration.

Names and labels of node_exporter's IPVS collector, so dashboards made for
kernel IPVS work unchanged:

    node_ipvs_connections_total, node_ipvs_incoming_packets_total,
    node_ipvs_outgoing_packets_total, node_ipvs_incoming_bytes_total,
    node_ipvs_outgoing_bytes_total                      (director totals)
    node_ipvs_backend_connections_active, node_ipvs_backend_connections_inactive,
    node_ipvs_backend_weight
        {local_address,local_port,remote_address,remote_port,proto,local_mark}

userlb's own:

    userlb_service_{connections,incoming_packets,outgoing_packets,
                    incoming_bytes,outgoing_bytes}_total{proto,local_address,local_port}
    userlb_backend_{...same five...}_total{...backend labels...}
    userlb_backend_connections_persistent{...}
    userlb_drops_total{reason}, userlb_replies_total{kind}
    userlb_connection_entries, userlb_connection_entries_limit
    userlb_tun_{name}_total   (the TUN driver's counters: rx, tx, drops,
                              write_errors, batches, vnet_* offload counters)
    userlb_mhs_unstable_slots{proto,local_address,local_port}
    userlb_snapshot_timestamp_seconds
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .snapshot import Snapshot

BACKEND_LABELS = ["local_address", "local_port", "remote_address", "remote_port", "proto",
                  "local_mark"]
SERVICE_LABELS = ["proto", "local_address", "local_port"]
_FIVE = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
         "outgoing_bytes")
_FIVE_HELP = ("connections", "incoming packets", "outgoing packets", "incoming bytes",
              "outgoing bytes")


def _ip(addr: int | bytes) -> str:
    if isinstance(addr, int):
        return str(ipaddress.IPv4Address(addr))
    return str(ipaddress.IPv6Address(addr))


class UserlbCollector(Collector):
    def __init__(self, latest: Callable[[], Snapshot | None]):
        self.latest = latest

    def collect(self) -> Iterator:
        snap = self.latest()
        if snap is None:
            return
        for i, (name, text) in enumerate(zip(_FIVE, _FIVE_HELP, strict=True)):
            yield CounterMetricFamily(f"node_ipvs_{name}", f"The total number of {text}.",
                                      value=snap.totals[i])
        active = GaugeMetricFamily("node_ipvs_backend_connections_active",
                                   "The current active connections by local and remote address.",
                                   labels=BACKEND_LABELS)
        inactive = GaugeMetricFamily("node_ipvs_backend_connections_inactive",
                                     "The current inactive connections by local and remote "
                                     "address.", labels=BACKEND_LABELS)
        weight = GaugeMetricFamily("node_ipvs_backend_weight",
                                   "The current backend weight by local and remote address.",
                                   labels=BACKEND_LABELS)
        persist = GaugeMetricFamily("userlb_backend_connections_persistent",
                                    "Persistence templates pointing at the backend.",
                                    labels=BACKEND_LABELS)
        b5 = [CounterMetricFamily(f"userlb_backend_{n}", f"The backend's {t}.",
                                  labels=BACKEND_LABELS) for n, t in zip(_FIVE, _FIVE_HELP,
                                                                         strict=True)]
        s5 = [CounterMetricFamily(f"userlb_service_{n}", f"The virtual service's {t}.",
                                  labels=SERVICE_LABELS) for n, t in zip(_FIVE, _FIVE_HELP,
                                                                         strict=True)]
        unstable = GaugeMetricFamily("userlb_mhs_unstable_slots",
                                     "Unstable slots of an mhs service's table.",
                                     labels=SERVICE_LABELS)
        for s in snap.services:
            sl = [s.proto, _ip(s.addr), str(s.port)]
            for m, v in zip(s5, s.stats, strict=True):
                m.add_metric(sl, v)
            if s.unstable_slots is not None:
                unstable.add_metric(sl, s.unstable_slots)
            for d in s.dests:
                bl = [_ip(s.addr), str(s.port), _ip(d.addr), str(d.port), s.proto, ""]
                active.add_metric(bl, d.active)
                inactive.add_metric(bl, d.inactive)
                weight.add_metric(bl, d.weight)
                persist.add_metric(bl, d.persist)
                for m, v in zip(b5, d.stats, strict=True):
                    m.add_metric(bl, v)
        yield from (active, inactive, weight, persist, *b5, *s5, unstable)

        drops = CounterMetricFamily("userlb_drops", "Packets dropped by the engine, by reason.",
                                    labels=["reason"])
        for k, v in sorted(snap.drops.items()):
            drops.add_metric([str(k)], v)
        yield drops
        replies = CounterMetricFamily("userlb_replies", "Replies the engine generated "
                                      "(RST, ICMP), by kind.", labels=["kind"])
        for k, v in sorted(snap.replies.items()):
            replies.add_metric([str(k)], v)
        yield replies
        yield GaugeMetricFamily("userlb_connection_entries", "Connection table entries.",
                                value=snap.entries)
        yield GaugeMetricFamily("userlb_connection_entries_limit",
                                "Maximum connection table entries.", value=snap.max_entries)
        for k, v in sorted(snap.driver.items()):
            yield CounterMetricFamily(f"userlb_tun_{k}", f"TUN driver counter {k}.", value=v)
        yield GaugeMetricFamily("userlb_snapshot_timestamp_seconds",
                                "When the counters above were copied.", value=snap.taken)


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT' or ':PORT' -> (addr, port); ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics: expected ADDR:PORT, not {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    ipaddress.ip_address(host)   # ValueError for a name
    return host, int(port)


def serve(listen: str, latest: Callable[[], Snapshot | None]):
    """Start the HTTP server (a daemon thread) -> (server, thread)."""
    from prometheus_client import start_http_server
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UserlbCollector(latest))
    return start_http_server(port, addr=host, registry=registry)
