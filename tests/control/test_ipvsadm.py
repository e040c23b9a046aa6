"""ipvsadm syntax: every option, every validation rule (good and bad)."""
import pytest

from userlb.control import ipvsadm as ia
from userlb.control.ipvsadm import parse_argv, parse_line, parse_rules
from userlb.errors import ConfigError
from userlb.model import (
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    parse_addr,
)
from userlb.sched import maglev

V4 = parse_addr("10.0.0.100")[1]
R1 = parse_addr("10.0.0.1")[1]
V6 = parse_addr("2001:db8::100")[1]
R6 = parse_addr("2001:db8::1")[1]


def p(text):
    return parse_argv(text.split())


def bad(text, match):
    with pytest.raises(ConfigError, match=match):
        p(text)


# ------------------------------------------------------------------ commands

@pytest.mark.parametrize("text,cmd", [
    ("-A -t 10.0.0.100:80", ia.ADD_SERVICE), ("--add-service -t 10.0.0.100:80", ia.ADD_SERVICE),
    ("-E -t 10.0.0.100:80", ia.EDIT_SERVICE), ("--edit-service -t 10.0.0.100:80", ia.EDIT_SERVICE),
    ("-D -t 10.0.0.100:80", ia.DEL_SERVICE), ("--delete-service -t 10.0.0.100:80", ia.DEL_SERVICE),
    ("-C", ia.FLUSH), ("--clear", ia.FLUSH),
    ("-a -t 10.0.0.100:80 -r 10.0.0.1", ia.ADD_SERVER),
    ("--add-server -t 10.0.0.100:80 -r 10.0.0.1", ia.ADD_SERVER),
    ("-e -t 10.0.0.100:80 -r 10.0.0.1", ia.EDIT_SERVER),
    ("--edit-server -t 10.0.0.100:80 -r 10.0.0.1", ia.EDIT_SERVER),
    ("-d -t 10.0.0.100:80 -r 10.0.0.1", ia.DEL_SERVER),
    ("--delete-server -t 10.0.0.100:80 -r 10.0.0.1", ia.DEL_SERVER),
    ("-L", ia.LIST), ("-l", ia.LIST), ("--list", ia.LIST), ("-Ln", ia.LIST),
    ("-Z", ia.ZERO), ("--zero", ia.ZERO), ("-Z -t 10.0.0.100:80", ia.ZERO),
    ("-R", ia.RESTORE), ("--restore", ia.RESTORE),
    ("-S", ia.SAVE), ("--save", ia.SAVE), ("-S -n", ia.SAVE), ("-Sn", ia.SAVE),
    ("--set 1 2 3", ia.SET), ("-h", ia.HELP), ("--help", ia.HELP),
    ("-v", ia.VERSION), ("--version", ia.VERSION),
])
def test_commands(text, cmd):
    assert p(text).cmd == cmd


def test_leading_ipvsadm_word_and_bare_invocation():
    assert p("ipvsadm -C").cmd == ia.FLUSH
    assert parse_argv([]).cmd == ia.LIST
    assert parse_argv(["ipvsadm"]).cmd == ia.LIST
    assert parse_argv(["/sbin/ipvsadm", "-C"]).cmd == ia.FLUSH
    assert parse_line("/usr/sbin/ipvsadm -C").cmd == ia.FLUSH


def test_command_errors():
    bad("-t 10.0.0.100:80", "no command")
    bad("-A -E -t 10.0.0.100:80", "multiple commands")
    bad("-AE -t 10.0.0.100:80", "multiple commands")
    bad("-A -t 10.0.0.100:80 -t 10.0.0.101:80", "multiple 'service-address'")
    bad("-A -t 10.0.0.100:80 -u 10.0.0.101:80", "multiple 'service-address'")
    bad("-Q", "unknown option")
    bad("--frobnicate", "unknown option")
    bad("-A -t 10.0.0.100:80 extra", "unexpected argument extra")
    bad("--clear=1", "does not take an argument")
    bad("--start-daemon master", "not supported by userlb")
    bad("--stop-daemon backup", "not supported by userlb")


