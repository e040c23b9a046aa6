"""ipvsadm's output formats, rendered from a Config as pure functions.

Every function returns text (lines joined with '\\n', with a final newline
unless empty) and never touches the Config.  Formats are those of ipvsadm
1.31 (`-L -n`, `--stats`, `--rate`, `--thresholds`, `--persistent-conn`,
`--tun-info`, `--timeout`, `-c`, `-S -n`).

userlb always prints numeric addresses and ports (as with `-n`): it does not
resolve names; `numeric=False` is accepted and gives the same output.

Ordering: services are sorted by (fwmark, family, protocol, address, port)
and destinations by (address, port), with ipvsadm's comparison quirk -- the
address difference is taken as a *signed* 32-bit int, so addresses more than
2**31 apart compare "the wrong way" (200.0.0.1 sorts before 10.0.0.1) -- and
with glibc's qsort algorithm (a top-down merge sort), since that comparison is
not a total order and the result depends on the algorithm.  `nosort=True`
keeps the kernel order: services in creation order (the kernel's hash order is
not reproduced), destinations newest first.

Data the Config does not hold comes in through small callables, all optional:

* stats_of(obj)  -> (conns, inpkts, outpkts, inbytes, outbytes) for a Service
                    or Dest; default obj.stats.as_tuple().
* rates_of(obj)  -> (cps, inpps, outpps, inbps, outbps); default zeros.
* mhs_entries(svc) -> number of live connection entries of an mhs service
                    (or None if unknown).  For a service whose scheduler has
                    `unstable_slots()`, the `-L` service line gets the suffix
                    ` unstable N` (N = len() of the result if it is a
                    collection, else the number itself) and ` entries M` when
                    mhs_entries gives a number:
                    `TCP  10.0.0.100:80 mhs (mh-port) unstable 12 entries 3`.
* Connection entries for `-c` are ConnEntry tuples (below).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from ..errors import ConfigError
from ..model import (
    AF_INET,
    AF_INET6,
    DEFAULT_TIMEOUTS,
    FWD_DROUTE,
    FWD_LOCALNODE,
    FWD_MASQ,
    FWD_NAMES,
    FWD_TUNNEL,
    IPPROTO_SCTP,
    PROTO_NAMES,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    TUN_GRE,
    TUN_GUE,
    TUN_IPIP,
    TUN_TYPE_NAMES,
    Addr,
    Dest,
    Service,
    ServiceKey,
    Stats,
    format_endpoint,
)
from . import ipvsadm as ia
from .ipvsadm_values import SCHED_FLAG_BITS, format_netmask, sched_flag_names

if TYPE_CHECKING:
    from .config import Config

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096

#: "TCP" / "UDP" in listings, -t / -u in saved rules
PROTO_TITLE = {p: name.upper() for p, name in PROTO_NAMES.items()}
PROTO_OPTION = {p: f"-{name[0]}" for p, name in PROTO_NAMES.items()}
PROTO_OPTION[IPPROTO_SCTP] = "--sctp-service"     # ipvsadm has no short form
_TUN_FLAG_TEXT = ("-c", "+c", "r+c")
_TUN_FLAG_OPTION = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")
FWD_SWITCH = {FWD_MASQ: "-m", FWD_TUNNEL: "-i", FWD_DROUTE: "-g", FWD_LOCALNODE: "-g"}



class ConnEntry(NamedTuple):
    """One connection entry for `-L -c`: protocol (IPPROTO_*), client,
    virtual and destination endpoints (addresses as in model.py), state name
    as the kernel shows it (ESTABLISHED, SYN_RECV, ..., UDP), expires =
    remaining seconds (int; or an absolute time, see list_connections)."""
    protocol: int
    caddr: Addr
    cport: int
    vaddr: Addr
    vport: int
    daddr: Addr
    dport: int
    state: str
    expires: float


class HasStats(Protocol):
    """A Service or a Dest, as far as the counters go."""
    @property
    def stats(self) -> Stats: ...


Counters = tuple[int, int, int, int, int]
#: stats_of / rates_of: a Service or Dest -> its five counters or rates
CountersOf = Callable[[HasStats], Counters]
#: mhs_entries: a Service -> its live connection entries (or None)
EntriesOf = Callable[[Service], "int | None"]
#: health_of(service, destination) -> checker state text (`-L --health`)
HealthOf = Callable[[Service, Dest], str]

_ZERO5 = (0, 0, 0, 0, 0)
_T = TypeVar("_T")


# ------------------------------------------------------------------ sorting

def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _addr_cmp(a: Addr, b: Addr) -> int:
    """ipvsadm: ntohl(a) - ntohl(b) as a signed int (per 32-bit word for IPv6)."""
    if isinstance(a, int) and isinstance(b, int):
        return _s32(a - b)
    if isinstance(a, int) or isinstance(b, int):
        raise TypeError("addresses of different families")
    for i in range(0, 16, 4):
        r = _s32(int.from_bytes(a[i:i + 4], "big") - int.from_bytes(b[i:i + 4], "big"))
        if r:
            return r
    return 0


_AF_SOCKET = {AF_INET: 2, AF_INET6: 10}    # AF_INET / AF_INET6 socket values


def cmp_services(s1: Service, s2: Service) -> int:
    """ipvs_cmp_services (fwmark is always 0 in userlb)."""
    r = _AF_SOCKET[s1.af] - _AF_SOCKET[s2.af]
    if r:
        return r
    r = s1.protocol - s2.protocol
    if r:
        return r
    r = _addr_cmp(s1.addr, s2.addr)
    if r:
        return r
    return s1.port - s2.port


def cmp_dests(d1: Dest, d2: Dest) -> int:
    """ipvs_cmp_dests."""
    if d1.af != d2.af:          # cannot happen with -m (same family); be total
        return _AF_SOCKET[d1.af] - _AF_SOCKET[d2.af]
    r = _addr_cmp(d1.addr, d2.addr)
    if r:
        return r
    return d1.port - d2.port


def glibc_qsort(items: Iterable[_T], cmp: Callable[[_T, _T], int]) -> list[_T]:
    """glibc's qsort (msort_with_tmp): top-down merge sort, first half n//2,
    ties taken from the left run."""
    items = list(items)
    n = len(items)
    if n <= 1:
        return items
    n1 = n // 2
    b1 = glibc_qsort(items[:n1], cmp)
    b2 = glibc_qsort(items[n1:], cmp)
    out = []
    i = j = 0
    while i < len(b1) and j < len(b2):
        if cmp(b1[i], b2[j]) <= 0:
            out.append(b1[i])
            i += 1
        else:
            out.append(b2[j])
            j += 1
    out.extend(b1[i:])
    out.extend(b2[j:])
    return out


def ordered_services(config: Config, nosort: bool = False) -> list[Service]:
    svcs = list(config.services.values())
    return svcs if nosort else glibc_qsort(svcs, cmp_services)


def ordered_dests(svc: Service, nosort: bool = False) -> list[Dest]:
    return list(svc.dests) if nosort else glibc_qsort(svc.dests, cmp_dests)


# --------------------------------------------------------------- formatting

_LARGE_UNITS = ((1000000000, 1000, "K"), (100000000000, 1000000, "M"),
                (100000000000000, 1000000000, "G"))


def largenum(i: int, exact: bool = False) -> str:
    """ipvsadm's print_largenum: 9 characters (leading space included)."""
    if exact:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100000000:
        return f"{i:9d}"
    for limit, div, unit in _LARGE_UNITS:
        if i < limit:
            return f"{i // div:8d}{unit}"
    return f"{i // 1000000000000:8d}T"


