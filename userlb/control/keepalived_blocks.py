"""keepalived.conf's blocks -> keepalived.py's objects: `virtual_server`
(with `virtual_server_group` members), `real_server`, the checkers and their
`url`s, with keepalived.conf(5)'s defaults and the inheritance of checker
settings (checker, then real server, then virtual server, then default),
whatever order the keywords come in.  Each value is checked where it is
read, so an error names its own line (keepalived.py's docstring lists what
is refused and what is accepted with a note).

One module over 500 lines on purpose: every block kind reads its keywords
with the same value readers and passes the same inheritable checker
settings down, so the keyword tables stay side by side."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PROTO_NAMES,
    Addr,
    format_addr,
    format_endpoint,
    parse_addr,
)
from . import ipvsadm as ia
from .ipvsadm_values import number
from .keepalived import (
    CHECKERS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DELAY_BEFORE_RETRY,
    DEFAULT_DELAY_LOOP,
    DEFAULT_MISC_RETRY,
    DEFAULT_RETRY,
    DNS_TYPES,
    MAX_SECONDS,
    MAX_TIMEOUT,
    REFUSED_CHECKERS,
    SCHED_FLAGS,
    CheckerDef,
    RealServer,
    Url,
    VirtualServer,
    dest_command,
    service_command,
)
from .keepalived_parse import Stmt

__all__ = ["virtual_server", "block"]


# ----------------------------------------------------------- value parsing

def _one(st: Stmt, what: str = "a value") -> str:
    if len(st.args) != 1:
        raise st.error(f"{st.keyword} takes {what}")
    return st.args[0]


def _int(st: Stmt, lo: int, hi: int) -> int:
    v = number(_one(st, "one number"), lo, hi)
    if v is None:
        raise st.error(f"{st.keyword}: {st.args[0]!r} is not a number in {lo}..{hi}")
    return v


def _secs(st: Stmt, allow_zero: bool = False) -> float:
    text = _one(st, "a number of seconds")
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero) or v > MAX_SECONDS:
        raise st.error(f"{st.keyword}: {text!r} is not a number of seconds "
                       f"({'0' if allow_zero else 'above 0'}..{int(MAX_SECONDS)})")
    return v


def _flag(st: Stmt) -> bool:
    """A flag keyword (keepalived 2 also accepts an explicit true/false)."""
    if not st.args:
        return True
    if len(st.args) == 1 and st.args[0].lower() in ("true", "on", "yes"):
        return True
    if len(st.args) == 1 and st.args[0].lower() in ("false", "off", "no"):
        return False
    raise st.error(f"{st.keyword} takes no value (or true/false)")


def _script(st: Stmt) -> str:
    if not st.args:
        raise st.error(f"{st.keyword} needs a script")
    return " ".join(st.args)


def _hexdata(st: Stmt) -> bytes:
    """UDP_CHECK's data: hexadecimal digits, 0x prefix allowed, at most 65507 bytes."""
    text = "".join(st.args)
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        data = bytes.fromhex(text)
    except ValueError:
        data = None
    if data is None or len(data) > 65507:
        raise st.error(f"{st.keyword}: {' '.join(st.args)!r} is not hexadecimal data "
                       "(an even number of hex digits, at most 65507 bytes)")
    return data


def _addr(st: Stmt, text: str) -> tuple[int, Addr]:
    try:
        return parse_addr(text)
    except Exception:   # noqa: BLE001 - ConfigError or ValueError: one message
        raise st.error(f"{st.keyword}: {text!r} is not an IP address "
                       "(userlb does not resolve host names)") from None


def _port(st: Stmt, text: str) -> int:
    v = number(text, 0, 65535)
    if v is None:
        raise st.error(f"{st.keyword}: {text!r} is not a port number (0..65535)")
    return v


_METHODS = {"NAT": "-m", "DR": "-g", "TUN": "-i"}


