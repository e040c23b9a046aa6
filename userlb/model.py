"""The control plane's truth, in ipvsadm's vocabulary: services, destinations
(real servers), flags and forwarding methods.

Address representation (everywhere in userlb): an IPv4 address is an `int`
(host integer, 10.0.0.1 -> 0x0A000001); an IPv6 address is a 16-byte `bytes`
in network order.  The two types never compare equal, so IPv4 and IPv6 keys
can share one dict.  `ipaddress` objects are only used here, at the text
boundary (parse_addr / format_addr).
"""
from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ConfigError

if TYPE_CHECKING:
    from .sched.base import Scheduler

#: an address: IPv4 as a host int, IPv6 as 16 bytes in network order
Addr: TypeAlias = int | bytes
#: (protocol, address, port) of a service; (address, port) of a destination
ServiceKey: TypeAlias = tuple[int, Addr, int]
DestKey: TypeAlias = tuple[Addr, int]

AF_INET = 4
AF_INET6 = 6

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}
PROTO_BY_NAME = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}
#: the ipvsadm option that names a service of each protocol (SCTP has no short one)
PROTO_SWITCH = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u", IPPROTO_SCTP: "--sctp-service"}

# forwarding methods (kernel IP_VS_CONN_F_FWD_MASK values)
FWD_MASQ = 0
FWD_LOCALNODE = 1
FWD_TUNNEL = 2
FWD_DROUTE = 3
FWD_NAMES = {FWD_MASQ: "Masq", FWD_LOCALNODE: "Local", FWD_TUNNEL: "Tunnel", FWD_DROUTE: "Route"}

# tunnel types and encapsulation flags of a -i destination (kernel
# IP_VS_CONN_F_TUNNEL_TYPE_*, IP_VS_TUNNEL_ENCAP_FLAG_*; docs/forwarding.md)
TUN_IPIP = 0
TUN_GUE = 1
TUN_GRE = 2
TUN_TYPE_NAMES = ("ipip", "gue", "gre")
TUN_F_NOCSUM = 0
TUN_F_CSUM = 1
TUN_F_REMCSUM = 2
#: (tun_type, tun_port, tun_flags) of a destination that is not a GUE/GRE tunnel
TUN_NONE: tuple[int, int, int] = (TUN_IPIP, 0, TUN_F_NOCSUM)

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
DEFAULT_TIMEOUTS: tuple[int, int, int] = (
    DEFAULT_TCP_TIMEOUT, DEFAULT_TCPFIN_TIMEOUT, DEFAULT_UDP_TIMEOUT)


# ---------------------------------------------------------------- addresses

def parse_addr(text: str) -> tuple[int, Addr]:
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


def addr_af(addr: Addr) -> int:
    return AF_INET if isinstance(addr, int) else AF_INET6


def format_addr(addr: Addr) -> str:
    """int -> dotted quad; 16 bytes -> compressed IPv6 (no brackets)."""
    if isinstance(addr, int):
        if not 0 <= addr <= 0xFFFFFFFF:
            raise ValueError(f"not an IPv4 address: {addr}")
        return socket.inet_ntoa(addr.to_bytes(4, "big"))    # ipaddress's text, 3x faster
    return str(ipaddress.IPv6Address(bytes(addr)))


def format_endpoint(addr: Addr, port: int) -> str:
    """10.0.0.1:80 or [2001:db8::1]:80"""
    if isinstance(addr, int):
        return f"{format_addr(addr)}:{port}"
    return f"[{format_addr(addr)}]:{port}"


def parse_endpoint(text: str, default_port: int | None = None) -> tuple[int, Addr, int]:
    """'10.0.0.1:80' / '[2001:db8::1]:80' / '10.0.0.1' (port = default_port)
    -> (af, addr, port).  Raises ConfigError."""
    t = text.strip()
    port_text: str | None = None
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
    """Plain integer counters (docs/ipvs.md §7).  Rates are derived outside
    the hot path (dataplane/stats.py)."""
    __slots__ = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")

    def __init__(self) -> None:
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def zero(self) -> None:
        """``ipvsadm -Z``: every counter back to 0 (the one place that does it)."""
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0


class Dest:
    """A real server of one service (kernel struct ip_vs_dest)."""
    __slots__ = ("af", "addr", "port", "weight", "last_weight", "u_threshold",
                 "l_threshold", "fwd", "activeconns", "inactconns",
                 "persistconns", "overloaded", "stats", "svc", "available", "tun")

    def __init__(self, addr: Addr, port: int, weight: int = 1, fwd: int = FWD_MASQ,
                 u_threshold: int = 0, l_threshold: int = 0) -> None:
        self.af, self.addr, self.port = addr_af(addr), addr, port
        self.weight = self.last_weight = weight
        self.u_threshold, self.l_threshold, self.fwd = u_threshold, l_threshold, fwd
        self.activeconns = self.inactconns = self.persistconns = 0
        self.overloaded = False
        self.stats = Stats()
        self.svc: Service | None = None
        self.available = True   # False once removed from its service ("trash")
        self.tun = TUN_NONE      # (type, port, flags) of a tunnel (-i) destination

    @property
    def key(self) -> DestKey:
        return (self.addr, self.port)

    def __repr__(self) -> str:
        return f"Dest({format_endpoint(self.addr, self.port)} w={self.weight})"

    def update(self, weight: int, fwd: int, u_threshold: int, l_threshold: int,
               add: bool) -> None:
        """The kernel's __ip_vs_update_dest (-a of a revived destination with
        add=True, -e with add=False): last_weight follows the weight on -a and
        on a non-zero -e weight; the overload flag is cleared when the new
        upper threshold is 0 or above the old one (docs/ipvs.md §1.6, §1.8)."""
        self.weight = weight
        if add or weight != 0:
            self.last_weight = weight
        self.fwd = fwd
        old_u = self.u_threshold
        self.u_threshold = u_threshold
        self.l_threshold = l_threshold
        if u_threshold == 0 or u_threshold > old_u:
            self.overloaded = False

    # -- overload (ipvsadm -x / -y), docs/ipvs.md §1.8
    def conn_bound(self) -> None:
        """Call after a connection was bound (counters already updated)."""
        if self.u_threshold and self.activeconns + self.inactconns >= self.u_threshold:
            self.overloaded = True

    def conn_unbound(self) -> None:
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


