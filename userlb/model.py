"""The control plane's truth, in ipvsadm's vocabulary: services, destinations
(real servers), flags and forwarding methods.

Address representation (everywhere in userlb): an IPv4 address is an `int`
(host integer, 10.0.0.1 -> 0x0A000001); an IPv6 address is a 16-byte `bytes`
in network order.  The two types never compare equal, so IPv4 and IPv6 keys
can share one dict.  `ipaddress` objects are only used here, at the text
boundary (parse_addr / format_addr).
"""
import ipaddress

from .errors import ConfigError

AF_INET = 4
AF_INET6 = 6

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}
PROTO_BY_NAME = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

# forwarding methods (kernel IP_VS_CONN_F_FWD_MASK values)
FWD_MASQ = 0
FWD_LOCALNODE = 1
FWD_TUNNEL = 2
FWD_DROUTE = 3
FWD_NAMES = {FWD_MASQ: "Masq", FWD_LOCALNODE: "Local", FWD_TUNNEL: "Tunnel", FWD_DROUTE: "Route"}

# service flags (kernel IP_VS_SVC_F_*)
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008   # mh-fallback / sh-fallback / flag-1
SVC_F_SCHED2 = 0x0010   # mh-port / sh-port / flag-2
SVC_F_SCHED3 = 0x0020   # flag-3

DEFAULT_PERSISTENCE_TIMEOUT = 360

# `ipvsadm --set` defaults (seconds): TCP ESTABLISHED, TCP FIN_WAIT, UDP -- the
# one home of these three numbers (docs/ipvs.md §4.3); dataplane/tcpstate.py
# builds its per-state table around them.
DEFAULT_TCP_TIMEOUT = 900
DEFAULT_TCPFIN_TIMEOUT = 120
DEFAULT_UDP_TIMEOUT = 300
DEFAULT_TIMEOUTS = (DEFAULT_TCP_TIMEOUT, DEFAULT_TCPFIN_TIMEOUT, DEFAULT_UDP_TIMEOUT)


# ---------------------------------------------------------------- addresses

def parse_addr(text):
    """'10.0.0.1' -> (4, 0x0A000001); '2001:db8::1' or '[2001:db8::1]' -> (6, b'...')."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        raise ConfigError(f"invalid address {text!r}") from None
    if ip.version == 4:
        return AF_INET, int(ip)
    return AF_INET6, ip.packed


def addr_af(addr):
    return AF_INET if isinstance(addr, int) else AF_INET6


def format_addr(addr):
    """int -> dotted quad; 16 bytes -> compressed IPv6 (no brackets)."""
    if isinstance(addr, int):
        return str(ipaddress.IPv4Address(addr))
    return str(ipaddress.IPv6Address(bytes(addr)))


def format_endpoint(addr, port):
    """10.0.0.1:80 or [2001:db8::1]:80"""
    if isinstance(addr, int):
        return f"{format_addr(addr)}:{port}"
    return f"[{format_addr(addr)}]:{port}"


def parse_endpoint(text, default_port=None):
    """'10.0.0.1:80' / '[2001:db8::1]:80' / '10.0.0.1' (port = default_port)
    -> (af, addr, port).  Raises ConfigError."""
    t = text.strip()
    port_text = None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ConfigError(f"invalid endpoint {text!r}")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"invalid endpoint {text!r}")
            port_text = rest[1:]
    elif t.count(":") == 1:
        host, port_text = t.split(":")
    else:
        host = t   # IPv4 without port, or bare IPv6 without port
    af, addr = parse_addr(host)
    if port_text is None:
        if default_port is None:
            raise ConfigError(f"missing port in {text!r}")
        port = default_port
    else:
        try:
            port = int(port_text) if port_text.isdigit() else -1
        except ValueError:        # '\u00b2' is a digit int() refuses; too many digits
            port = -1
        if not 0 <= port <= 65535:
            raise ConfigError(f"invalid port in {text!r}")
    return af, addr, port


# ---------------------------------------------------------------- objects

class Stats:
    """Plain integer counters (IPVS.md §7).  Rates are derived outside the
    hot path (dataplane/stats.py)."""
    __slots__ = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")

    def __init__(self):
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0

    def as_tuple(self):
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def zero(self):
        """``ipvsadm -Z``: every counter back to 0 (the one place that does it)."""
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0


class Dest:
    """A real server of one service (kernel struct ip_vs_dest)."""
    __slots__ = ("af", "addr", "port", "weight", "last_weight", "u_threshold",
                 "l_threshold", "fwd", "activeconns", "inactconns",
                 "persistconns", "overloaded", "stats", "svc", "available")

    def __init__(self, addr, port, weight=1, fwd=FWD_MASQ, u_threshold=0, l_threshold=0):
        self.af = addr_af(addr)
        self.addr = addr
        self.port = port
        self.weight = weight
        self.last_weight = weight
        self.u_threshold = u_threshold
        self.l_threshold = l_threshold
        self.fwd = fwd
        self.activeconns = 0
        self.inactconns = 0
        self.persistconns = 0
        self.overloaded = False
        self.stats = Stats()
        self.svc = None
        self.available = True   # False once removed from its service ("trash")

    @property
    def key(self):
        return (self.addr, self.port)

    def __repr__(self):
        return f"Dest({format_endpoint(self.addr, self.port)} w={self.weight})"

    # -- overload (ipvsadm -x / -y), IPVS.md §1.8
    def conn_bound(self):
        """Call after a connection was bound (counters already updated)."""
        if self.u_threshold and self.activeconns + self.inactconns >= self.u_threshold:
            self.overloaded = True

    def conn_unbound(self):
        """Call after a connection was unbound (counters already updated)."""
        if not self.overloaded:
            return
        n = self.activeconns + self.inactconns
        if self.l_threshold:
            if n < self.l_threshold:
                self.overloaded = False
        elif self.u_threshold:
            if n * 4 < self.u_threshold * 3:
                self.overloaded = False
        else:
            self.overloaded = False


class Service:
    """A virtual service (kernel struct ip_vs_service).

    `dests` is kept in the kernel's list order: the most recently added
    destination first (IPVS.md §1.6).  `sched` is the scheduler instance bound
    to this service; `options` holds userlb extensions (e.g. mh table size).
    """
    __slots__ = ("protocol", "af", "addr", "port", "sched_name", "flags",
                 "timeout", "netmask", "dests", "sched", "stats", "options",
                 "forwarded")

    def __init__(self, protocol, addr, port, sched_name="wlc", flags=0,
                 timeout=0, netmask=None, options=None):
        self.protocol = protocol
        self.af = addr_af(addr)
        self.addr = addr
        self.port = port
        self.sched_name = sched_name
        self.flags = flags
        self.timeout = timeout          # persistence timeout (s) when SVC_F_PERSISTENT
        self.netmask = netmask          # IPv4: mask as int; IPv6: prefix length
        if netmask is None:
            self.netmask = 0xFFFFFFFF if self.af == AF_INET else 128
        self.dests = []
        self.sched = None
        self.stats = Stats()
        self.options = dict(options or {})
        self.forwarded = False          # has forwarded a packet (MHS.md rule 5)

    @property
    def key(self):
        return (self.protocol, self.addr, self.port)

    def __repr__(self):
        return f"Service({PROTO_NAMES.get(self.protocol, self.protocol)} {format_endpoint(self.addr, self.port)} {self.sched_name})"

    def find_dest(self, addr, port):
        for d in self.dests:
            if d.addr == addr and d.port == port:
                return d
        return None