def _method(st: Stmt) -> str:
    """lb_kind / lvs_method NAT|DR|TUN as ipvsadm's -m / -g / -i (a TUN
    real server tunnels with ipip, the kernel's default)."""
    m = _one(st, "NAT, DR or TUN").upper()
    if m in _METHODS:
        return _METHODS[m]
    raise st.error(f"{st.keyword}: {st.args[0]!r} is not NAT, DR or TUN")


def _no_block(st: Stmt) -> None:
    if st.block is not None:
        raise st.error(f"{st.keyword} takes no {{ }} block")


def block(st: Stmt) -> list[Stmt]:
    if st.block is None:
        raise st.error(f"{st.keyword} needs a {{ }} block")
    return st.block


# ------------------------------------------------- per-level default settings

@dataclass
class _Defaults:
    """Checker settings a virtual server or real server may give its
    checkers (None: inherited)."""
    delay_loop: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    connect_timeout: float | None = None
    alpha: bool | None = None
    virtualhost: str | None = None

    def over(self, parent: _Defaults) -> _Defaults:
        return _Defaults(**{k: (v if v is not None else getattr(parent, k))
                            for k, v in vars(self).items()})


def _default_kw(st: Stmt, d: _Defaults) -> bool:
    """The shared checker settings; True if st was one of them."""
    k = st.keyword
    if k == "delay_loop":
        d.delay_loop = _secs(st)
    elif k in ("retry", "nb_get_retry"):
        d.retry = _int(st, 0, 1 << 30)
    elif k == "delay_before_retry":
        d.delay_before_retry = _secs(st, allow_zero=True)
    elif k == "warmup":
        d.warmup = _secs(st, allow_zero=True)
    elif k == "connect_timeout":
        d.connect_timeout = _secs(st)
    elif k == "alpha":
        d.alpha = _flag(st)
    elif k == "virtualhost":
        d.virtualhost = _one(st, "a host name")
    else:
        return False
    _no_block(st)
    return True


# ------------------------------------------------------------------ checkers

def _url(st: Stmt) -> Url:
    path: str | None = None
    digest: str | None = None
    codes: set[int] | None = None
    vhost: str | None = None
    for s in block(st):
        _no_block(s)
        k = s.keyword
        if k == "path":
            path = _one(s, "a path")
        elif k == "digest":
            digest = _one(s, "an MD5 digest").lower()
            if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
                raise s.error(f"digest: {s.args[0]!r} is not an MD5 digest (32 hex digits)")
        elif k == "status_code":
            codes = set() if codes is None else codes
            if not s.args:
                raise s.error("status_code needs a code or a range (200-299)")
            for word in s.args:
                lo_t, _, hi_t = word.partition("-")
                lo = number(lo_t, 100, 599)
                hi = number(hi_t, 100, 599) if hi_t else lo
                if lo is None or hi is None or hi < lo:
                    raise s.error(f"status_code: {word!r} is not an HTTP status or range")
                codes.update(range(lo, hi + 1))
        elif k == "virtualhost":
            vhost = _one(s, "a host name")
        elif k in ("regex", "regex_no_match", "regex_options", "regex_stack",
                   "regex_min_offset", "regex_max_offset"):
            raise s.error(f"{k}: userlb's HTTP checker matches status codes and digests, "
                          "not regular expressions")
        else:
            raise s.error(f"unknown keyword {k!r} in url")
    if path is None:
        raise st.error("url needs a path")
    return Url(path, digest, frozenset(codes) if codes is not None else None, vhost)