# ------------------------------------------------------------------ services

def test_tcp_udp_services_and_long_forms():
    c = p("-A -t 10.0.0.100:80")
    assert (c.protocol, c.af, c.addr, c.port) == (IPPROTO_TCP, 4, V4, 80)
    c = p("-A --tcp-service 10.0.0.100:80")
    assert c.service_key == (IPPROTO_TCP, V4, 80)
    c = p("-A --tcp-service=10.0.0.100:80")
    assert c.service_key == (IPPROTO_TCP, V4, 80)
    c = p("-A -u 10.0.0.100:53")
    assert c.service_key == (IPPROTO_UDP, V4, 53)
    c = p("-A --udp-service 10.0.0.100:53")
    assert c.service_key == (IPPROTO_UDP, V4, 53)
    c = p("-A -t10.0.0.100:80")          # glued argument
    assert c.service_key == (IPPROTO_TCP, V4, 80)
    c = p("-At 10.0.0.100:80")           # bundled
    assert c.cmd == ia.ADD_SERVICE and c.service_key == (IPPROTO_TCP, V4, 80)


def test_ipv6_services():
    c = p("-A -t [2001:db8::100]:80")
    assert (c.af, c.addr, c.port, c.netmask) == (6, V6, 80, 128)
    # a bare IPv6 address has no port (needs -p, port 0)
    c = p("-A -t 2001:db8::100 -p")
    assert (c.af, c.addr, c.port) == (6, V6, 0)
    bad("-A -t [2001:db8::100]", "illegal virtual server")     # ipvsadm needs ':port' after ']'
    bad("-A -t [2001:db8::100]80", "illegal virtual server")
    bad("-A -t [10.0.0.1]:80", "illegal virtual server")
    bad("-A -t [2001:db8::100:80", "illegal virtual server")


def test_bad_service_addresses():
    bad("-A -t 80", "illegal virtual server")               # digits only
    bad("-A -t 10.0.0.300:80", "illegal virtual server")
    bad("-A -t www.example.com:80", "does not resolve host names")
    bad("-A -t 10.0.0.100:http", "does not resolve service names")
    bad("-A -t 10.0.0.100:65536", "illegal virtual server")
    bad("-A -t 10.0.0.100:-1", "illegal virtual server")


def test_unsupported_service_kinds():
    bad("-A -f 1", "fwmark services")
    bad("-A --fwmark-service 1", "fwmark services")
    bad("-A -t 10.0.0.100:80 --pe sip", "persistence engines")


def test_zero_port_needs_persistence():
    bad("-A -t 10.0.0.100", "Zero port specified for non-persistent service")
    bad("-A -t 10.0.0.100:0", "Zero port")
    c = p("-A -t 10.0.0.100 -p")
    assert c.port == 0 and c.flags & SVC_F_PERSISTENT
    bad("-E -t 10.0.0.100:0 -s rr", "Zero port")


# ---------------------------------------------------------------- scheduler

def test_default_scheduler_is_wlc_on_add_and_edit():
    assert p("-A -t 10.0.0.100:80").sched_name == "wlc"
    assert p("-E -t 10.0.0.100:80").sched_name == "wlc"
    assert p("-A -t 10.0.0.100:80 --scheduler rr").sched_name == "rr"
    assert p("-A -t 10.0.0.100:80 --scheduler=sh").sched_name == "sh"


@pytest.mark.parametrize("name", ia.schedulers())
def test_every_userlb_scheduler_name(name):
    assert p(f"-A -t 10.0.0.100:80 -s {name}").sched_name == name


@pytest.mark.parametrize("name", ["lblc", "lblcr", "dh", "twos"])
def test_kernel_schedulers_refused(name):
    bad(f"-A -t 10.0.0.100:80 -s {name}", "not supported by userlb")


def test_unknown_scheduler():
    bad("-A -t 10.0.0.100:80 -s fancy", "Scheduler not found")


# ------------------------------------------------------------------ -b flags

