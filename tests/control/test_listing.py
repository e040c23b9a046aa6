"""ipvsadm output formats, compared line by line with hand-written ipvsadm
output (trailing blanks included: ipvsadm pads the last column)."""
import pytest

from userlb.clock import ManualClock
from userlb.control import listing as L
from userlb.control.config import Config
from userlb.control.ipvsadm import parse_argv
from userlb.errors import ConfigError
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, parse_addr

RULES = """\
-A -t 10.0.0.100:80 -s mh -b mh-fallback,mh-port
-a -t 10.0.0.100:80 -r 10.0.0.2:8080 -m -w 3 -x 100 -y 50
-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m
-A -u 10.0.0.100:53 -s rr -p -M 255.255.255.0 -o -b flag-2
-a -u 10.0.0.100:53 -r 192.168.1.10:5353 -m -w 0
-A -t [2001:db8::100]:443 -s sh -b sh-port -p 60 -M 64 --sh-tab-bits 10
-a -t [2001:db8::100]:443 -r [2001:db8::1]:443 -m -w 65535
"""


def ip(t):
    return parse_addr(t)[1]


@pytest.fixture
def cfg():
    c = Config(clock=ManualClock(0))
    c.load_rules(RULES)
    svc = c.services[(IPPROTO_TCP, ip("10.0.0.100"), 80)]
    d1 = svc.find_dest(ip("10.0.0.1"), 80)
    d2 = svc.find_dest(ip("10.0.0.2"), 8080)
    d1.activeconns, d1.inactconns = 12, 345
    d2.persistconns = 7
    return c


def lines(text):
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_list_numeric(cfg):
    assert lines(L.list_all(cfg)) == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.0.0.1:80                  Masq    1      12         345       ",
        "  -> 10.0.0.2:8080                Masq    3      0          0         ",
        "UDP  10.0.0.100:53 rr (flag-2) persistent 360 mask 255.255.255.0 ops",
        "  -> 192.168.1.10:5353            Masq    0      0          0         ",
        "TCP  [2001:db8::100]:443 sh (sh-port) persistent 60 mask 64",
        "  -> [2001:db8::1]:443            Masq    65535  0          0         ",
    ]


def test_columns_line_up_with_the_header(cfg):
    out = lines(L.list_all(cfg))
    head = out[2]
    cols = [head.index(w) for w in ("Forward", "Weight", "ActiveConn", "InActConn")]
    assert cols == [34, 42, 49, 60]
    for line in out:
        if line.startswith("  -> 1"):
            for c in cols:
                assert line[c - 1] == " " and line[c] != " "


def test_nosort_is_kernel_order(cfg):
    out = lines(L.list_all(cfg, nosort=True))
    assert out[3:6] == [
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.0.0.1:80                  Masq    1      12         345       ",
        "  -> 10.0.0.2:8080                Masq    3      0          0         ",
    ]
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.0:80 -m")
    out = lines(L.list_all(cfg, nosort=True))
    assert [x[5:16] for x in out[4:7]] == ["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.9:80 -m")
    out = lines(L.list_all(cfg, nosort=True))
    assert out[4].startswith("  -> 10.0.0.9:80 ")                   # newest first
    out = lines(L.list_all(cfg))
    assert out[4].startswith("  -> 10.0.0.0:80 ") and out[7].startswith("  -> 10.0.0.9:80 ")


def test_stats_and_abbreviations(cfg):
    svc = cfg.services[(IPPROTO_TCP, ip("10.0.0.100"), 80)]
    st = svc.stats
    st.conns, st.inpkts, st.outpkts = 99999999, 100000000, 123456789012
    st.inbytes, st.outbytes = 99999999999999, 123456789012345678
    d = svc.find_dest(ip("10.0.0.1"), 80)
    d.stats.conns, d.stats.inpkts, d.stats.outpkts = 5, 999999999, 1000000000
    d.stats.inbytes, d.stats.outbytes = 99999999999, 100000000000000
    assert lines(L.list_all(cfg, stats=True)) == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80                99999999  100000K     123G   99999G  123456T",
        "  -> 10.0.0.1:80                         5  999999K    1000M   99999M     100T",
        "  -> 10.0.0.2:8080                       0        0        0        0        0",
        "UDP  10.0.0.100:53                       0        0        0        0        0",
        "  -> 192.168.1.10:5353                   0        0        0        0        0",
        "TCP  [2001:db8::100]:443                 0        0        0        0        0",
        "  -> [2001:db8::1]:443                   0        0        0        0        0",
    ]
    out = lines(L.list_all(cfg, stats=True, exact=True))
    assert out[3] == ("TCP  10.0.0.100:80                99999999 100000000 123456789012 "
                      "99999999999999 123456789012345678")
    assert out[4] == ("  -> 10.0.0.1:80                         5 999999999 1000000000 "
                      "99999999999 100000000000000")