def _checker(st: Stmt, defaults: _Defaults, vs_delay: float) -> CheckerDef:
    kind = st.keyword
    own = _Defaults()
    kw: dict[str, object] = {}
    urls: list[Url] = []
    for s in block(st):
        if _default_kw(s, own):
            continue
        k = s.keyword
        if k == "url" and kind in ("HTTP_GET", "SSL_GET"):
            urls.append(_url(s))
            continue
        _no_block(s)
        if kind == "PING_CHECK" and k in ("connect_port", "bind_port"):
            raise s.error(f"{k} in PING_CHECK: an ICMP echo has no port")
        if kind != "MISC_CHECK" and k == "connect_ip":
            kw["connect_ip"] = _addr(s, _one(s, "an address"))[1]
        elif kind != "MISC_CHECK" and k == "connect_port":
            kw["connect_port"] = _port(s, _one(s, "a port"))
        elif kind != "MISC_CHECK" and k == "bindto":
            kw["bindto"] = _addr(s, _one(s, "an address"))[1]
        elif kind != "MISC_CHECK" and k == "bind_port":
            kw["bind_port"] = _port(s, _one(s, "a port"))
        elif kind in ("HTTP_GET", "SSL_GET") and k == "http_protocol":
            if _one(s, "1.0, 1.0C or 1.1") not in ("1.0", "1.0C", "1.1"):
                raise s.error(f"http_protocol: {s.args[0]!r} is not 1.0, 1.0C or 1.1")
        elif kind == "SSL_GET" and k == "enable_sni":
            kw["enable_sni"] = _flag(s)
        elif kind == "MISC_CHECK" and k == "misc_path":
            kw["misc_path"] = _script(s)
        elif kind == "MISC_CHECK" and k == "misc_timeout":
            kw["misc_timeout"] = _secs(s)
        elif kind == "MISC_CHECK" and k == "misc_dynamic":
            kw["misc_dynamic"] = _flag(s)
        elif kind == "DNS_CHECK" and k == "type":
            t = _one(s, "a query type").upper()
            if t not in DNS_TYPES:
                raise s.error(f"type: {s.args[0]!r} is not one of {' '.join(DNS_TYPES)}")
            kw["dns_type"] = t
        elif kind == "DNS_CHECK" and k == "name":
            name = _one(s, "a domain name")
            if len(name) > 253 or any(not 0 < len(p) < 64 for p in name.rstrip(".").split(".")
                                      if name != "."):
                raise s.error(f"name: {name!r} is not a domain name")
            kw["dns_name"] = name
        elif kind == "UDP_CHECK" and k == "payload":
            kw["payload"] = _hexdata(s)
        elif kind == "UDP_CHECK" and k == "require_reply":
            kw["require_reply"] = True
            kw["reply_prefix"] = _hexdata(s) if s.args else None
        elif kind == "UDP_CHECK" and k == "min_reply_length":
            kw["min_reply_length"] = _int(s, 0, 65535)
        elif kind == "UDP_CHECK" and k == "max_reply_length":
            kw["max_reply_length"] = _int(s, 0, 65535)
        elif kind == "MISC_CHECK" and k == "user":
            if not 1 <= len(s.args) <= 2:
                raise s.error("user takes USER [GROUP]")
            kw["user"] = s.args[0]
            kw["group"] = s.args[1] if len(s.args) == 2 else None
        elif k == "log_all_failures":
            _flag(s)                         # userlb logs every state change anyway
        elif k in ("bind_if", "fwmark", "source_ip"):
            raise s.error(f"{k} in {kind} is not supported by userlb (checks go out from "
                          "the director's own addresses by its routing table)")
        else:
            raise s.error(f"unknown keyword {k!r} in {kind}")
    if kind in ("HTTP_GET", "SSL_GET") and not urls:
        raise st.error(f"{kind} needs at least one url {{ path ... }}")
    lo_len, hi_len = kw.get("min_reply_length", 0), kw.get("max_reply_length", 65535)
    if isinstance(lo_len, int) and isinstance(hi_len, int) and lo_len > hi_len:
        raise st.error("UDP_CHECK: min_reply_length is above max_reply_length")
    if kind == "MISC_CHECK" and "misc_path" not in kw:
        raise st.error("MISC_CHECK needs misc_path")
    d = own.over(defaults)
    delay = d.delay_loop if d.delay_loop is not None else vs_delay
    retry = d.retry if d.retry is not None else (
        DEFAULT_MISC_RETRY if kind == "MISC_CHECK" else DEFAULT_RETRY)
    return CheckerDef(
        kind=kind, delay_loop=delay, retry=retry,
        delay_before_retry=(d.delay_before_retry if d.delay_before_retry is not None
                            else DEFAULT_DELAY_BEFORE_RETRY),
        warmup=d.warmup if d.warmup is not None else 0.0,
        alpha=bool(d.alpha),
        connect_timeout=(d.connect_timeout if d.connect_timeout is not None
                         else DEFAULT_CONNECT_TIMEOUT),
        urls=tuple(urls), virtualhost=d.virtualhost, file=st.file, line=st.line,
        **kw)  # type: ignore[arg-type]


