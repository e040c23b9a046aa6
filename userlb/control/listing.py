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
from collections import namedtuple

from ..model import (AF_INET, AF_INET6, FWD_DROUTE, FWD_LOCALNODE, FWD_MASQ,
                     FWD_NAMES, FWD_TUNNEL, IPPROTO_TCP, IPPROTO_UDP,
                     SVC_F_ONEPACKET, SVC_F_PERSISTENT, format_endpoint)
from .ipvsadm import SCHED_FLAG_BITS, format_netmask, sched_flag_names

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096

PROTO_TITLE = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}
PROTO_OPTION = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u"}
FWD_SWITCH = {FWD_MASQ: "-m", FWD_TUNNEL: "-i", FWD_DROUTE: "-g", FWD_LOCALNODE: "-g"}

#: one connection entry for `-L -c`: protocol (IPPROTO_*), client, virtual
#: and destination endpoints (addresses as in model.py), state name as the
#: kernel shows it (ESTABLISHED, SYN_RECV, ..., UDP), expires = remaining
#: seconds (int).
ConnEntry = namedtuple("ConnEntry", "protocol caddr cport vaddr vport daddr dport state expires")

_ZERO5 = (0, 0, 0, 0, 0)


# ------------------------------------------------------------------ sorting

def _s32(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _addr_cmp(a, b):
    """ipvsadm: ntohl(a) - ntohl(b) as a signed int (per 32-bit word for IPv6)."""
    if isinstance(a, int):
        return _s32(a - b)
    for i in range(0, 16, 4):
        r = _s32(int.from_bytes(a[i:i + 4], "big") - int.from_bytes(b[i:i + 4], "big"))
        if r:
            return r
    return 0


_AF_SOCKET = {AF_INET: 2, AF_INET6: 10}    # AF_INET / AF_INET6 socket values


def cmp_services(s1, s2):
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


def cmp_dests(d1, d2):
    """ipvs_cmp_dests."""
    if d1.af != d2.af:          # cannot happen with -m (same family); be total
        return _AF_SOCKET[d1.af] - _AF_SOCKET[d2.af]
    r = _addr_cmp(d1.addr, d2.addr)
    if r:
        return r
    return d1.port - d2.port


def glibc_qsort(items, cmp):
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


def ordered_services(config, nosort=False):
    svcs = list(config.services.values())
    return svcs if nosort else glibc_qsort(svcs, cmp_services)


def ordered_dests(svc, nosort=False):
    return list(svc.dests) if nosort else glibc_qsort(svc.dests, cmp_dests)


# --------------------------------------------------------------- formatting

def _endpoint(addr, port):
    return format_endpoint(addr, port)


def largenum(i, exact=False):
    """ipvsadm's print_largenum: 9 characters (leading space included)."""
    if exact:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100000000:
        return f"{i:9d}"
    if i < 1000000000:
        return f"{i // 1000:8d}K"
    if i < 100000000000:
        return f"{i // 1000000:8d}M"
    if i < 100000000000000:
        return f"{i // 1000000000:8d}G"
    return f"{i // 1000000000000:8d}T"


def _svc_name(svc):
    """'TCP  10.0.0.100:80' (protocol %-4s, IPv4 truncated to 33 chars)."""
    name = f"{PROTO_TITLE.get(svc.protocol, '?'):<4} {_endpoint(svc.addr, svc.port)}"
    return name[:33] if svc.af == AF_INET else name


def _dname(d):
    name = _endpoint(d.addr, d.port)
    return name[:28] if d.af == AF_INET else name


def _default_stats(obj):
    return obj.stats.as_tuple()


def _default_rates(obj):
    return _ZERO5


def title(stats=False, rate=False, thresholds=False, persistent_conn=False,
          tun_info=False):
    """ipvsadm's print_title (the column header lines)."""
    if stats:
        return [f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} "
                f"{'InBytes':>8} {'OutBytes':>8}", "  -> RemoteAddress:Port"]
    if rate:
        return [f"{'Prot LocalAddress:Port':<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8} "
                f"{'InBPS':>8} {'OutBPS':>8}", "  -> RemoteAddress:Port"]
    if thresholds:
        return [f"{'Prot LocalAddress:Port':<33} {'Uthreshold':<10} {'Lthreshold':<10} "
                f"{'ActiveConn':<10} {'InActConn':<10}", "  -> RemoteAddress:Port"]
    if persistent_conn:
        return [f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11} "
                f"{'ActiveConn':<10} {'InActConn':<10}", "  -> RemoteAddress:Port"]
    if tun_info:
        return ["Prot LocalAddress:Port Scheduler Flags",
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"]
    return ["Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]


def _mhs_suffix(svc, mhs_entries):
    n = svc.sched.unstable_slots()
    if n is None:
        return ""
    if not isinstance(n, int):
        n = len(n)
    out = f" unstable {n}"
    e = mhs_entries(svc) if mhs_entries is not None else None
    if e is not None:
        out += f" entries {e}"
    return out


def service_lines(svc, stats=False, rate=False, thresholds=False,
                  persistent_conn=False, tun_info=False, exact=False,
                  nosort=False, stats_of=None, rates_of=None, mhs_entries=None):
    """The service line and its destination lines (print_service_entry)."""
    stats_of = stats_of or _default_stats
    rates_of = rates_of or _default_rates
    name = _svc_name(svc)
    lines = []
    if stats:
        lines.append(f"{name:<33}" + "".join(largenum(v, exact) for v in stats_of(svc)))
    elif rate:
        lines.append(f"{name:<33}" + "".join(largenum(v, exact) for v in rates_of(svc)))
    else:
        s = f"{name} {svc.sched_name}"
        if svc.flags & SCHED_FLAG_BITS:
            s += f" ({','.join(sched_flag_names(svc.sched_name, svc.flags))})"
        if svc.flags & SVC_F_PERSISTENT:
            s += f" persistent {svc.timeout}"
            if svc.netmask != (0xFFFFFFFF if svc.af == AF_INET else 128):
                s += f" mask {format_netmask(svc.netmask, svc.af)}"
        if svc.flags & SVC_F_ONEPACKET:
            s += " ops"
        if not (thresholds or persistent_conn or tun_info):
            s += _mhs_suffix(svc, mhs_entries)
        lines.append(s)
    for d in ordered_dests(svc, nosort):
        dn = _dname(d)
        if stats:
            lines.append(f"  -> {dn:<28}" + "".join(largenum(v, exact) for v in stats_of(d)))
        elif rate:
            cps, inpps, outpps, inbps, outbps = rates_of(d)
            lines.append(f"  -> {dn:<28} {cps:8d} {inpps:8d} {outpps:8d}"
                         + largenum(inbps, exact) + largenum(outbps, exact))
        elif thresholds:
            lines.append(f"  -> {dn:<28} {d.u_threshold:<10d} {d.l_threshold:<10d} "
                         f"{d.activeconns:<10d} {d.inactconns:<10d}")
        elif persistent_conn:
            lines.append(f"  -> {dn:<28} {d.weight:<9d} {d.persistconns:<11d} "
                         f"{d.activeconns:<10d} {d.inactconns:<10d}")
        elif tun_info:
            lines.append(f"  -> {dn:<28} {FWD_NAMES[d.fwd]:<7} {'n/a':<13} {d.weight:<6d} "
                         f"{d.activeconns:<10d} {d.inactconns:<10d}")
        else:
            lines.append(f"  -> {dn:<28} {FWD_NAMES[d.fwd]:<7} {d.weight:<6d} "
                         f"{d.activeconns:<10d} {d.inactconns:<10d}")
    return lines


def _text(lines):
    return "".join(line + "\n" for line in lines)


def list_all(config, numeric=True, stats=False, rate=False, thresholds=False,
             persistent_conn=False, tun_info=False, exact=False, nosort=False,
             size=CONN_TAB_SIZE, stats_of=None, rates_of=None, mhs_entries=None):
    """`ipvsadm -L -n [--stats|--rate|--thresholds|--persistent-conn|--tun-info]
    [--exact] [--nosort]`."""
    kw = dict(stats=stats, rate=rate, thresholds=thresholds,
              persistent_conn=persistent_conn, tun_info=tun_info)
    lines = [f"IP Virtual Server version {IPVS_VERSION} (size={size})"]
    lines += title(**kw)
    for svc in ordered_services(config, nosort):
        lines += service_lines(svc, exact=exact, nosort=nosort, stats_of=stats_of,
                               rates_of=rates_of, mhs_entries=mhs_entries, **kw)
    return _text(lines)


def list_service(config, key, numeric=True, stats=False, rate=False,
                 thresholds=False, persistent_conn=False, tun_info=False,
                 exact=False, nosort=False, stats_of=None, rates_of=None,
                 mhs_entries=None):
    """`ipvsadm -L -t VIP:PORT ...` (no version header, as ipvsadm).
    Raises ConfigError("No such service")."""
    from ..errors import ConfigError
    svc = config.services.get(key)
    if svc is None:
        raise ConfigError("No such service")
    kw = dict(stats=stats, rate=rate, thresholds=thresholds,
              persistent_conn=persistent_conn, tun_info=tun_info)
    return _text(title(**kw) + service_lines(
        svc, exact=exact, nosort=nosort, stats_of=stats_of, rates_of=rates_of,
        mhs_entries=mhs_entries, **kw))


def list_timeout(config):
    t = config.timeouts
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"


def list_connections(entries, persistent_conn=False, now=None):
    """`ipvsadm -L -c -n` from ConnEntry tuples (in the given order).
    `expires` is the remaining time in seconds, or -- when `now` is given --
    the absolute expiry time (Engine.entries() gives that), shown as
    expires - now."""
    if persistent_conn:
        lines = ["IPVS connection entries",
                 f"pro expire {'state':<11} {'source':<18} {'virtual':<18} "
                 f"{'destination':<18} {'pe name':<16} pe_data"]
    else:
        lines = ["IPVS connection entries",
                 f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination"]
    for e in entries:
        e = ConnEntry(*e)
        exp = e.expires if now is None else e.expires - now
        exp = max(0, int(exp))
        expire = f"{exp // 60:02d}:{exp % 60:02d}"
        lines.append(f"{PROTO_TITLE.get(e.protocol, '?'):<3} {expire:<6} {e.state:<11} "
                     f"{_endpoint(e.caddr, e.cport):<18} {_endpoint(e.vaddr, e.vport):<18} "
                     f"{_endpoint(e.daddr, e.dport)}")
    return _text(lines)


def render(config, cmd, **data):
    """Render a parsed `-L` or `-S` ipvsadm.Command.  `data` may carry
    stats_of, rates_of, mhs_entries, size, and for -c: conn_entries (ConnEntry
    tuples or plain 9-tuples in the same order) and now."""
    from . import ipvsadm as ia
    if cmd.cmd == ia.SAVE:
        return _text(save_lines(config))
    if cmd.connections:
        return list_connections(data.get("conn_entries", ()), cmd.persistent_conn,
                                data.get("now"))
    if cmd.timeouts_list:
        return list_timeout(config)
    kw = dict(stats=cmd.stats, rate=cmd.rate, thresholds=cmd.thresholds,
              persistent_conn=cmd.persistent_conn, tun_info=cmd.tun_info,
              exact=cmd.exact, nosort=cmd.nosort, stats_of=data.get("stats_of"),
              rates_of=data.get("rates_of"), mhs_entries=data.get("mhs_entries"))
    if cmd.has_service:
        return list_service(config, cmd.service_key, **kw)
    return list_all(config, size=data.get("size", CONN_TAB_SIZE), **kw)


# --------------------------------------------------------------------- -S

def service_rule(svc):
    """`-A -t 10.0.0.100:80 -s mh -p 360 -M mask -o -b flags` + userlb options."""
    s = f"-A {PROTO_OPTION[svc.protocol]} {_endpoint(svc.addr, svc.port)} -s {svc.sched_name}"
    if svc.flags & SVC_F_PERSISTENT:
        s += f" -p {svc.timeout}"
        if svc.netmask != (0xFFFFFFFF if svc.af == AF_INET else 128):
            s += f" -M {format_netmask(svc.netmask, svc.af)}"
    if svc.flags & SVC_F_ONEPACKET:
        s += " -o"
    if svc.flags & SCHED_FLAG_BITS:
        s += f" -b {','.join(sched_flag_names(svc.sched_name, svc.flags))}"
    if "mh_table_size" in svc.options:
        s += f" --mh-table-size {svc.options['mh_table_size']}"
    if "sh_tab_bits" in svc.options:
        s += f" --sh-tab-bits {svc.options['sh_tab_bits']}"
    if "sh_hash" in svc.options:
        s += f" --sh-hash {svc.options['sh_hash']}"
    return s


def dest_rule(svc, d):
    """`-a -t VIP:PORT -r RIP:RPORT -m -w W` (+ -x/-y when non-zero)."""
    s = (f"-a {PROTO_OPTION[svc.protocol]} {_endpoint(svc.addr, svc.port)} "
         f"-r {_endpoint(d.addr, d.port)} {FWD_SWITCH[d.fwd]} -w {d.weight}")
    if d.u_threshold:
        s += f" -x {d.u_threshold}"
    if d.l_threshold:
        s += f" -y {d.l_threshold}"
    return s


def save_lines(config, with_timeouts=True):
    """`ipvsadm -S -n` as a list of lines, sorted as ipvsadm sorts; `-R` of
    these lines rebuilds the same configuration.  Differences from ipvsadm,
    all valid -R input: a `--set tcp tcpfin udp` first line when the timeouts
    are not the defaults (with_timeouts), -x/-y when set, flag-3 kept for
    sh/mh, the userlb extensions.  As ipvsadm, -M is only saved with -p (a
    netmask without persistence has no effect), and last_weight is not saved
    (restore sets last_weight = weight; IPVS.md §1.6 on save/restore and mh)."""
    lines = []
    t = config.timeouts
    if with_timeouts and (t.tcp, t.tcpfin, t.udp) != (900, 120, 300):
        lines.append(f"--set {t.tcp} {t.tcpfin} {t.udp}")
    for svc in ordered_services(config):
        lines.append(service_rule(svc))
        for d in ordered_dests(svc):
            lines.append(dest_rule(svc, d))
    return lines