@pytest.mark.parametrize("sched,flags,bits", [
    ("mh", "mh-fallback", SVC_F_SCHED1), ("mh", "mh-port", SVC_F_SCHED2),
    ("mh", "mh-fallback,mh-port", SVC_F_SCHED1 | SVC_F_SCHED2),
    ("mh", "mh-port,mh-fallback", SVC_F_SCHED1 | SVC_F_SCHED2),
    ("sh", "sh-fallback", SVC_F_SCHED1), ("sh", "sh-port", SVC_F_SCHED2),
    ("sh", "sh-fallback,sh-port", SVC_F_SCHED1 | SVC_F_SCHED2),
    ("mhs", "mh-port", SVC_F_SCHED2), ("mhs", "mh-fallback", SVC_F_SCHED1),
    ("mh-backport", "mh-port", SVC_F_SCHED2),
    ("rr", "flag-1", SVC_F_SCHED1), ("wlc", "flag-2", SVC_F_SCHED2),
    ("mh", "flag-3", SVC_F_SCHED3), ("sh", "flag-1,flag-2,flag-3",
                                     SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3),
    ("mhs", "flag-2", SVC_F_SCHED2),
])
def test_sched_flags_good(sched, flags, bits):
    assert p(f"-A -t 10.0.0.100:80 -s {sched} -b {flags}").flags == bits
    assert p(f"-A -t 10.0.0.100:80 -s {sched} --sched-flags {flags}").flags == bits
    # -b before -s works too (ipvsadm interprets -b at the end)
    assert p(f"-A -t 10.0.0.100:80 -b {flags} -s {sched}").flags == bits


@pytest.mark.parametrize("sched,flags,msg", [
    ("rr", "mh-port", "incompatible scheduler flag `mh-port'"),
    ("sh", "mh-fallback", "incompatible"),
    ("mh", "sh-port", "incompatible scheduler flag `sh-port'"),
    ("mhs", "sh-fallback", "incompatible"),
    ("mh", "mh-nonsense", "invalid scheduler flag `mh-nonsense'"),
    ("mh", "flag-4", "invalid scheduler flag"),
    ("mh", "mh-port,bogus", "invalid scheduler flag `bogus'"),
])
def test_sched_flags_bad(sched, flags, msg):
    bad(f"-A -t 10.0.0.100:80 -s {sched} -b {flags}", msg)


def test_sched_flags_default_scheduler_is_wlc():
    bad("-A -t 10.0.0.100:80 -b mh-port", "incompatible")
    assert p("-A -t 10.0.0.100:80 -b flag-1").flags == SVC_F_SCHED1


# ------------------------------------------------------------ -p -M -o

def test_persistence():
    c = p("-A -t 10.0.0.100:80 -p")
    assert c.flags & SVC_F_PERSISTENT and c.timeout == 360
    assert p("-A -t 10.0.0.100:80 -p 60").timeout == 60
    assert p("-A -t 10.0.0.100:80 -p60").timeout == 60
    assert p("-A -t 10.0.0.100:80 --persistent=60").timeout == 60
    assert p("-A -t 10.0.0.100:80 --persistent 60").timeout == 60
    assert p("-A -t 10.0.0.100:80 -p 1").timeout == 1
    assert p("-A -t 10.0.0.100:80 -p 2678400").timeout == 2678400
    # optional argument: the next word is not taken when it is an option
    c = p("-A -t 10.0.0.100:80 -p -s rr")
    assert c.timeout == 360 and c.sched_name == "rr"
    assert p("-A -t 10.0.0.100:80").timeout == 0
    bad("-A -t 10.0.0.100:80 -p 0", "invalid timeout value `0'")
    bad("-A -t 10.0.0.100:80 -p 2678401", "invalid timeout value")
    bad("-A -t 10.0.0.100:80 -p abc", "unexpected argument|invalid timeout")


def test_mhs_refuses_persistence():
    bad("-A -t 10.0.0.100:80 -s mhs -p", "mhs")
    bad("-E -t 10.0.0.100:80 -s mhs -p 60", "stateless")