# -------------------------------------------------------------- real servers

@dataclass
class _RawRS:
    """A real server before the virtual server's settings are known."""
    rs: RealServer
    stmt: Stmt
    defaults: _Defaults
    inhibit: bool | None
    checker_stmts: list[Stmt]


def _real_server(st: Stmt, notes: list[str]) -> _RawRS:
    if not 1 <= len(st.args) <= 2:
        raise st.error("real_server takes IP [PORT]")
    _af, addr = _addr(st, st.args[0])
    port = _port(st, st.args[1]) if len(st.args) == 2 else None
    rs = RealServer(addr, port, file=st.file, line=st.line)
    raw = _RawRS(rs, st, _Defaults(), None, [])
    for s in block(st):
        if _default_kw(s, raw.defaults):
            continue
        k = s.keyword
        if k in CHECKERS:
            raw.checker_stmts.append(s)
            continue
        if k in REFUSED_CHECKERS:
            raise s.error(f"{k} is not implemented by userlb (it has TCP_CHECK, HTTP_GET, "
                          "SSL_GET, MISC_CHECK, DNS_CHECK, UDP_CHECK and PING_CHECK)")
        _no_block(s)
        if k == "weight":
            rs.weight = _int(s, 0, 65535)
        elif k in ("lvs_method", "lb_kind"):
            rs.method = _method(s)
        elif k == "inhibit_on_failure":
            raw.inhibit = _flag(s)
        elif k == "notify_up":
            rs.notify_up = _script(s)
        elif k == "notify_down":
            rs.notify_down = _script(s)
        elif k == "uthreshold":
            rs.u_threshold = _int(s, 0, ia.INT_MAX)
        elif k == "lthreshold":
            rs.l_threshold = _int(s, 0, ia.INT_MAX)
        elif k == "smtp_alert":
            _flag(s)
            notes.append(f"{s.file}:{s.line}: smtp_alert: userlb sends no mail")
        else:
            raise s.error(f"unknown keyword {k!r} in real_server")
    if rs.l_threshold > rs.u_threshold:
        raise st.error("lthreshold is higher than uthreshold")
    return raw


# ----------------------------------------------------------- virtual servers

def _vs_addresses(st: Stmt, groups: dict[str, Stmt]) -> tuple[list[tuple[Addr, int]], str]:
    args = st.args
    if len(args) == 2 and args[0] == "fwmark":
        raise st.error("virtual_server fwmark: fwmark services are not supported by userlb")
    if len(args) == 2 and args[0] == "group":
        g = groups.get(args[1])
        if g is None:
            raise st.error(f"virtual_server group {args[1]}: no virtual_server_group "
                           f"{args[1]} is defined")
        return _group_members(g), f"group {args[1]}"
    if len(args) != 2:
        raise st.error("virtual_server takes IP PORT (or group NAME)")
    _af, addr = _addr(st, args[0])
    return [(addr, _port(st, args[1]))], ""


