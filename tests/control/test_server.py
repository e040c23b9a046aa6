"""The control socket server and its protocol, in-process: a Config, a real
Engine and the server on a uvloop loop (a thread), driven by the real `userlb
adm` client.  Outputs are compared line by line with hand-written ipvsadm
output (trailing blanks included)."""
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from helpers.control_server import ServedDirector, lines
from helpers.engine import CIP, VIP, tcp4, udp4
from userlb.control import protocol as P
from userlb.control.engine_sync import EngineSync
from userlb.control.server import ControlError, ControlServer
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, parse_addr


def ip(t):
    return parse_addr(t)[1]


@pytest.fixture
def d():
    srv = ServedDirector()
    try:
        yield srv
    finally:
        srv.close()


RULES = """\
-A -t 10.0.0.100:80 -s mh -b mh-fallback,mh-port
-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 2
-a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 3 -x 100 -y 50
-A -u 10.0.0.100:53 -s rr -o
-a -u 10.0.0.100:53 -r 10.1.0.1:53 -m
-A -t 10.0.0.100:443 -s wlc -p 600 -M 255.255.255.0
-a -t 10.0.0.100:443 -r 10.1.0.3:443 -m -w 0
-A -t [2001:db8::100]:80 -s sh -b sh-port
-a -t [2001:db8::100]:80 -r [2001:db8:1::1]:80 -m
"""

LISTING = [
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
    "  -> 10.1.0.1:80                  Masq    2      0          0         ",
    "  -> 10.1.0.2:8080                Masq    3      0          0         ",
    "TCP  10.0.0.100:443 wlc persistent 600 mask 255.255.255.0",
    "  -> 10.1.0.3:443                 Masq    0      0          0         ",
    "UDP  10.0.0.100:53 rr ops",
    "  -> 10.1.0.1:53                  Masq    1      0          0         ",
    "TCP  [2001:db8::100]:80 sh (sh-port)",
    "  -> [2001:db8:1::1]:80           Masq    1      0          0         ",
]

SAVED = [
    "-A -t 10.0.0.100:80 -s mh -b mh-fallback,mh-port",
    "-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 2",
    "-a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 3 -x 100 -y 50",
    "-A -t 10.0.0.100:443 -s wlc -p 600 -M 255.255.255.0",
    "-a -t 10.0.0.100:443 -r 10.1.0.3:443 -m -w 0",
    "-A -u 10.0.0.100:53 -s rr -o",
    "-a -u 10.0.0.100:53 -r 10.1.0.1:53 -m -w 1",
    "-A -t [2001:db8::100]:80 -s sh -b sh-port",
    "-a -t [2001:db8::100]:80 -r [2001:db8:1::1]:80 -m -w 1",
]


def engine_keys(d):
    return set(d.call(lambda: [s.key for s in d.engine.services()]))


# ------------------------------------------------------------------- socket