def test_netmask():
    assert p("-A -t 10.0.0.100:80 -p -M 255.255.255.0").netmask == 0xFFFFFF00
    assert p("-A -t 10.0.0.100:80 -p --netmask 255.255.0.0").netmask == 0xFFFF0000
    assert p("-A -t 10.0.0.100:80").netmask == 0xFFFFFFFF
    assert p("-A -t [2001:db8::100]:80 -p -M 64").netmask == 64
    assert p("-A -t [2001:db8::100]:80 -p -M 128").netmask == 128
    # -M before -t: the family is known anyway
    assert p("-A -M 48 -p -t [2001:db8::100]:80").netmask == 48
    bad("-A -t 10.0.0.100:80 -p -M 24", "illegal virtual server persistent mask")
    bad("-A -t 10.0.0.100:80 -p -M 255.255.255.256", "persistent mask")
    bad("-A -t [2001:db8::100]:80 -p -M 0", "illegal ipv6 netmask")
    bad("-A -t [2001:db8::100]:80 -p -M 129", "illegal ipv6 netmask")
    bad("-A -t [2001:db8::100]:80 -p -M ffff::", "illegal ipv6 netmask")


def test_ops_udp_only():
    assert p("-A -u 10.0.0.100:53 -o").flags & SVC_F_ONEPACKET
    assert p("-A -u 10.0.0.100:53 --ops").flags & SVC_F_ONEPACKET
    bad("-A -t 10.0.0.100:80 -o", "One-Packet Scheduling is only for UDP")


# -------------------------------------------------------------- extensions

def test_mh_table_size():
    for m in maglev.PRIMES:
        c = p(f"-A -t 10.0.0.100:80 -s mh --mh-table-size {m}")
        assert c.options == {"mh_table_size": m}
    assert p("-A -t 10.0.0.100:80 -s mhs --mh-table-size=251").options == {"mh_table_size": 251}
    assert p("-E -t 10.0.0.100:80 -s mh-backport --mh-table-size 509").options[
        "mh_table_size"] == 509
    bad("-A -t 10.0.0.100:80 -s mh --mh-table-size 4096", "must be one of")
    bad("-A -t 10.0.0.100:80 -s mh --mh-table-size x", "must be one of")
    bad("-A -t 10.0.0.100:80 -s rr --mh-table-size 251", "only applies")
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 --mh-table-size 251", "Illegal 'mh-table-size'")


def test_sh_tab_bits_and_hash():
    assert p("-A -t 10.0.0.100:80 -s sh --sh-tab-bits 4").options == {"sh_tab_bits": 4}
    assert p("-A -t 10.0.0.100:80 -s sh --sh-tab-bits 20").options == {"sh_tab_bits": 20}
    bad("-A -t 10.0.0.100:80 -s sh --sh-tab-bits 3", "4..20")
    bad("-A -t 10.0.0.100:80 -s sh --sh-tab-bits 21", "4..20")
    bad("-A -t 10.0.0.100:80 -s mh --sh-tab-bits 8", "only applies to the sh")
    assert p("-A -t 10.0.0.100:80 -s sh --sh-hash legacy").options == {"sh_hash": "legacy"}
    bad("-A -t 10.0.0.100:80 -s sh --sh-hash md5", "hash_32 legacy")
    bad("-A -t 10.0.0.100:80 -s rr --sh-hash legacy", "only applies to the sh")


# ------------------------------------------------------------ destinations