def _group_members(g: Stmt) -> list[tuple[Addr, int]]:
    out: list[tuple[Addr, int]] = []
    for s in block(g):
        _no_block(s)
        if s.keyword == "fwmark":
            raise s.error("fwmark in virtual_server_group: fwmark services are not "
                          "supported by userlb")
        if len(s.words) != 2:
            raise s.error("a virtual_server_group line is IP PORT or IP-LAST PORT")
        text, port = s.words[0], _port(s, s.words[1])
        first, dash, last = text.rpartition("-") if "-" in text else (text, "", "")
        af, addr = _addr(s, first)
        if not dash:
            out.append((addr, port))
            continue
        bits = 8 if af == AF_INET else 16
        end = number(last, 0, (1 << bits) - 1) if af == AF_INET else _hex(last)
        low = (addr if isinstance(addr, int) else int.from_bytes(addr, "big")) & ((1 << bits) - 1)
        if end is None or end < low:
            raise s.error(f"{text!r}: the range's last value is below its first")
        for v in range(low, end + 1):
            if isinstance(addr, int):
                out.append(((addr & ~0xFF) | v, port))
            else:
                n = (int.from_bytes(addr, "big") & ~0xFFFF) | v
                out.append((n.to_bytes(16, "big"), port))
    if not out:
        raise g.error(f"virtual_server_group {g.args[0] if g.args else ''} is empty")
    return out


def _hex(text: str) -> int | None:
    try:
        v = int(text, 16)
    except ValueError:
        return None
    return v if 0 <= v <= 0xFFFF else None


