"""Persistence end to end, in-process: `userlb adm` (the real client) against
a control server with a Config and a real Engine (tests/
test_control_server_helpers.ServedDirector): -A ... -p -M, packets, then
`-L -n --persistent-conn`, `-L -n -c` and `--stats` as ipvsadm prints them;
-d of the template's server and -E without -p."""
import pytest

from helpers.control_server import ServedDirector, lines
from helpers.engine import tcp4

VIP = "10.0.0.100"


@pytest.fixture
def d():
    srv = ServedDirector()
    try:
        yield srv
    finally:
        srv.close()


def setup(d):
    d.ok("-A", "-t", f"{VIP}:80", "-s", "rr", "-p", "600", "-M", "255.255.255.0")
    d.ok("-a", "-t", f"{VIP}:80", "-r", "10.1.0.1:80", "-m")
    d.ok("-a", "-t", f"{VIP}:80", "-r", "10.1.0.2:80", "-m")


def syn(d, client, sport):
    v, out = d.packet(tcp4(client, sport, VIP, 80, "S"))
    assert v == 1
    return ".".join(str(b) for b in out[16:20])


def test_clients_of_a_slash24_follow_one_template_and_the_listings_show_it(d):
    setup(d)
    # rr takes the newest server first (kernel order): 10.1.0.2, then 10.1.0.1
    assert syn(d, "192.0.2.10", 40000) == "10.1.0.2"
    assert syn(d, "192.0.2.77", 40000) == "10.1.0.2"          # same /24: the template
    assert syn(d, "198.51.100.7", 40000) == "10.1.0.1"        # another /24: rr goes on
    assert syn(d, "192.0.2.10", 40001) == "10.1.0.2"
    assert lines(d.ok("-L", "-n", "--persistent-conn"))[1:] == [
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.100:80 rr persistent 600 mask 255.255.255.0",
        "  -> 10.1.0.1:80                  1         1           1          0         ",
        "  -> 10.1.0.2:80                  1         1           3          0         ",
    ]
    out = lines(d.ok("-L", "-n", "-c"))
    assert out[:2] == ["IPVS connection entries",
                       "pro expire state       source             virtual            destination"]
    assert sorted(out[2:]) == sorted([
        "TCP 01:00  SYN_RECV    192.0.2.10:40000   10.0.0.100:80      10.1.0.2:80",
        "TCP 01:00  SYN_RECV    192.0.2.77:40000   10.0.0.100:80      10.1.0.2:80",
        "TCP 01:00  SYN_RECV    198.51.100.7:40000 10.0.0.100:80      10.1.0.1:80",
        "TCP 01:00  SYN_RECV    192.0.2.10:40001   10.0.0.100:80      10.1.0.2:80",
        "TCP 10:00  NONE        192.0.2.0:0        10.0.0.100:80      10.1.0.2:80",
        "TCP 10:00  NONE        198.51.100.0:0     10.0.0.100:80      10.1.0.1:80",
    ])
    # Conns counts connections, not templates
    assert lines(d.ok("-L", "-n", "--stats"))[3:] == [
        "TCP  10.0.0.100:80                       4        4        0      160        0",
        "  -> 10.1.0.1:80                         1        1        0       40        0",
        "  -> 10.1.0.2:80                         3        3        0      120        0",
    ]


def test_deleting_the_templates_server_reschedules_and_e_without_p_stops_persistence(d):
    setup(d)
    assert syn(d, "192.0.2.10", 40000) == "10.1.0.2"
    d.ok("-d", "-t", f"{VIP}:80", "-r", "10.1.0.2:80")
    d.now += 5
    assert syn(d, "192.0.2.10", 40001) == "10.1.0.1"
    tpl = [ln for ln in lines(d.ok("-Lnc"))[2:] if " NONE " in ln]
    assert sorted(tpl) == sorted([
        "TCP 09:55  NONE        192.0.2.0:0        10.0.0.100:65535   10.1.0.2:65535",
        "TCP 10:00  NONE        192.0.2.0:0        10.0.0.100:80      10.1.0.1:80",
    ])
    # -E without -p: no template is consulted or made; the old ones just expire
    d.ok("-E", "-t", f"{VIP}:80", "-s", "rr")
    d.ok("-a", "-t", f"{VIP}:80", "-r", "10.1.0.3:80", "-m")
    got = {syn(d, "192.0.2.10", 40002 + i) for i in range(2)}
    assert got == {"10.1.0.1", "10.1.0.3"}
    tpl = [ln for ln in lines(d.ok("-Lnc"))[2:] if " NONE " in ln]
    assert len(tpl) == 2
