"""The exporters' formats without a network: /proc/net/ip_vs and ip_vs_stats
(the kernel's seq_show formats) and the Prometheus collector, from a real
Config + Engine served by the control server (tests/helpers/control_server.py)
with packets through the engine."""
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from scapy.layers.inet import IP, TCP

from helpers.control_server import ServedDirector
from userlb.exporters import procfs, prometheus, snapshot


def _director():
    d = ServedDirector()
    d.ok("-A", "-t", "10.0.0.100:80", "-s", "rr")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:8080", "-m", "-w", "3")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.2:80", "-m")
    d.ok("-A", "-u", "10.0.0.100:53", "-s", "wlc", "-o")
    d.ok("-A", "-t", "[2001:db8::1]:443", "-s", "sh", "-p", "600")
    d.ok("-a", "-t", "[2001:db8::1]:443", "-r", "[2001:db8:1::5]:443", "-m", "-w", "0")
    for sport in (40000, 40001, 40002):
        d.packet(IP(src="192.0.2.7", dst="10.0.0.100") / TCP(sport=sport, dport=80, flags="S"))
    return d


def test_ip_vs_formats():
    d = _director()
    try:
        snap = d.call(lambda: snapshot.take(d.config, d.engine))
    finally:
        d.close()
    text = procfs.render_ip_vs(snap)
    # services in creation order, destinations newest first (the kernel's lists)
    assert text == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
        "TCP  0A000064:0050 rr  \n"
        "  -> 0A010002:0050      Masq    1      2          0         \n"
        "  -> 0A010001:1F90      Masq    3      1          0         \n"
        "UDP  0A000064:0035 wlc ops  \n"
        "TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:01BB sh persistent 600 80000000\n"
        "  -> [2001:0db8:0001:0000:0000:0000:0000:0005]:01BB      Masq    0      0          0"
        "         \n")
    stats = procfs.render_ip_vs_stats(snap)
    assert stats.split("\n")[:2] == [
        "   Total Incoming Outgoing         Incoming         Outgoing",
        "   Conns  Packets  Packets            Bytes            Bytes"]
    assert stats.split("\n")[2] == f"{3:8X} {3:8X} {0:8X} {snap.totals[3]:16X} {0:16X}"
    assert snap.totals[3] == 3 * 40


def test_collector_names_and_values():
    d = _director()
    try:
        snap = d.call(lambda: snapshot.take(d.config, d.engine))
        listing = d.ok("-L", "-n", "--stats")
    finally:
        d.close()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(prometheus.UserlbCollector(lambda: snap))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    assert fams["node_ipvs_connections"].samples[0].value == 3
    assert fams["node_ipvs_incoming_packets"].samples[0].value == 3
    w = {(s.labels["remote_address"], s.labels["remote_port"]): s.value
         for s in fams["node_ipvs_backend_weight"].samples}
    assert w == {("10.1.0.1", "8080"): 3, ("10.1.0.2", "80"): 1, ("2001:db8:1::5", "443"): 0}
    act = {s.labels["remote_address"]: s.value
           for s in fams["node_ipvs_backend_connections_active"].samples}
    assert act == {"10.1.0.1": 1, "10.1.0.2": 2, "2001:db8:1::5": 0}   # SYN_RECV is active
    s = fams["node_ipvs_backend_connections_inactive"].samples[0]
    assert set(s.labels) == set(prometheus.BACKEND_LABELS)
    assert s.labels["proto"] == "TCP" and s.labels["local_mark"] == ""
    conns = {s.labels["remote_address"]: s.value
             for s in fams["userlb_backend_connections"].samples}
    # the same numbers as `ipvsadm -L -n --stats` prints
    for line in listing.splitlines():
        if line.startswith("  -> 10.1.0."):
            addr = line.split()[1].split(":")[0]
            assert conns[addr] == int(line.split()[2])
    assert fams["userlb_connection_entries"].samples[0].value == 3
    assert fams["userlb_connection_entries_limit"].samples[0].value > 0


def test_parse_listen():
    assert prometheus.parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert prometheus.parse_listen("[::1]:9100") == ("::1", 9100)
    assert prometheus.parse_listen(":9100") == ("0.0.0.0", 9100)
    for bad in ("9100", "host:9100", "1.2.3.4:0", "1.2.3.4:x"):
        try:
            prometheus.parse_listen(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