def virtual_server(st: Stmt, groups: dict[str, Stmt], notes: list[str]) -> VirtualServer:
    addrs, gname = _vs_addresses(st, groups)
    vs = VirtualServer([], "", file=st.file, line=st.line)
    proto = IPPROTO_TCP
    vdefaults = _Defaults()
    raws: list[_RawRS] = []
    flag_stmts: list[Stmt] = []
    sched_stmt: Stmt | None = None
    gran_stmt: Stmt | None = None
    ops_stmt: Stmt | None = None
    seen: dict[str, Stmt] = {}
    for s in block(st):
        k = s.keyword
        if k == "real_server":
            raws.append(_real_server(s, notes))
            continue
        if k in CHECKERS or k in REFUSED_CHECKERS:
            raise s.error(f"{k} belongs in a real_server block")
        if _default_kw(s, vdefaults):
            continue
        _no_block(s)
        if k in ("lb_algo", "lvs_sched"):
            name = _one(s, "a scheduler name")
            try:
                ia.check_scheduler(name)
            except ConfigError as e:
                raise s.error(f"{k}: {e.message}") from None
            vs.sched, sched_stmt = name, s
        elif k in SCHED_FLAGS:
            _flag(s)
            flag_stmts.append(s)
        elif k == "hashed":
            _flag(s)
            notes.append(f"{s.file}:{s.line}: hashed: every service is hashed anyway")
        elif k == "ops":
            vs.onepacket, ops_stmt = _flag(s), s
        elif k in ("lb_kind", "lvs_method"):
            vs.method = _method(s)
        elif k == "protocol":
            p = _one(s, "TCP, UDP or SCTP").upper()
            if p not in ("TCP", "UDP", "SCTP"):
                raise s.error(f"protocol: {s.args[0]!r} is not TCP, UDP or SCTP")
            proto = {"TCP": IPPROTO_TCP, "SCTP": IPPROTO_SCTP}.get(p, IPPROTO_UDP)
        elif k == "persistence_timeout":
            vs.persistence = (DEFAULT_PERSISTENCE_TIMEOUT if not s.args
                              else _int(s, 1, MAX_TIMEOUT))
        elif k == "persistence_granularity":
            vs.granularity, gran_stmt = _one(s, "a netmask"), s
        elif k == "persistence_engine":
            raise s.error("persistence_engine: persistence engines are not supported by userlb")
        elif k == "omega":
            vs.omega = _flag(s)
        elif k == "quorum":
            vs.quorum = _int(s, 1, ia.INT_MAX)
        elif k == "hysteresis":
            vs.hysteresis = _int(s, 0, ia.INT_MAX)
        elif k == "quorum_up":
            vs.quorum_up = _script(s)
        elif k == "quorum_down":
            vs.quorum_down = _script(s)
        elif k == "sorry_server":
            if len(s.args) != 2:
                raise s.error("sorry_server takes IP PORT")
            vs.sorry_server = (_addr(s, s.args[0])[1], _port(s, s.args[1]))
        elif k == "sorry_server_inhibit":
            vs.sorry_inhibit = _flag(s)
        elif k == "sorry_server_lvs_method":
            vs.sorry_method = _method(s)
        elif k == "inhibit_on_failure":
            vs.inhibit_on_failure = _flag(s)
        elif k == "ha_suspend":
            vs.ha_suspend = _flag(s)
            notes.append(f"{s.file}:{s.line}: ha_suspend: userlb runs the checkers always "
                         "(no local VIPs to follow yet)")
        elif k == "smtp_alert":
            _flag(s)
            notes.append(f"{s.file}:{s.line}: smtp_alert: userlb sends no mail")
        elif k == "ip_family":
            if _one(s, "inet or inet6") not in ("inet", "inet6"):
                raise s.error(f"ip_family: {s.args[0]!r} is not inet or inet6")
            seen["ip_family"] = s
        else:
            raise s.error(f"unknown keyword {k!r} in virtual_server")
    # the address family must agree with ip_family, when given
    fam_st = seen.get("ip_family")
    if fam_st is not None:
        want = AF_INET if fam_st.args[0] == "inet" else AF_INET6
        if any((AF_INET if isinstance(a, int) else AF_INET6) != want for a, _p in addrs):
            raise fam_st.error(f"ip_family {fam_st.args[0]} does not match the addresses")
    vs.services = [(proto, a, p) for a, p in addrs]
    pname = PROTO_NAMES[proto].upper()
    vs.name = (f"{pname} {format_endpoint(addrs[0][0], addrs[0][1])}" if not gname
               else f"{pname} {gname}")
    vs.delay_loop = vdefaults.delay_loop if vdefaults.delay_loop is not None \
        else DEFAULT_DELAY_LOOP
    vs.alpha = bool(vdefaults.alpha)
    vs.virtualhost = vdefaults.virtualhost
    # scheduler flags: checked against the scheduler (ipvsadm's -b rules)
    for fs in flag_stmts:
        try:
            ia.parse_sched_flags(vs.sched, fs.keyword)
        except ConfigError as e:
            where = f" (lb_algo {vs.sched})" if sched_stmt is not None else " (lb_algo wlc)"
            raise fs.error(f"{fs.keyword}: {e.message}{where}") from None
        if fs.keyword not in vs.flag_names:
            vs.flag_names.append(fs.keyword)
    if vs.sorry_server is not None:
        sa, _sp = vs.sorry_server
        if any(isinstance(sa, int) != isinstance(a, int) for a, _p in addrs):
            raise st.error("sorry_server: address family differs from the virtual server's")
    # real servers: defaults resolved now that the whole block is read
    keys: dict[tuple[Addr, int | None], RealServer] = {}
    for raw in raws:
        rs = raw.rs
        k2 = (rs.addr, rs.port)
        if k2 in keys:
            raise raw.stmt.error(f"real_server {format_addr(rs.addr)} "
                                 f"{rs.port if rs.port is not None else ''} is given twice "
                                 f"(first at line {keys[k2].line})".replace("  ", " "))
        keys[k2] = rs
        rs.inhibit_on_failure = raw.inhibit if raw.inhibit is not None \
            else vs.inhibit_on_failure
        rdefaults = raw.defaults.over(vdefaults)
        rs.checkers = [_checker(c, rdefaults, vs.delay_loop) for c in raw.checker_stmts]
        vs.real_servers.append(rs)
    # the services themselves, through ipvsadm's own checks
    at = {"Zero port": st, "One-Packet": ops_stmt, "persistent mask": gran_stmt,
          "netmask": gran_stmt, "mhs": sched_stmt}
    for key in vs.services:
        try:
            service_command(vs, key)
        except ConfigError as e:
            culprit = next((v for w, v in at.items() if w in e.message and v is not None), st)
            raise culprit.error(e.message) from None
        for raw in raws:
            try:
                dest_command(vs, key, raw.rs, raw.rs.weight)
            except ConfigError as e:
                raise raw.stmt.error(f"{e.message} (service {PROTO_NAMES[key[0]].upper()} "
                                     f"{format_endpoint(key[1], key[2])})") from None
    return vs