def test_real_server_and_defaults():
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1:8080 -m")
    assert (c.daddr, c.dport, c.fwd, c.weight, c.u_threshold, c.l_threshold) == \
        (R1, 8080, FWD_MASQ, 1, 0, 0)
    c = p("-a -t 10.0.0.100:80 --real-server 10.0.0.1 --masquerading")
    assert (c.dport, c.fwd) == (80, FWD_MASQ)        # port defaults to the virtual port
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1:8080")
    assert (c.fwd, c.dport) == (FWD_DROUTE, 80)      # -g default, port forced
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1:8080 -i")
    assert (c.fwd, c.dport) == (FWD_TUNNEL, 80)
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1:8080 --ipip")
    assert c.fwd == FWD_TUNNEL
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1:8080 --gatewaying")
    assert c.fwd == FWD_DROUTE
    c = p("-a -t [2001:db8::100]:80 -r [2001:db8::1]:81 -m")
    assert (c.daddr, c.dport) == (R6, 81)
    c = p("-a -t [2001:db8::100]:80 -r 2001:db8::1 -m")
    assert (c.daddr, c.dport) == (R6, 80)
    c = p("-a -t 10.0.0.100:80 -m -r 10.0.0.1")      # option order does not matter
    assert c.dport == 80
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -m -g", "multiple 'forwarding-method'")
    bad("-a -t 10.0.0.100:80 -r 10.0.0.999 -m", "illegal real server")
    bad("-a -t 10.0.0.100:80 -r [2001:db8::1]:80 -m", "Different address family")
    bad("-a -t 10.0.0.100:80 -m", "You need to supply the 'real-server' option")
    bad("-a -r 10.0.0.1 -m", "You need to supply the 'service-address' option")
    bad("-d -t 10.0.0.100:80", "real-server")


def test_weight():
    assert p("-a -t 10.0.0.100:80 -r 10.0.0.1 -w 0").weight == 0
    assert p("-a -t 10.0.0.100:80 -r 10.0.0.1 --weight 65535").weight == 65535
    assert p("-a -t 10.0.0.100:80 -r 10.0.0.1 -w7").weight == 7
    # ipvsadm 1.31 takes up to INT_MAX (the kernel's weight is an int)
    assert p("-a -t 10.0.0.100:80 -r 10.0.0.1 -w 65536").weight == 65536
    assert p("-a -t 10.0.0.100:80 -r 10.0.0.1 -w 2147483647").weight == 2 ** 31 - 1
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -w 2147483648", "illegal weight")
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -w -1", "illegal weight")
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -w x", "illegal weight")


def test_thresholds():
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1 -x 10 -y 5")
    assert (c.u_threshold, c.l_threshold) == (10, 5)
    c = p("-e -t 10.0.0.100:80 -r 10.0.0.1 --u-threshold 2147483647 --l-threshold 0")
    assert c.u_threshold == 2 ** 31 - 1
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -x 2147483648", "illegal u_threshold")
    bad("-a -t 10.0.0.100:80 -r 10.0.0.1 -y -1", "illegal l_threshold")
    # -y above -x passes the parser (ipvsadm 1.31); the director refuses it
    # as the kernel does (tests/control/test_config.py)
    c = p("-a -t 10.0.0.100:80 -r 10.0.0.1 -x 5 -y 6")
    assert (c.u_threshold, c.l_threshold) == (5, 6)


@pytest.mark.parametrize("text,tun", [
    ("-i", (0, 0, 0)),
    ("-i --tun-type ipip", (0, 0, 0)),
    ("-i --tun-type gue --tun-port 6080", (1, 6080, 0)),
    ("-i --tun-type gue --tun-port 6080 --tun-nocsum", (1, 6080, 0)),
    ("-i --tun-type gue --tun-port 1 --tun-csum", (1, 1, 1)),
    ("-i --tun-type gue --tun-port 65535 --tun-remcsum", (1, 65535, 2)),
    ("-i --tun-type gre", (2, 0, 0)),
    ("-i --tun-type gre --tun-csum", (2, 0, 1)),
])
def test_tunnel_options(text, tun):
    """ipvsadm 1.31's --tun-* options of -a / -e."""
    for cmd in ("-a", "-e"):
        c = p(f"{cmd} -t 10.0.0.100:80 -r 10.0.0.1:8080 {text}")
        assert c.fwd == FWD_TUNNEL and c.tun == tun and c.dport == 80