def test_stats_callable_overrides_counters(cfg):
    out = lines(L.list_all(cfg, stats=True, stats_of=lambda obj: (1, 2, 3, 4, 5)))
    assert out[3] == ("TCP  10.0.0.100:80                       1        2        3        4"
                      "        5")


def test_rate(cfg):
    def rates(obj):
        return (1, 22, 333, 123456789, 4) if obj.port == 80 else (0, 0, 0, 0, 0)
    assert lines(L.list_all(cfg, rate=True, rates_of=rates)) == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80                       1       22      333  123456K        4",
        "  -> 10.0.0.1:80                         1       22      333  123456K        4",
        "  -> 10.0.0.2:8080                       0        0        0        0        0",
        "UDP  10.0.0.100:53                       0        0        0        0        0",
        "  -> 192.168.1.10:5353                   0        0        0        0        0",
        "TCP  [2001:db8::100]:443                 0        0        0        0        0",
        "  -> [2001:db8::1]:443                   0        0        0        0        0",
    ]


def test_thresholds(cfg):
    assert lines(L.list_all(cfg, thresholds=True))[1:6] == [
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.0.0.1:80                  0          0          12         345       ",
        "  -> 10.0.0.2:8080                100        50         0          0         ",
    ]


def test_persistent_conn(cfg):
    assert lines(L.list_all(cfg, persistent_conn=True))[1:6] == [
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.0.0.1:80                  1         0           12         345       ",
        "  -> 10.0.0.2:8080                3         7           0          0         ",
    ]


def test_tun_info(cfg):
    assert lines(L.list_all(cfg, tun_info=True))[1:5] == [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
        "TCP  10.0.0.100:80 mh (mh-fallback,mh-port)",
        "  -> 10.0.0.1:80                  Masq    n/a           1      12         345       ",
    ]


def test_list_one_service_has_no_version_header(cfg):
    assert lines(L.list_service(cfg, (IPPROTO_UDP, ip("10.0.0.100"), 53))) == [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "UDP  10.0.0.100:53 rr (flag-2) persistent 360 mask 255.255.255.0 ops",
        "  -> 192.168.1.10:5353            Masq    0      0          0         ",
    ]
    with pytest.raises(ConfigError, match="No such service"):
        L.list_service(cfg, (IPPROTO_UDP, ip("10.0.0.100"), 54))


def test_timeout(cfg):
    assert L.list_timeout(cfg) == "Timeout (tcp tcpfin udp): 900 120 300\n"
    cfg.apply("--set 0 60 0")
    assert L.list_timeout(cfg) == "Timeout (tcp tcpfin udp): 900 60 300\n"


def test_connections():
    entries = [
        L.ConnEntry(IPPROTO_TCP, ip("192.168.1.100"), 12345, ip("10.0.0.100"), 80,
                    ip("10.0.0.1"), 80, "ESTABLISHED", 899),
        L.ConnEntry(IPPROTO_UDP, ip("192.168.1.7"), 53000, ip("10.0.0.100"), 53,
                    ip("192.168.1.10"), 5353, "UDP", 5),
        L.ConnEntry(IPPROTO_TCP, ip("2001:db8::9"), 4000, ip("2001:db8::100"), 443,
                    ip("2001:db8::1"), 443, "SYN_RECV", 3600),
    ]
    assert lines(L.list_connections(entries)) == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
        "TCP 14:59  ESTABLISHED 192.168.1.100:12345 10.0.0.100:80      10.0.0.1:80",
        "UDP 00:05  UDP         192.168.1.7:53000  10.0.0.100:53      192.168.1.10:5353",
        "TCP 60:00  SYN_RECV    [2001:db8::9]:4000 [2001:db8::100]:443 [2001:db8::1]:443",
    ]
    assert lines(L.list_connections([], persistent_conn=True)) == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination        "
        "pe name          pe_data",
    ]


# ------------------------------------------------------------------ sorting

