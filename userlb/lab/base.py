"""What every part of the lab shares: its address plan, `LabError` and `sh()`.

The address plan (the pictures are in userlb/lab/__init__.py):

* VIPs 10.99.0.1 and fd00:99::1, routed into the director's TUN device `ulb0`;
* client addresses 10.10.0.2.. and fd00:10::2.. (`client_addrs`);
* real server i: 10.20.0.(10+i) and fd00:20::(10+i) (`server_addr4/6`);
* director K of the ECMP lab: link 10.30.K.0/24 and fd00:30:K::/64 to the
  router (`link4/6`);
* the real servers' ports: HTTP 80, TCP echo 7, TCP hash 9, UDP echo 7, a UDP
  sink 5000 and the extra TCP echo ports 7001-7008 (userlb.lab.servers).
"""
import subprocess

VIP4 = "10.99.0.1"
VIP6 = "fd00:99::1"
CLIENT_NET4 = "10.10.0"
CLIENT_NET6 = "fd00:10::"
TUN = "ulb0"
# `userlb run --reply-from`: ICMP errors from the far router go into the TUN too
REPLY_FROM = ("10.20.0.0/16", "fd00:20::/44")

HTTP, ECHO, HASH, UDP_ECHO = 80, 7, 9, 7
DISCARD = 5000          # UDP sink (never read), for packet-rate benchmarks
# extra TCP echo ports of every real server (distinct real-server ports, so
# that tests can define several services whose replies stay unambiguous)
EXTRA_ECHO = tuple(range(7001, 7009))

ROUTER_REPLY_TABLE = 200        # router: replies from the servers -> directors (multipath)
ROUTER_PIN_TABLE = 100          # router: + K: the VIPs via director K only


class LabError(Exception):
    pass


def sh(cmd, check=True, input=None, capture=True, timeout=60):
    """Run a command (list); raise LabError with its stderr on failure."""
    p = subprocess.run(cmd, input=input, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode:
        raise LabError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or '').strip()}")
    return p


def short(ns: str) -> str:
    """A namespace's short name: 'ulb-SFX-s1' -> 's1'."""
    return ns.rsplit("-", 1)[1]


def server_addr4(i: int) -> str:
    return f"10.20.0.{10 + i}"


def server_addr6(i: int) -> str:
    return f"fd00:20::{10 + i:x}"


def client_addrs(n):
    """n IPv4 and n IPv6 client addresses."""
    return ([f"{CLIENT_NET4}.{2 + k}" for k in range(n)],
            [f"{CLIENT_NET6}{2 + k:x}" for k in range(n)])


def link4(k):
    """(router side, director side) IPv4 addresses of director k's link."""
    return f"10.30.{k}.1", f"10.30.{k}.2"


def link6(k):
    return f"fd00:30:{k:x}::1", f"fd00:30:{k:x}::2"


def endpoint(addr, port):
    """'a.b.c.d:port' or '[v6]:port'."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