@pytest.mark.parametrize("text,msg", [
    ("-i --tun-type vxlan", "illegal tunnel type specified"),
    ("-i --tun-type gue --tun-port 0", "illegal tunnel port specified"),
    ("-i --tun-type gue --tun-port 65536", "illegal tunnel port specified"),
    ("-i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type"),
    ("-i --tun-port 6080", "Illegal 'tun-port' option with the 'ipip' tunnel type"),
    ("-i --tun-csum", "Illegal 'tun-csum' option with the 'ipip' tunnel type"),
    ("-i --tun-type gre --tun-port 6080", "Illegal 'tun-port' option with the 'gre' tunnel type"),
    ("-i --tun-type gre --tun-remcsum",
     "Illegal 'tun-remcsum' option with the 'gre' tunnel type"),
    ("-i --tun-type gue --tun-port 6080 --tun-csum --tun-nocsum",
     "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type"),
    ("-g --tun-type ipip", "Tunnel options conflict with forward method"),
    ("-m --tun-type gue --tun-port 1", "Tunnel options conflict with forward method"),
    ("--tun-csum", "Tunnel options conflict with forward method"),
])
def test_tunnel_options_refused(text, msg):
    bad(f"-a -t 10.0.0.100:80 -r 10.0.0.1 {text}", msg)


def test_tun_info_listing_option():
    c = p("-L -n --tun-info")
    assert c.tun_info


# ------------------------------------------------------- legality table

@pytest.mark.parametrize("text,msg", [
    ("-A -t 10.0.0.100:80 -w 3", "Illegal 'weight' option with the 'add-service' command"),
    ("-A -t 10.0.0.100:80 -r 10.0.0.1", "Illegal 'real-server' option"),
    ("-A -t 10.0.0.100:80 -m", "Illegal 'forwarding-method'"),
    ("-A -t 10.0.0.100:80 -n", "Illegal 'numeric'"),
    ("-D -t 10.0.0.100:80 -s rr", "Illegal 'scheduler' option with the 'delete-service'"),
    ("-C -t 10.0.0.100:80", "Illegal 'service-address' option with the 'flush'"),
    ("-a -t 10.0.0.100:80 -r 10.0.0.1 -s rr", "Illegal 'scheduler'"),
    ("-a -t 10.0.0.100:80 -r 10.0.0.1 -p", "Illegal 'persistent'"),
    ("-d -t 10.0.0.100:80 -r 10.0.0.1 -w 2", "Illegal 'weight' option with the 'delete-server'"),
    ("-S -t 10.0.0.100:80", "Illegal 'service-address' option with the 'save'"),
    ("-Z -n", "Illegal 'numeric' option with the 'zero'"),
    ("-R -n", "Illegal 'numeric'"),
    ("--set 1 2 3 -n", "Illegal 'numeric'"),
    ("-L -s rr", "Illegal 'scheduler' option with the 'list'"),
    ("-E", "You need to supply the 'service-address' option for the 'edit-service'"),
    ("-D", "You need to supply the 'service-address' option"),
    ("-L -c -t 10.0.0.100:80", "The option 'service-address' conflicts with the 'connection'"),
    ("-L --timeout -c", "conflicts"),
    ("-L -c --stats", "options conflicts in the list command"),
    ("-L --timeout --rate", "options conflicts"),
    ("-L --timeout --persistent-conn", "options conflicts"),
    ("-L --daemon", "not supported by userlb"),
    ("-A -t 10.0.0.100:80 -6", "Illegal 'ipv6'"),
    ("-L --mcast-interface eth0", "Illegal 'mcast-interface'"),
])
def test_legality_table(text, msg):
    bad(text, msg)


def test_listing_options():
    c = p("-L -n --stats --exact --nosort")
    assert (c.numeric, c.stats, c.exact, c.nosort) == (True, True, True, True)
    c = p("-L --rate")
    assert c.rate and not c.stats
    assert p("-L --thresholds").thresholds
    assert p("-L --persistent-conn").persistent_conn
    assert p("-L --timeout").timeouts_list
    assert p("-L -c -n").connections
    assert p("-L --connection").connections
    assert p("-L --tun-info").tun_info
    assert p("-L -X").exact
    assert not p("-L --sort").nosort           # --sort is a no-op
    c = p("-L -t 10.0.0.100:80 -n")
    assert c.has_service and c.service_key == (IPPROTO_TCP, V4, 80)
    c = p("-lnt 10.0.0.100:80")
    assert c.cmd == ia.LIST and c.numeric and c.has_service