def _svc_name(svc: Service) -> str:
    """'TCP  10.0.0.100:80' (protocol %-4s, IPv4 truncated to 33 chars)."""
    name = f"{PROTO_TITLE.get(svc.protocol, '?'):<4} {format_endpoint(svc.addr, svc.port)}"
    return name[:33] if svc.af == AF_INET else name


def _dname(d: Dest) -> str:
    name = format_endpoint(d.addr, d.port)
    return name[:28] if d.af == AF_INET else name


def _default_stats(obj: HasStats) -> Counters:
    return obj.stats.as_tuple()


def _default_rates(obj: HasStats) -> Counters:
    return _ZERO5


_DEST_TITLE = "  -> RemoteAddress:Port"
#: the column titles and their formats of the table listings
_COLUMNS = {
    "stats": [(t, ">8") for t in ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")],
    "rate": [(t, ">8") for t in ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")],
    "thresholds": [("Uthreshold", "<10"), ("Lthreshold", "<10"), ("ActiveConn", "<10"),
                   ("InActConn", "<10")],
    "persistent_conn": [("Weight", "<9"), ("PersistConn", "<11"), ("ActiveConn", "<10"),
                        ("InActConn", "<10")],
}


def title(stats: bool = False, rate: bool = False, thresholds: bool = False,
          persistent_conn: bool = False, tun_info: bool = False) -> list[str]:
    """ipvsadm's print_title (the column header lines)."""
    for name, on in (("stats", stats), ("rate", rate), ("thresholds", thresholds),
                     ("persistent_conn", persistent_conn)):
        if on:
            cols = "".join(f" {t:{fmt}}" for t, fmt in _COLUMNS[name])
            return [f"{'Prot LocalAddress:Port':<33}{cols}", _DEST_TITLE]
    if tun_info:
        return ["Prot LocalAddress:Port Scheduler Flags",
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
                "InActConn"]
    return ["Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]


def _mhs_suffix(svc: Service, mhs_entries: EntriesOf | None) -> str:
    n: Any = svc.sched.unstable_slots() if svc.sched is not None else None
    if n is None:
        return ""
    if not isinstance(n, int):
        n = len(n)
    out = f" unstable {n}"
    e = mhs_entries(svc) if mhs_entries is not None else None
    if e is not None:
        out += f" entries {e}"
    return out


def _persistence(svc: Service, timeout_word: str, mask_word: str) -> str:
    """` persistent 360 mask 255.255.255.0` (-L) or ` -p 360 -M ...` (-S); the
    mask only when it is not the full one."""
    if not svc.flags & SVC_F_PERSISTENT:
        return ""
    s = f" {timeout_word} {svc.timeout}"
    if svc.netmask != Service.full_netmask(svc.af):
        s += f" {mask_word} {format_netmask(svc.netmask, svc.af)}"
    return s


def _service_head(svc: Service, thresholds: bool, persistent_conn: bool, tun_info: bool,
                  mhs_entries: EntriesOf | None) -> str:
    """The `-L` service line: scheduler, flags, persistence, ops, mhs state."""
    s = f"{_svc_name(svc)} {svc.sched_name}"
    if svc.flags & SCHED_FLAG_BITS:
        s += f" ({','.join(sched_flag_names(svc.sched_name, svc.flags))})"
    s += _persistence(svc, "persistent", "mask")
    if svc.flags & SVC_F_ONEPACKET:
        s += " ops"
    if not (thresholds or persistent_conn or tun_info):
        s += _mhs_suffix(svc, mhs_entries)
    return s


def _dest_line(d: Dest, stats: bool, rate: bool, thresholds: bool, persistent_conn: bool,
               tun_info: bool, exact: bool, stats_of: CountersOf, rates_of: CountersOf) -> str:
    dn = f"  -> {_dname(d):<28}"
    if stats:
        return dn + "".join(largenum(v, exact) for v in stats_of(d))
    if rate:
        cps, inpps, outpps, inbps, outbps = rates_of(d)
        return (f"{dn} {cps:8d} {inpps:8d} {outpps:8d}"
                + largenum(inbps, exact) + largenum(outbps, exact))
    conns = f"{d.activeconns:<10d} {d.inactconns:<10d}"
    if thresholds:
        return f"{dn} {d.u_threshold:<10d} {d.l_threshold:<10d} {conns}"
    if persistent_conn:
        return f"{dn} {d.weight:<9d} {d.persistconns:<11d} {conns}"
    tun = f" {tun_info_text(d):<13}" if tun_info else ""
    return f"{dn} {FWD_NAMES[d.fwd]:<7}{tun} {d.weight:<6d} {conns}"


def service_lines(svc: Service, stats: bool = False, rate: bool = False,
                  thresholds: bool = False, persistent_conn: bool = False,
                  tun_info: bool = False, exact: bool = False, nosort: bool = False,
                  stats_of: CountersOf | None = None, rates_of: CountersOf | None = None,
                  mhs_entries: EntriesOf | None = None, *,
                  health_of: HealthOf | None = None) -> list[str]:
    """The service line and its destination lines (print_service_entry)."""
    stats_of = stats_of or _default_stats
    rates_of = rates_of or _default_rates
    if stats:
        head = f"{_svc_name(svc):<33}" + "".join(largenum(v, exact) for v in stats_of(svc))
    elif rate:
        head = f"{_svc_name(svc):<33}" + "".join(largenum(v, exact) for v in rates_of(svc))
    else:
        head = _service_head(svc, thresholds, persistent_conn, tun_info, mhs_entries)
    return [head] + [_dest_line(d, stats, rate, thresholds, persistent_conn, tun_info, exact,
                                stats_of, rates_of)
                     + (f" {health_of(svc, d)}" if health_of is not None else "")
                     for d in ordered_dests(svc, nosort)]


def _text(lines: Iterable[str]) -> str:
    return "".join(line + "\n" for line in lines)


def list_all(config: Config, numeric: bool = True, stats: bool = False, rate: bool = False,
             thresholds: bool = False, persistent_conn: bool = False, tun_info: bool = False,
             exact: bool = False, nosort: bool = False, size: int = CONN_TAB_SIZE,
             stats_of: CountersOf | None = None, rates_of: CountersOf | None = None,
             mhs_entries: EntriesOf | None = None, *, health_of: HealthOf | None = None) -> str:
    """`ipvsadm -L -n [--stats|--rate|--thresholds|--persistent-conn|--tun-info]
    [--exact] [--nosort]` (userlb: [--health], a last column with each real
    server's checker state)."""
    lines = [f"IP Virtual Server version {IPVS_VERSION} (size={size})"]
    lines += _health_title(title(stats, rate, thresholds, persistent_conn, tun_info), health_of)
    for svc in ordered_services(config, nosort):
        lines += service_lines(svc, stats, rate, thresholds, persistent_conn, tun_info, exact,
                               nosort, stats_of, rates_of, mhs_entries, health_of=health_of)
    return _text(lines)


def _health_title(lines: list[str], health_of: HealthOf | None) -> list[str]:
    return lines if health_of is None else lines[:-1] + [lines[-1] + " Health"]


def list_service(config: Config, key: ServiceKey, numeric: bool = True, stats: bool = False,
                 rate: bool = False, thresholds: bool = False, persistent_conn: bool = False,
                 tun_info: bool = False, exact: bool = False, nosort: bool = False,
                 stats_of: CountersOf | None = None, rates_of: CountersOf | None = None,
                 mhs_entries: EntriesOf | None = None, *,
                 health_of: HealthOf | None = None) -> str:
    """`ipvsadm -L -t VIP:PORT ...` (no version header, as ipvsadm).
    Raises ConfigError("No such service")."""
    svc = config.services.get(key)
    if svc is None:
        raise ConfigError("No such service")
    return _text(_health_title(title(stats, rate, thresholds, persistent_conn, tun_info),
                               health_of) + service_lines(
        svc, stats, rate, thresholds, persistent_conn, tun_info, exact, nosort, stats_of,
        rates_of, mhs_entries, health_of=health_of))


def list_timeout(config: Config) -> str:
    t = config.timeouts
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"


def list_connections(entries: Iterable[Sequence[Any]], persistent_conn: bool = False,
                     now: float | None = None) -> str:
    """`ipvsadm -L -c -n` from ConnEntry tuples (in the given order).
    `expires` is the remaining time in seconds, or -- when `now` is given --
    the absolute expiry time (Engine.entries() gives that), shown as
    expires - now."""
    head = f"pro expire {'state':<11} {'source':<18} {'virtual':<18} "
    lines = ["IPVS connection entries",
             head + (f"{'destination':<18} {'pe name':<16} pe_data" if persistent_conn
                     else "destination")]
    for row in entries:
        e = ConnEntry(*row)
        exp = max(0, int(e.expires if now is None else e.expires - now))
        expire = f"{exp // 60:02d}:{exp % 60:02d}"
        lines.append(f"{PROTO_TITLE.get(e.protocol, '?'):<3} {expire:<6} {e.state:<11} "
                     f"{format_endpoint(e.caddr, e.cport):<18} "
                     f"{format_endpoint(e.vaddr, e.vport):<18} "
                     f"{format_endpoint(e.daddr, e.dport)}")
    return _text(lines)


def render(config: Config, cmd: ia.Command, **data: Any) -> str:
    """Render a parsed `-L` or `-S` ipvsadm.Command.  `data` may carry
    stats_of, rates_of, mhs_entries, size, and for -c: conn_entries (ConnEntry
    tuples or plain 9-tuples in the same order) and now."""
    if cmd.cmd == ia.SAVE:
        return _text(save_lines(config))
    if cmd.connections:
        return list_connections(data.get("conn_entries", ()), cmd.persistent_conn,
                                data.get("now"))
    if cmd.timeouts_list:
        return list_timeout(config)
    args = (cmd.stats, cmd.rate, cmd.thresholds, cmd.persistent_conn, cmd.tun_info,
            cmd.exact, cmd.nosort)
    sources = (data.get("stats_of"), data.get("rates_of"), data.get("mhs_entries"))
    # --health: the director's checker state per real server ("-" without checkers)
    health_of = (data.get("health_of") or _no_health) if cmd.health else None
    if cmd.has_service:
        return list_service(config, cmd.service_key, True, *args, *sources,
                            health_of=health_of)
    return list_all(config, True, *args, data.get("size", CONN_TAB_SIZE), *sources,
                    health_of=health_of)


def _no_health(svc: Service, d: Dest) -> str:
    return "-"


# --------------------------------------------------------------------- -S

#: Service.options key -> the ipvsadm option that sets it (userlb extensions)
_USERLB_OPTIONS = (("mh_table_size", "--mh-table-size"), ("sh_tab_bits", "--sh-tab-bits"),
                   ("sh_hash", "--sh-hash"))


def service_rule(svc: Service) -> str:
    """`-A -t 10.0.0.100:80 -s mh -p 360 -M mask -o -b flags` + userlb options."""
    s = (f"-A {PROTO_OPTION[svc.protocol]} {format_endpoint(svc.addr, svc.port)} "
         f"-s {svc.sched_name}" + _persistence(svc, "-p", "-M"))
    if svc.flags & SVC_F_ONEPACKET:
        s += " -o"
    if svc.flags & SCHED_FLAG_BITS:
        s += f" -b {','.join(sched_flag_names(svc.sched_name, svc.flags))}"
    for key, option in _USERLB_OPTIONS:
        if key in svc.options:
            s += f" {option} {svc.options[key]}"
    return s


def tun_info_text(d: Dest) -> str:
    """The TunnelInfo column of `-L --tun-info` (ipvsadm 1.31): `ipip`,
    `gue:PORT:FLAGS`, `gre:FLAGS` (FLAGS -c, +c or r+c), `n/a` for a
    destination that does not tunnel."""
    if d.fwd != FWD_TUNNEL:
        return "n/a"
    ttype, tport, tflags = d.tun
    if ttype == TUN_GUE:
        return f"gue:{tport}:{_TUN_FLAG_TEXT[tflags]}"
    if ttype == TUN_GRE:
        return f"gre:{_TUN_FLAG_TEXT[tflags]}"
    return "ipip"


def dest_rule(svc: Service, d: Dest) -> str:
    """`-a -t VIP:PORT -r RIP:RPORT -m -w W` (+ the tunnel options of -i as
    ipvsadm 1.31 writes them, + -x/-y when non-zero)."""
    s = (f"-a {PROTO_OPTION[svc.protocol]} {format_endpoint(svc.addr, svc.port)} "
         f"-r {format_endpoint(d.addr, d.port)} {FWD_SWITCH[d.fwd]} -w {d.weight}")
    if d.fwd == FWD_TUNNEL:
        ttype, tport, tflags = d.tun
        s += f" --tun-type {TUN_TYPE_NAMES[ttype]}"
        if ttype == TUN_GUE:
            s += f" --tun-port {tport}"
        if ttype != TUN_IPIP:
            s += f" {_TUN_FLAG_OPTION[tflags]}"
    if d.u_threshold:
        s += f" -x {d.u_threshold}"
    if d.l_threshold:
        s += f" -y {d.l_threshold}"
    return s


def save_lines(config: Config, with_timeouts: bool = True) -> list[str]:
    """`ipvsadm -S -n` as a list of lines, sorted as ipvsadm sorts; `-R` of
    these lines rebuilds the same configuration.  Differences from ipvsadm,
    all valid -R input: a `--set tcp tcpfin udp` first line when the timeouts
    are not the defaults (with_timeouts), -x/-y when set, flag-3 kept for
    sh/mh, the userlb extensions.  As ipvsadm, -M is only saved with -p (a
    netmask without persistence has no effect), and last_weight is not saved
    (restore sets last_weight = weight; docs/ipvs.md §1.6 on save/restore and mh)."""
    lines = []
    t = config.timeouts
    if with_timeouts and t.as_tuple() != DEFAULT_TIMEOUTS:
        lines.append(f"--set {t.tcp} {t.tcpfin} {t.udp}")
    for svc in ordered_services(config):
        lines.append(service_rule(svc))
        for d in ordered_dests(svc):
            lines.append(dest_rule(svc, d))
    return lines