def test_signed_address_comparison_quirk():
    c = Config(clock=ManualClock(0))
    c.load_rules("-A -t 10.0.0.1:80 -s rr\n-A -t 200.0.0.1:80 -s rr\n")
    out = lines(L.list_all(c))
    assert out[3].startswith("TCP  200.0.0.1:80") and out[4].startswith("TCP  10.0.0.1:80")
    # less than 2**31 apart: normal order
    c = Config(clock=ManualClock(0))
    c.load_rules("-A -t 100.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n")
    out = lines(L.list_all(c))
    assert out[3].startswith("TCP  10.0.0.1:80") and out[4].startswith("TCP  100.0.0.1:80")


def test_non_transitive_order_follows_glibc_merge_sort():
    # a=0.0.0.1 < b=127.0.0.1 < c=200.0.0.1 < a: a cycle, the result depends
    # on the input (kernel) order, as with ipvsadm
    def order(adds):
        c = Config(clock=ManualClock(0))
        c.load_rules("-A -t 10.0.0.100:80 -s rr\n" + "".join(
            f"-a -t 10.0.0.100:80 -r {a}:80 -m\n" for a in adds))
        return [x.split()[1] for x in lines(L.list_all(c))[4:]]
    # adds a, b, c -> kernel list c, b, a -> merge sort: [c] + sort([b, a]) = [c] + [a, b]
    assert order(["0.0.0.1", "127.0.0.1", "200.0.0.1"]) == \
        ["200.0.0.1:80", "0.0.0.1:80", "127.0.0.1:80"]
    # adds c, b, a -> kernel list a, b, c -> [a] + [b, c]
    assert order(["200.0.0.1", "127.0.0.1", "0.0.0.1"]) == \
        ["0.0.0.1:80", "127.0.0.1:80", "200.0.0.1:80"]


def test_glibc_qsort_is_a_stable_merge_sort_for_total_orders():
    import random
    rnd = random.Random(1)
    for n in range(0, 40):
        xs = [(rnd.randrange(5), i) for i in range(n)]
        assert L.glibc_qsort(xs, lambda a, b: a[0] - b[0]) == sorted(xs, key=lambda x: x[0])


def test_services_sort_by_family_protocol_address_port():
    c = Config(clock=ManualClock(0))
    c.load_rules("-A -t [2001:db8::1]:80 -s rr\n-A -u 10.0.0.1:80 -s rr\n"
                 "-A -t 10.0.0.2:80 -s rr\n-A -t 10.0.0.1:81 -s rr\n-A -t 10.0.0.1:80 -s rr\n"
                 "-A -t [2001:db8::1]:79 -s rr\n-A -t [::1]:80 -s rr\n")
    assert [x for x in lines(L.list_all(c))[3:]] == [
        "TCP  10.0.0.1:80 rr", "TCP  10.0.0.1:81 rr", "TCP  10.0.0.2:80 rr",
        "UDP  10.0.0.1:80 rr", "TCP  [::1]:80 rr", "TCP  [2001:db8::1]:79 rr",
        "TCP  [2001:db8::1]:80 rr"]


# -------------------------------------------------------------------- mhs

class _FakeMHS:
    def __init__(self, n):
        self.n = n

    def unstable_slots(self):
        return self.n


def test_mhs_suffix(cfg):
    svc = cfg.services[(IPPROTO_TCP, ip("10.0.0.100"), 80)]
    real = svc.sched
    svc.sched = _FakeMHS(12)
    try:
        out = lines(L.list_all(cfg))
        assert out[3] == "TCP  10.0.0.100:80 mh (mh-fallback,mh-port) unstable 12"
        out = lines(L.list_all(cfg, mhs_entries=lambda s: 3))
        assert out[3] == "TCP  10.0.0.100:80 mh (mh-fallback,mh-port) unstable 12 entries 3"
        svc.sched = _FakeMHS([1, 2])
        assert lines(L.list_all(cfg))[3].endswith(" unstable 2")
        # not in the stats / thresholds formats
        assert "unstable" not in L.list_all(cfg, stats=True)
        assert "unstable" not in L.list_all(cfg, thresholds=True)
    finally:
        svc.sched = real


def test_real_mhs_line():
    clock = ManualClock(0)
    c = Config(clock=clock)
    c.load_rules("-A -t 10.0.0.100:80 -s mhs -b mh-port\n"
                 "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n")
    assert lines(L.list_all(c, mhs_entries=lambda s: 0))[3] == \
        "TCP  10.0.0.100:80 mhs (mh-port) unstable 0 entries 0"
    svc = c.services[(IPPROTO_TCP, ip("10.0.0.100"), 80)]
    svc.forwarded = True            # the engine sets this on the first forward
    clock.set(1000)
    c.apply("-d -t 10.0.0.100:80 -r 10.0.0.2:80")
    n = svc.sched.unstable_slots()
    assert 0 < n < 4093
    assert lines(L.list_all(c))[3] == f"TCP  10.0.0.100:80 mhs (mh-port) unstable {n}"