def test_socket_is_mode_0600_and_owned_by_the_director_user(d):
    st = os.stat(d.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_close_removes_the_socket_file():
    srv = ServedDirector()
    path = srv.path
    assert os.path.exists(path)
    srv.close()
    assert not os.path.exists(path)


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused():
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "c.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)          # bound, never listening: nobody answers
    stale.close()
    srv = ServedDirector(path=path)
    try:
        assert srv.ok("-L", "-n").startswith("IP Virtual Server")
        with pytest.raises(ControlError, match="another director is already serving"):
            ServedDirector(path=path)
    finally:
        srv.close()
    with open(path, "w") as f:
        f.write("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        ServedDirector(path=path)
    assert open(path).read() == "not a socket"


def test_the_directory_of_the_default_style_path_is_created():
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "run", "userlb", "control.sock")
    srv = ServedDirector(path=path)
    try:
        assert srv.ok("-Ln").startswith("IP Virtual Server")
    finally:
        srv.close()


def test_default_path_is_documented():
    assert P.DEFAULT_PATH == "/run/userlb/control.sock"
    from userlb.cli import adm, run
    assert P.DEFAULT_PATH in adm.__doc__
    assert P.DEFAULT_PATH in run.build_parser().format_help()


# -------------------------------------------------------------- each command

def test_empty_listing(d):
    assert lines(d.ok("-L", "-n")) == LISTING[:3]
    assert lines(d.ok()) == LISTING[:3]        # bare `ipvsadm` lists too
    assert d.ok("-S", "-n") == ""


def test_restore_then_list_save_and_service_listing(d):
    assert d.ok("-R", stdin=RULES) == ""
    assert lines(d.ok("-L", "-n")) == LISTING
    assert lines(d.ok("-l", "-n")) == LISTING
    assert lines(d.ok("-S", "-n")) == SAVED
    assert lines(d.ok("-L", "-n", "-t", "10.0.0.100:443")) == LISTING[1:3] + LISTING[6:8]
    assert lines(d.ok("-L", "-n", "-t", "[2001:db8::100]:80")) == LISTING[1:3] + LISTING[10:12]
    assert engine_keys(d) == {(IPPROTO_TCP, ip("10.0.0.100"), 80),
                              (IPPROTO_TCP, ip("10.0.0.100"), 443),
                              (IPPROTO_UDP, ip("10.0.0.100"), 53),
                              (IPPROTO_TCP, ip("2001:db8::100"), 80)}


def test_nosort_shows_creation_order_and_newest_destination_first(d):
    d.ok("-R", stdin=RULES)
    assert lines(d.ok("-L", "-n", "--nosort"))[3:6] == [
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.1.0.2:8080                Masq    3      0          0         ",
        "  -> 10.1.0.1:80                  Masq    2      0          0         ",
    ]


def test_thresholds_listing(d):
    d.ok("-R", stdin=RULES)
    assert lines(d.ok("-L", "-n", "--thresholds", "-t", "10.0.0.100:80")) == [
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.1.0.1:80                  0          0          0          0         ",
        "  -> 10.1.0.2:8080                100        50         0          0         ",
    ]


def test_add_edit_delete_service_and_destination(d):
    d.ok("-A", "-t", "10.0.0.100:80", "-s", "rr")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.2", "-m", "-w", "5")  # port = vport
    assert lines(d.ok("-Ln"))[3:] == [
        "TCP  10.0.0.100:80 rr",
        "  -> 10.1.0.1:80                  Masq    1      0          0         ",
        "  -> 10.1.0.2:80                  Masq    5      0          0         ",
    ]
    d.ok("-e", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", "-w", "7", "-x", "9", "-y", "3")
    d.ok("-E", "-t", "10.0.0.100:80", "-s", "sh", "-b", "sh-fallback", "-p", "30")
    assert lines(d.ok("-Ln"))[3:] == [
        "TCP  10.0.0.100:80 sh (sh-fallback) persistent 30",
        "  -> 10.1.0.1:80                  Masq    7      0          0         ",
        "  -> 10.1.0.2:80                  Masq    5      0          0         ",
    ]
    assert lines(d.ok("-Sn")) == [
        "-A -t 10.0.0.100:80 -s sh -p 30 -b sh-fallback",
        "-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 7 -x 9 -y 3",
        "-a -t 10.0.0.100:80 -r 10.1.0.2:80 -m -w 5",
    ]
    # -E without -s: back to wlc, flags and persistence cleared (ipvsadm)
    d.ok("-E", "-t", "10.0.0.100:80")
    assert lines(d.ok("-Ln"))[3] == "TCP  10.0.0.100:80 wlc"
    svc = d.config.get_service(IPPROTO_TCP, ip(VIP), 80)
    assert type(svc.sched).__name__.lower().startswith("wlc")
    d.ok("-d", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80")
    assert lines(d.ok("-Ln"))[3:] == [
        "TCP  10.0.0.100:80 wlc",
        "  -> 10.1.0.2:80                  Masq    5      0          0         ",
    ]
    d.ok("-A", "-u", "[2001:db8::1]:53", "-s", "mh")
    assert len(engine_keys(d)) == 2
    d.ok("-D", "-t", "10.0.0.100:80")
    assert lines(d.ok("-Ln"))[3:] == ["UDP  [2001:db8::1]:53 mh"]
    assert engine_keys(d) == {(IPPROTO_UDP, ip("2001:db8::1"), 53)}
    d.ok("-C")
    assert lines(d.ok("-Ln")) == LISTING[:3]
    assert engine_keys(d) == set()


def test_long_option_names(d):
    d.ok("--add-service", "--tcp-service", "10.0.0.100:80", "--scheduler", "mh",
         "--sched-flags", "mh-port")
    d.ok("--add-server", "--tcp-service", "10.0.0.100:80", "--real-server", "10.1.0.1:80",
         "--masquerading", "--weight", "4")
    d.ok("--edit-server", "--tcp-service", "10.0.0.100:80", "--real-server", "10.1.0.1:80",
         "--masquerading", "--weight", "6")
    assert lines(d.ok("--list", "--numeric"))[3:] == [
        "TCP  10.0.0.100:80 mh (mh-port)",
        "  -> 10.1.0.1:80                  Masq    6      0          0         ",
    ]
    d.ok("--delete-server", "--tcp-service", "10.0.0.100:80", "--real-server", "10.1.0.1:80")
    d.ok("--delete-service", "--tcp-service", "10.0.0.100:80")
    d.ok("--clear")
    assert lines(d.ok("--list", "--numeric")) == LISTING[:3]


def test_set_timeouts_reaches_engine(d):
    assert d.ok("-L", "--timeout") == "Timeout (tcp tcpfin udp): 900 120 300\n"
    d.ok("--set", "3600", "0", "60")            # 0 = unchanged
    assert d.ok("-L", "--timeout") == "Timeout (tcp tcpfin udp): 3600 120 60\n"
    assert d.call(d.engine.timeouts) == (3600, 120, 60)
    assert lines(d.ok("-S", "-n")) == ["--set 3600 120 60"]


STATS_RULES = """\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.1:53 -m
"""


def _traffic(d):
    """2 TCP connections (3 packets in, 1 reply, 40 bytes each) and one UDP
    flow of 3 datagrams of 33 bytes."""
    assert d.packet(tcp4(CIP, 40000, VIP, 80, "S"))[0] == 1
    assert d.packet(tcp4("10.1.0.1", 80, CIP, 40000, "SA"))[0] == 1
    assert d.packet(tcp4(CIP, 40000, VIP, 80, "A"))[0] == 1
    assert d.packet(tcp4(CIP, 40001, VIP, 80, "S"))[0] == 1
    for _ in range(3):
        assert d.packet(udp4(CIP, 5000, VIP, 53))[0] == 1


def test_stats_listing_and_exact(d):
    d.ok("-R", stdin=STATS_RULES)
    _traffic(d)
    assert lines(d.ok("-L", "-n", "--stats")) == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80                       2        3        1      120       40",
        "  -> 10.1.0.1:80                         2        3        1      120       40",
        "UDP  10.0.0.100:53                       1        3        0       99        0",
        "  -> 10.1.0.1:53                         1        3        0       99        0",
    ]
    svc = d.config.get_service(IPPROTO_TCP, ip(VIP), 80)
    svc.stats.inbytes = 123456789012
    out = lines(d.ok("-L", "-n", "--stats", "-t", "10.0.0.100:80"))
    assert out[2] == ("TCP  10.0.0.100:80                       2        3        1     123G"
                      "       40")
    out = lines(d.ok("-L", "-n", "--stats", "--exact", "-t", "10.0.0.100:80"))
    assert out[2] == ("TCP  10.0.0.100:80                       2        3        1 123456789012"
                      "       40")


def test_active_inactive_counts_and_connection_listing(d):
    d.ok("-R", stdin=STATS_RULES)
    _traffic(d)
    assert lines(d.ok("-Ln"))[3:] == [
        "TCP  10.0.0.100:80 rr",
        "  -> 10.1.0.1:80                  Masq    1      2          0         ",
        "UDP  10.0.0.100:53 rr",
        "  -> 10.1.0.1:53                  Masq    1      0          1         ",
    ]
    out = lines(d.ok("-L", "-n", "-c"))
    assert out[:2] == ["IPVS connection entries",
                       "pro expire state       source             virtual            destination"]
    assert sorted(out[2:]) == sorted([
        "TCP 15:00  ESTABLISHED 192.0.2.10:40000   10.0.0.100:80      10.1.0.1:80",
        "TCP 01:00  SYN_RECV    192.0.2.10:40001   10.0.0.100:80      10.1.0.1:80",
        "UDP 05:00  UDP         192.0.2.10:5000    10.0.0.100:53      10.1.0.1:53",
    ])
    d.now += 30.5
    out = lines(d.ok("-Lnc"))
    assert sorted(out[2:]) == sorted([
        "TCP 14:29  ESTABLISHED 192.0.2.10:40000   10.0.0.100:80      10.1.0.1:80",
        "TCP 00:29  SYN_RECV    192.0.2.10:40001   10.0.0.100:80      10.1.0.1:80",
        "UDP 04:29  UDP         192.0.2.10:5000    10.0.0.100:53      10.1.0.1:53",
    ])


def test_zero_service_and_all_including_engine_totals_and_rates(d):
    d.ok("-R", stdin=STATS_RULES)
    est = d.server.estimators
    d.call(lambda: est.tick(d.now))
    _traffic(d)
    d.now += 2
    d.call(lambda: est.tick(d.now))
    assert d.call(lambda: est.rates(d.engine.stats))[1] > 0
    d.ok("-Z", "-u", "10.0.0.100:53")
    assert lines(d.ok("-L", "-n", "--stats"))[3:] == [
        "TCP  10.0.0.100:80                       2        3        1      120       40",
        "  -> 10.1.0.1:80                         2        3        1      120       40",
        "UDP  10.0.0.100:53                       0        0        0        0        0",
        "  -> 10.1.0.1:53                         0        0        0        0        0",
    ]
    udp = d.config.get_service(IPPROTO_UDP, ip(VIP), 53)
    tcp = d.config.get_service(IPPROTO_TCP, ip(VIP), 80)
    assert est.rates(udp.stats) == (0, 0, 0, 0, 0)
    assert est.rates(tcp.stats) != (0, 0, 0, 0, 0)
    assert d.engine.stats.inpkts == 6          # 3 TCP + 3 UDP
    d.ok("-Z")
    zero = "        0" * 5
    assert lines(d.ok("-L", "-n", "--stats"))[3:] == [
        "TCP  10.0.0.100:80               " + zero,
        "  -> 10.1.0.1:80                 " + zero,
        "UDP  10.0.0.100:53               " + zero,
        "  -> 10.1.0.1:53                 " + zero,
    ]
    assert d.engine.stats.as_tuple() == (0, 0, 0, 0, 0)
    assert est.rates(tcp.stats) == (0, 0, 0, 0, 0)
    assert est.rates(d.engine.stats) == (0, 0, 0, 0, 0)
    # -Z never touches the connection entries
    assert len(lines(d.ok("-Lnc"))) == 2 + 3


def test_rate_listing(d):
    d.ok("-R", stdin=STATS_RULES)
    est = d.server.estimators
    d.call(lambda: est.tick(d.now))
    for _ in range(100):
        d.packet(udp4(CIP, 5000, VIP, 53))
    d.now += 2
    d.call(lambda: est.tick(d.now))
    # one 2 s step: d = 100 packets, 3300 bytes, 1 connection ->
    # inpps (((100 << 9) >> 2) + 0x1FF) >> 10 = 12, inbps ((3300 << 4 >> 2) + 0xF) >> 5 = 412,
    # cps ((1 << 9 >> 2) + 0x1FF) >> 10 = 0
    assert lines(d.ok("-L", "-n", "--rate")) == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80                       0        0        0        0        0",
        "  -> 10.1.0.1:80                         0        0        0        0        0",
        "UDP  10.0.0.100:53                       0       12        0      412        0",
        "  -> 10.1.0.1:53                         0       12        0      412        0",
    ]


def test_rates_are_the_engines_estimators_stepped_by_expire(d):
    """In `userlb run` the driver's 1 s timer calls engine.expire(now), which
    steps engine.rates; the server reads those (no second set)."""
    assert d.server.estimators is d.engine.rates and not d.server.own_estimators
    d.ok("-R", stdin=STATS_RULES)
    udp = d.config.get_service(IPPROTO_UDP, ip(VIP), 53)
    assert d.engine.rates.get(udp.stats) is not None        # tracked after the change
    d.call(lambda: d.engine.expire(d.now))
    d.packet(udp4(CIP, 5000, VIP, 53))
    d.now += 2
    d.call(lambda: d.engine.expire(d.now))
    assert d.engine.rates.rates(udp.stats)[3] > 0
    assert lines(d.ok("-L", "-n", "--rate", "-u", "10.0.0.100:53"))[2].split()[2:] == \
        [str(x) for x in d.engine.rates.rates(udp.stats)]


def test_server_keeps_its_own_estimators_when_given_some():
    from userlb.control.config import Config
    from userlb.dataplane.engine import Engine as RealEngine
    from userlb.dataplane.stats import RateEstimators

    eng = RealEngine()
    srv = ControlServer("/nonexistent/c.sock", Config(), eng, clock=lambda: 0.0,
                        estimators=RateEstimators())
    assert srv.own_estimators and srv.estimators is not eng.rates
    assert srv.handle({"rules": STATS_RULES})["ok"]
    udp = srv.config.get_service(IPPROTO_UDP, ip(VIP), 53)
    est = srv.estimators
    assert est.get(udp.stats) is not None
    est.tick(0.0)
    udp.stats.inpkts += 100
    eng.stats.inpkts += 100
    est.tick(2.0)
    assert est.rates(udp.stats)[1] == 12 and est.rates(eng.stats)[1] == 12
    assert srv.handle({"argv": ["-Z"]})["ok"]
    assert est.rates(udp.stats) == est.rates(eng.stats) == (0, 0, 0, 0, 0)
    assert eng.stats.inpkts == 0


def test_mhs_listing_shows_unstable_slots_and_entries(d):
    d.ok("-A", "-t", "10.0.0.100:80", "-s", "mhs")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m")
    assert lines(d.ok("-Ln"))[3] == "TCP  10.0.0.100:80 mhs unstable 0 entries 0"
    for i in range(5):
        assert d.packet(tcp4(CIP, 41000 + i, VIP, 80, "S"))[0] == 1
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.2:80", "-m")
    for i in range(5):
        d.packet(tcp4(CIP, 42000 + i, VIP, 80, "S"))
    svc = d.config.get_service(IPPROTO_TCP, ip(VIP), 80)
    unstable = d.call(svc.sched.unstable_slots)
    entries = d.call(lambda: sum(1 for e in d.engine.entry_objects() if e.xl.svc is svc))
    assert unstable > 0
    assert lines(d.ok("-Ln"))[3] == f"TCP  10.0.0.100:80 mhs unstable {unstable} entries {entries}"
    assert len(lines(d.ok("-Lnc"))) == 2 + entries


# ------------------------------------------------------------ live changes

def test_changes_never_flush_entries_and_deleted_dest_is_handled_as_ipvs(d):
    d.ok("-R", stdin=STATS_RULES)
    _traffic(d)
    n = len(d.engine)
    d.ok("-E", "-t", "10.0.0.100:80", "-s", "wlc")
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.9:80", "-m")
    d.ok("--set", "100", "20", "30")
    assert len(d.engine) == n
    # established connection keeps its server across the changes
    v, out = d.packet(tcp4(CIP, 40000, VIP, 80, "A"))
    assert v == 1 and out[16:20] == bytes([10, 1, 0, 1])
    # its destination deleted: entries stay, packets dropped (IPVS without
    # expire_nodest_conn); re-added: the same Dest comes back and they flow
    d.ok("-d", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80")
    assert len(d.engine) == n
    assert d.packet(tcp4(CIP, 40000, VIP, 80, "A"))[0] == 0
    assert d.engine.last_reason == "dest_unavailable"
    d.ok("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m")
    assert d.packet(tcp4(CIP, 40000, VIP, 80, "A"))[0] == 1


def test_new_service_is_dispatched_at_once(d):
    assert d.packet(udp4(CIP, 5000, VIP, 53))[0] == 0
    d.ok("-A", "-u", "10.0.0.100:53", "-s", "rr")
    d.ok("-a", "-u", "10.0.0.100:53", "-r", "10.1.0.1:53", "-m")
    v, out = d.packet(udp4(CIP, 5000, VIP, 53))
    assert v == 1 and out[16:20] == bytes([10, 1, 0, 1])
    d.ok("-D", "-u", "10.0.0.100:53")
    # the entry stays (never flushed), its destination is gone with the service
    assert d.packet(udp4(CIP, 5000, VIP, 53))[0] == 0


def test_sloppy_tcp_switch_and_settings(d):
    d.ok("-R", stdin=STATS_RULES)
    assert lines(d.ok("--show-settings"))[0] == "sloppy_tcp = 0"
    v, _ = d.packet(tcp4(CIP, 43000, VIP, 80, "A"))     # mid-stream ACK, no entry
    assert v == 2 and len(d.engine) == 0                 # answered with RST
    assert lines(d.ok("--sloppy-tcp", "on"))[0] == "sloppy_tcp = 1"
    assert d.engine.sloppy_tcp is True
    assert d.packet(tcp4(CIP, 43001, VIP, 80, "A"))[0] == 1
    assert len(d.engine) == 1
    assert "conn_entries = 1" in lines(d.ok("--show-settings"))
    assert lines(d.ok("--sloppy-tcp=off"))[0] == "sloppy_tcp = 0"
    assert d.engine.sloppy_tcp is False


def test_max_entries_live_and_settings(d):
    d.ok("-R", stdin=STATS_RULES)
    assert "max_entries = 1000000" in lines(d.ok("--show-settings"))
    assert "max_entries = 2" in lines(d.ok("--max-entries", "2"))
    assert d.engine.max_entries == 2
    for port in (43000, 43001, 43002):
        d.packet(tcp4(CIP, port, VIP, 80, "S"))
    assert len(d.engine) == 2
    out = lines(d.ok("--show-settings"))
    assert "conn_entries = 2" in out and "conn_limit_drops = 1" in out
    assert "max_entries = 10" in lines(d.ok("--max-entries=10", "--sloppy-tcp", "on"))
    assert d.engine.sloppy_tcp is True
    assert d.packet(tcp4(CIP, 43003, VIP, 80, "S"))[0] == 1 and len(d.engine) == 3
    for bad in (["--max-entries", "0"], ["--max-entries", "-5"], ["--max-entries", "x"],
                ["--max-entries", "100000001"], ["--max-entries", "5", "-L"]):
        rc, out, err = d.adm(*bad)
        assert rc != 0 and "max-entries" in err.replace("_", "-"), (bad, rc, err)
    assert d.engine.max_entries == 10


# ------------------------------------------------------- -S | -R round trip

def test_save_restore_round_trip(d):
    d.ok("-R", stdin=RULES)
    d.ok("--set", "1000", "100", "200")
    d.ok("-A", "-u", "10.0.0.7:500", "-s", "mh", "--mh-table-size", "251", "-b", "mh-fallback")
    d.ok("-a", "-u", "10.0.0.7:500", "-r", "10.1.0.5:501", "-m", "-w", "0")
    saved = d.ok("-S", "-n")
    listing = d.ok("-L", "-n")
    other = ServedDirector()
    try:
        other.ok("-R", stdin=saved)
        assert other.ok("-S", "-n") == saved
        assert other.ok("-L", "-n") == listing
        assert other.ok("-L", "--timeout") == d.ok("-L", "--timeout")
        # ipvsadm-restore = -C then -R: on the same director, same config again
        d.ok("-R", stdin="-C\n" + saved)
        assert d.ok("-S", "-n") == saved
    finally:
        other.close()


# ------------------------------------------------- refused commands change nothing

BAD = [
    # (argv, exit status, stderr)
    (["-A", "-t", "10.0.0.100:80"], 255, "Service already exists"),
    (["-E", "-t", "10.0.0.100:81"], 255, "No such service"),
    (["-D", "-t", "10.0.0.100:81"], 255, "No such service"),
    (["-a", "-t", "10.0.0.100:81", "-r", "10.1.0.1", "-m"], 255, "Service not defined"),
    (["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m"], 255, "Destination already exists"),
    (["-e", "-t", "10.0.0.100:80", "-r", "10.1.0.7:80", "-m"], 255, "No such destination"),
    (["-d", "-t", "10.0.0.100:80", "-r", "10.1.0.7:80"], 255, "No such destination"),
    (["-Z", "-t", "10.0.0.100:81"], 255, "No such service"),
    (["-L", "-t", "10.0.0.100:81"], 255, "No such service"),
    (["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.7:80", "-g", "--tun-csum"], 2,
     "Tunnel options conflict with forward method"),
    (["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.7:80", "-m", "-w", "2147483648"], 2,
     "illegal weight specified"),
    (["-A", "-t", "10.0.0.100:82", "-s", "nosuch"], 2, "Scheduler not found"),
    (["-A", "-t", "10.0.0.100:82", "-s", "rr", "-b", "mh-port"], 2,
     "incompatible scheduler flag `mh-port'"),
    (["-A", "-t", "10.0.0.100:82", "-w", "3"], 2,
     "Illegal 'weight' option with the 'add-service' command"),
    (["-A", "-t", "10.0.0.100"], 2, "Zero port specified for non-persistent service"),
    (["-A", "-t", "[2001:db8::1:82"], 2, "illegal virtual server address[:port] specified"),
    (["-A", "-D", "-t", "10.0.0.100:82"], 2, "multiple commands specified"),
    (["--set", "1", "2"], 2, "--set option requires 3 timeout values"),
    (["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.7:80", "-m", "-x", "1", "-y", "2"], 255,
     "Numerical result out of range (the lower threshold -y 2 is above the upper "
     "threshold -x 1)"),
    (["-L", "--stats", "-c"], 2, "options conflicts in the list command"),
]


@pytest.mark.parametrize("argv,status,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_commands_leave_the_state_unchanged(d, argv, status, message):
    d.ok("-R", stdin=STATS_RULES)
    before = (d.ok("-S", "-n"), d.ok("-L", "-n"), engine_keys(d))
    rc, out, err = d.adm(*argv)
    assert rc == status
    assert out == ""
    assert message in err and err.endswith("\n")
    assert (d.ok("-S", "-n"), d.ok("-L", "-n"), engine_keys(d)) == before


def test_bad_commands_are_refused_by_the_server_too(d):
    """The client checks syntax locally; the server must not rely on it."""
    d.ok("-R", stdin=STATS_RULES)
    before = d.ok("-S", "-n")
    for argv, status, message in BAD:
        r = P.request(d.path, {"argv": argv})
        assert r["ok"] is False and r["status"] == status and message in r["error"], argv
    assert d.ok("-S", "-n") == before


def test_restore_is_atomic_and_names_the_bad_line(d):
    d.ok("-R", stdin=STATS_RULES)
    before = d.ok("-S", "-n")
    rules = ("-A -t 10.0.0.101:80 -s rr\n"
             "-a -t 10.0.0.101:80 -r 10.1.0.1:80 -m\n"
             "# a comment\n"
             "-a -t 10.0.0.101:80 -r 10.1.0.9:80 -m\n"
             "-d -t 10.0.0.100:80 -r 10.1.0.7:80\n")
    rc, out, err = d.adm("-R", stdin=rules)
    assert rc == 255
    assert err == "line 5: No such destination: -d -t 10.0.0.100:80 -r 10.1.0.7:80\n"
    assert d.ok("-S", "-n") == before
    rc, out, err = d.adm("-R", stdin="-A -t 10.0.0.101:80\n-a -t 10.0.0.101:80 -r 10.1.0.1 -w x\n")
    assert rc == 2
    assert err == "line 2: illegal weight specified: -a -t 10.0.0.101:80 -r 10.1.0.1 -w x\n"
    assert d.ok("-S", "-n") == before
    rc, out, err = d.adm("-R", stdin="-R\n")
    assert rc == 2 and err.startswith("line 1: ")
    assert d.ok("-S", "-n") == before
    # a good batch lands as a whole
    d.ok("-R", stdin=rules.rsplit("\n", 2)[0] + "\n")
    assert lines(d.ok("-Ln", "-t", "10.0.0.101:80"))[2:] == [
        "TCP  10.0.0.101:80 rr",
        "  -> 10.1.0.1:80                  Masq    1      0          0         ",
        "  -> 10.1.0.9:80                  Masq    1      0          0         ",
    ]


# ------------------------------------------------------------------ protocol

def _raw(path, payload):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return [json.loads(x) for x in buf.decode().splitlines()]


def test_several_requests_on_one_connection_with_ids(d):
    reqs = [{"argv": ["-A", "-t", "10.0.0.1:80", "-s", "rr"], "id": 1},
            {"rules": "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n", "id": "two"},
            {"argv": ["-S", "-n"], "id": [3]},
            {"settings": {}, "id": None}]
    out = _raw(d.path, b"".join(P.encode(r) for r in reqs))
    assert [r.get("id") for r in out] == [1, "two", [3], None]
    assert all(r["ok"] and r["error"] == "" and r["status"] == 0 for r in out)
    assert out[2]["output"] == "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n"


@pytest.mark.parametrize("payload,message", [
    (b"not json\n", "not a JSON line"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"argv": "-L"}\n', "'argv' must be a list of strings"),
    (b'{"argv": ["-L"], "rules": ""}\n', "exactly one of"),
    (b'{}\n', "exactly one of"),
    (b'{"settings": {"sloppy_tcp": "yes"}}\n', "sloppy_tcp must be true or false"),
    (b'{"settings": {"dec_ttl": true}}\n', "unknown setting"),
    (b'{"argv": ["-R"], "stdin": 5}\n', "'stdin' must be a string"),
])
def test_malformed_requests_get_an_error_and_change_nothing(d, payload, message):
    d.ok("-R", stdin=STATS_RULES)
    before = d.ok("-S", "-n")
    (r,) = _raw(d.path, payload)
    assert r["ok"] is False and r["status"] == 2 and message in r["error"]
    assert d.ok("-S", "-n") == before
    assert d.engine.sloppy_tcp is False


def test_an_internal_error_is_reported_and_the_server_keeps_serving(d):
    def boom(event, svc, dest):
        raise RuntimeError("subscriber bug")
    d.config.subscribe(boom)
    r = P.request(d.path, {"argv": ["-A", "-t", "10.0.0.1:80"]})
    assert r["ok"] is False and r["status"] == 1 and "subscriber bug" in r["error"]
    d.config.unsubscribe(boom)
    assert d.ok("-L", "-n").startswith("IP Virtual Server")


def test_engine_sync_flushes_changes_made_outside_requests(d):
    """SIGHUP reloads change the Config outside a request: flushed on the loop."""
    d.call(lambda: d.config.apply("-A -t 10.0.0.1:80 -s rr"))
    d.call(lambda: None)          # the call_soon flush has run by now
    assert engine_keys(d) == {(IPPROTO_TCP, ip("10.0.0.1"), 80)}


def test_engine_sync_rebuilds_once_per_batch():
    from userlb.control.config import Config
    from userlb.dataplane.engine import Engine

    class CountingEngine(Engine):
        sets = 0

        def set_services(self, services):
            self.sets += 1
            super().set_services(services)

    eng = CountingEngine()
    sync = EngineSync(Config(), eng)
    sync.begin()
    sync.config.load_rules("".join(f"-A -t 10.0.0.1:{p} -s rr\n" for p in range(1, 50)))
    assert eng.sets == 0
    sync.end()
    assert eng.sets == 1


# -------------------------------------------------------------- access rule

def _as_nobody(path):
    """Connect + one request as uid/gid 65534 (nobody) in a child process."""
    code = (
        "import socket, sys, json\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(json.dumps({'connect_error': e.errno})); sys.exit(0)\n"
        "s.sendall(b'{\"argv\": [\"-L\", \"-n\"]}\\n' + b'{\"argv\": [\"-C\"]}\\n')\n"
        "buf = b''\n"
        "while True:\n"
        "    c = s.recv(65536)\n"
        "    if not c: break\n"
        "    buf += c\n"
        "print(json.dumps({'lines': buf.decode().splitlines()}))\n")
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-I", "-c", code, path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run a client as another user)")
def test_socket_refuses_a_user_other_than_its_owner():
    import errno
    top = tempfile.mkdtemp()
    os.chmod(top, 0o755)                     # nobody may reach the socket's directory
    srv = ServedDirector(path=os.path.join(top, "control.sock"))
    try:
        srv.ok("-R", stdin=STATS_RULES)
        before = srv.ok("-S", "-n")
        # layer 1: the file mode (0600) keeps others out
        assert _as_nobody(srv.path) == {"connect_error": errno.EACCES}
        # layer 2: even through an opened-up file, the server checks SO_PEERCRED
        os.chmod(srv.path, 0o666)
        res = _as_nobody(srv.path)
        assert len(res["lines"]) == 1             # one refusal, then the server hangs up
        r = json.loads(res["lines"][0])
        assert r["ok"] is False and r["output"] == "" and r["status"] == 2
        assert r["error"].startswith("permission denied: only the director's user (uid 0)")
        assert srv.ok("-S", "-n") == before
        assert srv.server.refused_peers == 1
    finally:
        srv.close()


def test_root_is_not_allowed_unless_it_is_the_owner():
    """The server compares the peer's uid with the owner's, nothing else."""
    srv = ServedDirector()
    try:
        srv.server.owner_uid = os.geteuid() + 1      # pretend another user runs it
        rc, out, err = srv.adm("-L", "-n")
        assert rc == 2 and out == "" and err.startswith("permission denied")
    finally:
        srv.close()


# --------------------------------------------------------------- no director

def test_no_director_is_a_clear_message():
    path = os.path.join(tempfile.mkdtemp(), "nothing.sock")
    import io

    from helpers.control_server import adm_cli
    err = io.StringIO()
    rc = adm_cli.main(["--control", path, "-L", "-n"], stdout=io.StringIO(), stderr=err)
    assert rc == 2
    assert err.getvalue() == (f"no userlb director is listening on {path} "
                              f"(is `userlb run` running?)\n")
    # a stale socket file (the director died) reads the same
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    err = io.StringIO()
    rc = adm_cli.main(["--control", path, "-C"], stdout=io.StringIO(), stderr=err)
    s.close()
    assert rc == 2 and err.getvalue().startswith("no userlb director is listening on")


def test_server_without_socket_handles_requests():
    from userlb.control.config import Config
    from userlb.dataplane.engine import Engine
    srv = ControlServer("/nonexistent/c.sock", Config(), Engine())
    r = srv.handle({"argv": ["-A", "-t", "10.0.0.1:80"]})
    assert r == {"ok": True, "output": "", "error": "", "status": 0}
    assert srv.engine.services()[0].key == (IPPROTO_TCP, ip("10.0.0.1"), 80)


def test_persistent_conn_listing(d):
    d.ok("-R", stdin=RULES)
    assert lines(d.ok("-L", "-n", "--persistent-conn", "-t", "10.0.0.100:443")) == [
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:443 wlc persistent 600 mask 255.255.255.0",
        "  -> 10.1.0.3:443                 0         0           0          0         ",
    ]


def test_persistence_options_are_stored_listed_and_saved(d):
    d.ok("-A", "-t", "[2001:db8::100]:0", "-s", "sh", "-p", "-M", "64")
    d.ok("-A", "-u", "10.0.0.100:0", "-s", "rr", "-p", "7")
    assert lines(d.ok("-Ln"))[3:] == [
        "UDP  10.0.0.100:0 rr persistent 7",
        "TCP  [2001:db8::100]:0 sh persistent 360 mask 64",
    ]
    assert lines(d.ok("-Sn")) == [
        "-A -u 10.0.0.100:0 -s rr -p 7",
        "-A -t [2001:db8::100]:0 -s sh -p 360 -M 64",
    ]
    svc = d.config.get_service(IPPROTO_TCP, ip("2001:db8::100"), 0)
    assert (svc.timeout, svc.netmask) == (360, 64)


# ------------------------------------------------------- the `userlb run` hook

class _FakeDirector:
    def __init__(self, control):
        from userlb.control.config import Config
        from userlb.dataplane.engine import Engine

        self.control_path = control
        self.cfg = Config()
        self.engine = Engine()
        self.sync = EngineSync(self.cfg, self.engine)
        self.route_updates = 0

    def update_routes(self):
        self.route_updates += 1


def _run(coro):
    import uvloop
    return uvloop.run(coro)


def test_start_for_director_serves_and_updates_routes_after_changes():
    from userlb.control.server import start_for_director
    path = os.path.join(tempfile.mkdtemp(), "c.sock")
    fd = _FakeDirector(path)

    async def scenario():
        import asyncio
        srv = await start_for_director(fd)
        loop = asyncio.get_running_loop()
        r1 = await loop.run_in_executor(None, P.request, path,
                                        {"argv": ["-A", "-t", "10.0.0.1:80"]})
        r2 = await loop.run_in_executor(None, P.request, path, {"argv": ["-L", "-n"]})
        r3 = await loop.run_in_executor(None, P.request, path, {"argv": ["--set", "5", "5", "5"]})
        srv.close()
        return r1, r2, r3
    r1, r2, r3 = _run(scenario())
    assert r1["ok"] and r2["ok"] and r3["ok"]
    assert fd.route_updates == 1            # only the change of services
    assert [s.key for s in fd.engine.services()] == [(IPPROTO_TCP, ip("10.0.0.1"), 80)]
    assert not os.path.exists(path)


def test_start_for_director_busy_paths(monkeypatch):
    from userlb.control import server as S
    busy = ServedDirector()
    try:
        # an explicit --control PATH that is taken stops the director
        with pytest.raises(SystemExit):
            _run(S.start_for_director(_FakeDirector(busy.path)))
        # the default path taken (another director, perhaps in another
        # network namespace): refused too, the other director untouched
        monkeypatch.setattr(S, "DEFAULT_PATH", busy.path)
        with pytest.raises(SystemExit):
            _run(S.start_for_director(_FakeDirector(None)))
        assert busy.ok("-L", "-n").startswith("IP Virtual Server")   # untouched
    finally:
        busy.close()


def test_every_change_is_logged_with_who_and_what(d):
    logged = []
    d.server.log = logged.append
    d.ok("-A", "-t", "10.0.0.100:80", "-s", "rr")
    d.ok("-L", "-n")                                   # read-only: not logged
    d.ok("--show-settings")                            # read-only: not logged
    rc, _, _ = d.adm("-a", "-t", "10.0.0.101:80", "-r", "10.1.0.1:80", "-m")  # no such service
    assert rc != 0
    d.ok("-R", stdin="-a -t 10.0.0.100:80 -r 10.1.0.2:80 -m\n")
    d.ok("--max-entries", "50")
    me = f"uid {os.getuid()} pid {os.getpid()} "
    changes = [x for x in logged if x.startswith("control: uid")]
    assert len(changes) == 4, logged
    assert all(x.startswith("control: " + me) for x in changes), changes
    assert changes[0].endswith(": -A -t 10.0.0.100:80 -s rr: ok")
    assert ": -a -t 10.0.0.101:80 -r 10.1.0.1:80 -m: refused: " in changes[1]
    assert changes[2].endswith(": -R: ok")
    assert changes[3].endswith(": settings max_entries=50: ok")
    assert not any("-L" in x for x in logged)