# --------------------------------------------------------------------- --set

def test_set():
    assert p("--set 900 120 300").set_timeouts == (900, 120, 300)
    assert p("--set 0 0 0").set_timeouts == (0, 0, 0)
    assert p("--set 2678400 1 2").set_timeouts == (2678400, 1, 2)
    bad("--set 1 2", "requires 3 timeout values")
    bad("--set", "requires 3")
    bad("--set 1 2 2678401", "invalid timeout value `2678401'")
    bad("--set 1 -2 3", "unknown option|invalid timeout")
    bad("--set 1 2 x", "invalid timeout value `x'")
    bad("--set 1 2 3 4", "unexpected argument 4")


# ---------------------------------------------------------------- -R lines

def test_parse_line_comments_blank_and_quotes():
    assert parse_line("") is None
    assert parse_line("   ") is None
    assert parse_line("# a comment") is None
    assert parse_line("ipvsadm") is None
    c = parse_line("ipvsadm -A -t 10.0.0.100:80 -s mh  # trailing comment", line=7)
    assert c.cmd == ia.ADD_SERVICE and c.sched_name == "mh" and c.line == 7
    c = parse_line("-A -t '10.0.0.100:80' -s \"rr\"")
    assert c.sched_name == "rr"
    with pytest.raises(ConfigError) as e:
        parse_line("-A -t 10.0.0.100:80 -s 'rr", line=3)
    assert e.value.line == 3
    with pytest.raises(ConfigError, match="-R cannot be used"):
        parse_line("-R")


def test_parse_rules_names_the_bad_line():
    text = ("# header\n-A -t 10.0.0.100:80 -s mh\n\n"
            "-a -t 10.0.0.100:80 -r 10.0.0.1 -m -w 2147483648\n")
    with pytest.raises(ConfigError) as e:
        parse_rules(text)
    assert e.value.line == 4
    assert "illegal weight" in e.value.message
    assert str(e.value).startswith("line 4:")
    cmds = parse_rules(text.replace("2147483648", "2"))
    assert [c.line for c in cmds] == [2, 4]
    assert [c.cmd for c in cmds] == [ia.ADD_SERVICE, ia.ADD_SERVER]


def test_flag_names_round_trip():
    for sched in ia.schedulers():
        for bits in range(8):
            flags = bits << 3
            names = ia.sched_flag_names(sched, flags)
            if not names:
                assert flags == 0
                continue
            assert ia.parse_sched_flags(sched, ",".join(names)) == flags


def test_format_netmask():
    assert ia.format_netmask(0xFFFFFF00, 4) == "255.255.255.0"
    assert ia.format_netmask(64, 6) == "64"


@pytest.mark.parametrize("line, message", [
    ("-A -t fd00:99::1:80 -s rr",
     "Zero port specified for non-persistent service"
     " (IPv6 addresses need brackets: [fd00:99::1]:80)"),
    ("-a -t 10.0.0.1:80 -r fd00::5:80 -m",
     "Different address family is allowed only for tunneling servers"
     " (IPv6 addresses need brackets: [fd00::5]:80)"),
    ("-A -t 10.2.1.311:80 -s rr",
     "illegal virtual server address[:port] specified (invalid IPv4 address: '10.2.1.311')"),
    ("-a -t 10.0.0.1:80 -r 10.2.1.311:80 -m",
     "illegal real server address[:port] specified (invalid IPv4 address: '10.2.1.311')"),
    # a bare IPv6 address without port is what ipvsadm reads: no hint
    ("-A -t fd00:99::1 -s rr", "Zero port specified for non-persistent service"),
])
def test_newcomer_hints_for_ipv6_without_brackets_and_bad_ipv4(line, message):
    with pytest.raises(ConfigError) as ei:
        parse_line(line)
    assert str(ei.value) == message