# --------------------------------------------------------------------- -S

def test_save_lines(cfg):
    cfg.apply("-A -t 10.0.0.100:0 -s mh -p 100 -b flag-3 --mh-table-size 251")
    cfg.apply("-A -t 10.0.0.100:81 -s sh --sh-hash legacy")
    assert cfg.save() == [
        "-A -t 10.0.0.100:0 -s mh -p 100 -b flag-3 --mh-table-size 251",
        "-A -t 10.0.0.100:80 -s mh -b mh-fallback,mh-port",
        "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 1",
        "-a -t 10.0.0.100:80 -r 10.0.0.2:8080 -m -w 3 -x 100 -y 50",
        "-A -t 10.0.0.100:81 -s sh --sh-hash legacy",
        "-A -u 10.0.0.100:53 -s rr -p 360 -M 255.255.255.0 -o -b flag-2",
        "-a -u 10.0.0.100:53 -r 192.168.1.10:5353 -m -w 0",
        "-A -t [2001:db8::100]:443 -s sh -p 60 -M 64 -b sh-port --sh-tab-bits 10",
        "-a -t [2001:db8::100]:443 -r [2001:db8::1]:443 -m -w 65535",
    ]
    cfg.apply("--set 0 60 0")
    assert cfg.save()[0] == "--set 900 60 300"
    assert cfg.save(with_timeouts=False)[0].startswith("-A ")


def test_render_dispatches_parsed_commands(cfg):
    assert L.render(cfg, parse_argv(["-L", "-n"])) == L.list_all(cfg)
    assert L.render(cfg, parse_argv(["-L", "-n", "--stats", "--exact"])) == \
        L.list_all(cfg, stats=True, exact=True)
    assert L.render(cfg, parse_argv(["-L", "--timeout"])) == L.list_timeout(cfg)
    assert L.render(cfg, parse_argv(["-S", "-n"])) == "".join(x + "\n" for x in cfg.save())
    assert L.render(cfg, parse_argv(["-L", "-u", "10.0.0.100:53"])) == \
        L.list_service(cfg, (IPPROTO_UDP, ip("10.0.0.100"), 53))
    assert L.render(cfg, parse_argv(["-L", "-c"]), conn_entries=[]).startswith(
        "IPVS connection entries\n")
    assert L.render(cfg, parse_argv(["-L"]), size=1 << 20).startswith(
        "IP Virtual Server version 1.2.1 (size=1048576)\n")


def test_largenum():
    assert L.largenum(0) == "        0"
    assert L.largenum(99999999) == " 99999999"
    assert L.largenum(100000000) == "  100000K"
    assert L.largenum(999999999) == "  999999K"
    assert L.largenum(1000000000) == "    1000M"
    assert L.largenum(99999999999) == "   99999M"
    assert L.largenum(100000000000) == "     100G"
    assert L.largenum(100000000000000) == "     100T"
    assert L.largenum(5, exact=True) == "        5"
    assert L.largenum(123456789, exact=True) == " 123456789"
    for n in (0, 1, 10 ** 8, 10 ** 9, 10 ** 11, 10 ** 14, 2 ** 64 - 1):
        assert len(L.largenum(n)) == 9


def test_connections_from_engine_tuples_with_absolute_expiry():
    # Engine.entries() gives plain tuples with the absolute expiry time
    raw = [(IPPROTO_TCP, ip("192.168.1.100"), 12345, ip("10.0.0.100"), 80,
            ip("10.0.0.1"), 80, "FIN_WAIT", 1119.6)]
    assert lines(L.list_connections(raw, now=1000.0))[2] == \
        "TCP 01:59  FIN_WAIT    192.168.1.100:12345 10.0.0.100:80      10.0.0.1:80"
    assert lines(L.list_connections(raw, now=2000.0))[2].startswith("TCP 00:00  FIN_WAIT")
    cfg = Config(clock=ManualClock(0))
    assert L.render(cfg, parse_argv(["-L", "-c", "-n"]), conn_entries=raw, now=1000.0) == \
        L.list_connections(raw, now=1000.0)