class DestTrash:
    """Destinations removed from their service, kept so that adding the same
    one again revives the same Dest object, counters kept (the kernel's
    dest_trash, docs/ipvs.md §1.6).  Keyed by service key and destination
    key: a destination of a deleted service revives in a new service with
    the same key, as in the kernel."""

    def __init__(self) -> None:
        self._dests: dict[tuple[ServiceKey, DestKey], Dest] = {}

    def put(self, svc_key: ServiceKey, dest: Dest) -> None:
        self._dests[(svc_key, dest.key)] = dest

    def take(self, svc_key: ServiceKey, dkey: DestKey) -> Dest | None:
        return self._dests.pop((svc_key, dkey), None)

    def clear(self) -> None:
        self._dests.clear()


class Service:
    """A virtual service (kernel struct ip_vs_service).

    `dests` is kept in the kernel's list order: the most recently added
    destination first (docs/ipvs.md §1.6); a new list object is assigned on
    every add/delete, so a reader holding the old list never sees it change.
    `sched` is the scheduler instance bound to this service; `options` holds
    userlb extensions (e.g. mh table size).

    add_dest / edit_dest / del_dest / unlink_dests are the kernel's
    destination semantics; each tells the scheduler after the list changed.
    """
    __slots__ = ("protocol", "af", "addr", "port", "sched_name", "flags",
                 "timeout", "netmask", "dests", "sched", "stats", "options",
                 "forwarded")

    def __init__(self, protocol: int, addr: Addr, port: int, sched_name: str = "wlc",
                 flags: int = 0, timeout: int = 0, netmask: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.protocol = protocol
        self.af = addr_af(addr)
        self.addr = addr
        self.port = port
        self.sched_name = sched_name
        self.flags = flags
        self.timeout = timeout          # persistence timeout (s) when SVC_F_PERSISTENT
        # IPv4: mask as int; IPv6: prefix length
        self.netmask: int = netmask if netmask is not None else self.full_netmask(self.af)
        self.dests: list[Dest] = []
        self.sched: Scheduler | None = None
        self.stats = Stats()
        self.options: dict[str, Any] = dict(options or {})
        self.forwarded = False          # has forwarded a packet (docs/mhs-spec.md rule 5)

    @staticmethod
    def full_netmask(af: int) -> int:
        """The netmask of a service without -M: every address bit."""
        return 0xFFFFFFFF if af == AF_INET else 128

    @property
    def key(self) -> ServiceKey:
        return (self.protocol, self.addr, self.port)

    def __repr__(self) -> str:
        return (f"Service({PROTO_NAMES.get(self.protocol, self.protocol)} "
                f"{format_endpoint(self.addr, self.port)} {self.sched_name})")

    def find_dest(self, addr: Addr, port: int) -> Dest | None:
        for d in self.dests:
            if d.addr == addr and d.port == port:
                return d
        return None

    # -- destinations, with the kernel's semantics (docs/ipvs.md §1.6)
    def add_dest(self, addr: Addr, port: int, weight: int = 1, fwd: int = FWD_MASQ,
                 u_threshold: int = 0, l_threshold: int = 0,
                 trash: DestTrash | None = None) -> Dest:
        """ipvsadm -a: a destination deleted earlier from a service with this
        key is revived from `trash` (same object, counters kept, updated as
        -a updates); the destination goes to the HEAD of `dests`."""
        d = trash.take(self.key, (addr, port)) if trash is not None else None
        if d is None:
            d = Dest(addr, port, weight, fwd, u_threshold, l_threshold)
        else:
            d.update(weight, fwd, u_threshold, l_threshold, add=True)
        d.svc = self
        d.available = True
        self.dests = [d] + self.dests
        if self.sched is not None:
            self.sched.add_dest(d)
        return d

    def edit_dest(self, d: Dest, weight: int, fwd: int | None = None,
                  u_threshold: int | None = None, l_threshold: int | None = None) -> None:
        """ipvsadm -e (None: keep the destination's current value)."""
        d.update(weight, d.fwd if fwd is None else fwd,
                 d.u_threshold if u_threshold is None else u_threshold,
                 d.l_threshold if l_threshold is None else l_threshold, add=False)
        if self.sched is not None:
            self.sched.upd_dest(d)

    def del_dest(self, d: Dest, trash: DestTrash | None = None) -> None:
        """ipvsadm -d: unlinked, marked unavailable, kept in `trash`."""
        self.dests = [x for x in self.dests if x is not d]
        d.available = False
        if trash is not None:
            trash.put(self.key, d)
        if self.sched is not None:
            self.sched.del_dest(d)

    def unlink_dests(self, trash: DestTrash | None = None) -> None:
        """The service is being deleted: every destination unavailable (kept
        in `trash`), the scheduler told it is done."""
        dests = self.dests
        self.dests = []
        for d in dests:
            d.available = False
            if trash is not None:
                trash.put(self.key, d)
        if self.sched is not None:
            self.sched.done_service()
