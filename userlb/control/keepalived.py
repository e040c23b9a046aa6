"""keepalived.conf's `virtual_server` part -> userlb's configuration.

`load(path)` reads a keepalived.conf (syntax: keepalived_parse.py) and
returns a `KeepalivedConf`: its virtual servers (`VirtualServer`), each with
its IPVS services (one, or one per member of a `virtual_server_group`), its
real servers (`RealServer`) and their health checkers (`CheckerDef`).  The
ipvsadm commands that configure a service are built as ipvsadm argv and
parsed by control/ipvsadm.py, so a keepalived.conf yields exactly the
Command objects the equivalent ipvsadm lines yield (`service_command`,
`dest_command`; keepalived_apply.py turns checker states into them).

Keywords, with keepalived.conf(5)'s meaning (docs/keepalived.md lists them):

* top level: `virtual_server IP PORT`, `virtual_server group NAME`,
  `virtual_server_group NAME`; the blocks keepalived's other parts read
  (`global_defs`, every `vrrp_*` and `static_*` block, `track_*`, `bfd_*`,
  ...) are skipped on purpose: real keepalived does those.  Any other
  keyword is an error, as `keepalived -t` reports it.
* `virtual_server fwmark N`, persistence
  engines, a regex in `url`, the checkers userlb does not have
  (`SMTP_CHECK`, `FILE_CHECK`, `BFD_CHECK`) are refused, one clear message naming the line.
* Accepted with a note (what userlb does instead; `notes` lists them, `userlb
  check-config` prints them): `ha_suspend` (checkers always run: userlb has
  no local VIPs yet), `smtp_alert` (no mail), `hashed` (the kernel sets it
  on every service anyway).

Every error is a KeepalivedError naming the file and the line; a file with
one error is refused whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model import (
    PROTO_NAMES,
    PROTO_SWITCH,
    Addr,
    ServiceKey,
    format_endpoint,
)
from . import ipvsadm as ia
from .ipvsadm_values import number
from .keepalived_parse import KeepalivedError, Stmt, read_config

__all__ = ["KeepalivedError", "KeepalivedConf", "VirtualServer", "RealServer", "CheckerDef",
           "Url", "load", "load_text", "service_command", "dest_command"]

# keepalived.conf(5) defaults
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RETRY = 1
DEFAULT_MISC_RETRY = 0
DEFAULT_DELAY_BEFORE_RETRY = 1.0
DEFAULT_QUORUM = 1
MAX_TIMEOUT = ia.MAX_TIMEOUT          # ipvsadm's bound for -p (31 days)
MAX_SECONDS = 86400.0 * 31

CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK", "UDP_CHECK",
            "PING_CHECK")
#: DNS_CHECK `type` names -> query type numbers
DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
REFUSED_CHECKERS = ("SMTP_CHECK", "FILE_CHECK", "BFD_CHECK")
#: top-level keywords of keepalived's other parts: skipped on purpose
SKIPPED_TOP = ("global_defs", "linkbeat_interfaces", "track_file", "track_process",
               "garp_group", "net_namespace", "net_namespace_ipvs", "namespace_with_ipsets",
               "instance", "use_pid_dir", "child_wait_time", "local_address_group",
               "bfd_instance")
SKIPPED_PREFIXES = ("vrrp_", "static_", "track_", "bfd_")
SCHED_FLAGS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port",
               "mh-fallback")


@dataclass(frozen=True)
class Url:
    path: str
    digest: str | None = None              # lower-case MD5 hex of the body
    status_codes: frozenset[int] | None = None   # None: any 2xx
    virtualhost: str | None = None


@dataclass(frozen=True)
class CheckerDef:
    """One health checker of a real server, every default resolved."""
    kind: str                               # one of CHECKERS
    delay_loop: float
    retry: int
    delay_before_retry: float
    warmup: float
    alpha: bool
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    connect_ip: Addr | None = None          # None: the real server's address
    connect_port: int | None = None         # None: the real server's port
    bindto: Addr | None = None
    bind_port: int | None = None
    urls: tuple[Url, ...] = ()
    virtualhost: str | None = None
    enable_sni: bool = False
    misc_path: str | None = None
    misc_timeout: float | None = None       # None: delay_loop
    misc_dynamic: bool = False
    dns_type: str = "A"
    dns_name: str = "."
    user: str | None = None
    group: str | None = None
    payload: bytes = b""                    # UDP_CHECK: the datagram sent
    require_reply: bool = False             # UDP_CHECK: up only with an answer ...
    reply_prefix: bytes | None = None       # ... starting with these bytes
    min_reply_length: int = 0
    max_reply_length: int | None = None
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def describe(self) -> str:
        if self.kind == "MISC_CHECK":
            return f"MISC_CHECK {self.misc_path}"
        port = f" port {self.connect_port}" if self.connect_port is not None else ""
        urls = "".join(f" {u.path}" for u in self.urls)
        dns = f" {self.dns_type} {self.dns_name}" if self.kind == "DNS_CHECK" else ""
        return f"{self.kind}{port}{urls}{dns}"


@dataclass
class RealServer:
    addr: Addr
    port: int | None                        # None: the service's port
    weight: int = 1
    inhibit_on_failure: bool = False
    notify_up: str | None = None
    notify_down: str | None = None
    u_threshold: int = 0
    l_threshold: int = 0
    method: str = ""                        # -m / -g / -i of lb_kind; "": the virtual server's
    checkers: list[CheckerDef] = field(default_factory=list)
    file: str = ""
    line: int = 0

    def port_for(self, vport: int) -> int:
        return vport if self.port is None else self.port

    def name(self, vport: int) -> str:
        return format_endpoint(self.addr, self.port_for(vport))

    def signature(self) -> tuple[object, ...]:
        """What must be equal for a reload to keep this server's checker state."""
        return (self.addr, self.port, tuple(self.checkers))


@dataclass
class VirtualServer:
    """One `virtual_server` block: its IPVS services share everything else."""
    services: list[ServiceKey]
    name: str                               # 'TCP 10.0.0.1:80' or 'group NAME'
    sched: str = "wlc"
    flag_names: list[str] = field(default_factory=list)
    onepacket: bool = False
    persistence: int = 0                    # seconds; 0 = none
    granularity: str | None = None          # -M text
    delay_loop: float = DEFAULT_DELAY_LOOP
    alpha: bool = False
    omega: bool = False
    quorum: int = DEFAULT_QUORUM
    hysteresis: int = 0
    quorum_up: str | None = None
    quorum_down: str | None = None
    sorry_server: tuple[Addr, int] | None = None
    sorry_inhibit: bool = False
    method: str = "-m"                      # lb_kind NAT / DR / TUN as -m / -g / -i
    sorry_method: str = ""                  # sorry_server_lvs_method; "": `method`
    inhibit_on_failure: bool = False
    ha_suspend: bool = False
    virtualhost: str | None = None
    real_servers: list[RealServer] = field(default_factory=list)
    file: str = ""
    line: int = 0


@dataclass
class KeepalivedConf:
    path: str
    virtual_servers: list[VirtualServer] = field(default_factory=list)
    #: "file:line: keyword: what userlb does instead" (accepted, not done as keepalived)
    notes: list[str] = field(default_factory=list)
    #: "file:line: block" of the skipped blocks (VRRP, global_defs, ...)
    skipped: list[str] = field(default_factory=list)
    #: global_defs' `lvs_timeouts` as ipvsadm --set (tcp, tcpfin, udp; 0 = unchanged)
    timeouts: tuple[int, int, int] | None = None

    def all_addresses(self) -> list[Addr]:
        """Every real server and sorry server address (their replies must
        reach the TUN device whatever their health)."""
        out: list[Addr] = []
        for vs in self.virtual_servers:
            addrs = [rs.addr for rs in vs.real_servers]
            if vs.sorry_server is not None:
                addrs.append(vs.sorry_server[0])
            for a in addrs:
                if a not in out:
                    out.append(a)
        return out



# ----------------------------------------------------- ipvsadm commands of it

def service_argv(vs: VirtualServer, key: ServiceKey) -> list[str]:
    proto, addr, port = key
    argv = ["-A", PROTO_SWITCH.get(proto, "-u"), format_endpoint(addr, port),
            "-s", vs.sched]
    if vs.flag_names:
        argv += ["-b", ",".join(vs.flag_names)]
    if vs.persistence:
        argv += ["-p", str(vs.persistence)]
        if vs.granularity is not None:
            argv += ["-M", vs.granularity]
    if vs.onepacket:
        argv.append("-o")
    return argv


def service_command(vs: VirtualServer, key: ServiceKey) -> ia.Command:
    """The -A command of one service of `vs` (what the ipvsadm line gives)."""
    return ia.parse_argv(service_argv(vs, key))


def dest_argv(key: ServiceKey, addr: Addr, port: int, weight: int, u: int = 0, lo: int = 0,
              edit: bool = False, method: str = "-m") -> list[str]:
    proto, vaddr, vport = key
    argv = ["-e" if edit else "-a", PROTO_SWITCH.get(proto, "-u"),
            format_endpoint(vaddr, vport), "-r", format_endpoint(addr, port), method,
            "-w", str(weight)]
    if u or lo:
        argv += ["-x", str(u), "-y", str(lo)]
    return argv


def dest_command(vs: VirtualServer, key: ServiceKey, rs: RealServer, weight: int,
                 edit: bool = False) -> ia.Command:
    return ia.parse_argv(dest_argv(key, rs.addr, rs.port_for(key[2]), weight,
                                   rs.u_threshold, rs.l_threshold, edit,
                                   rs.method or vs.method))


# ---------------------------------------------------------------- the file

def interpret(stmts: list[Stmt], path: str) -> KeepalivedConf:
    from .keepalived_blocks import block, virtual_server
    conf = KeepalivedConf(path)
    groups: dict[str, Stmt] = {}
    for st in stmts:
        if st.keyword == "virtual_server_group":
            if len(st.args) != 1:
                raise st.error("virtual_server_group takes a NAME")
            if st.args[0] in groups:
                g = groups[st.args[0]]
                raise st.error(f"virtual_server_group {st.args[0]} is defined twice "
                               f"(first at {g.file}:{g.line})")
            block(st)
            groups[st.args[0]] = st
    owner: dict[ServiceKey, VirtualServer] = {}
    for st in stmts:
        k = st.keyword
        if k == "virtual_server":
            vs = virtual_server(st, groups, conf.notes)
            for key in vs.services:
                if key in owner:
                    o = owner[key]
                    raise st.error(f"{PROTO_NAMES[key[0]].upper()} "
                                   f"{format_endpoint(key[1], key[2])} is defined twice "
                                   f"(first at {o.file}:{o.line})")
                owner[key] = vs
            conf.virtual_servers.append(vs)
        elif k == "virtual_server_group":
            continue
        elif k == "global_defs":
            _global_defs(st, conf)
            conf.skipped.append(f"{st.file}:{st.line}: {k} (but lvs_timeouts)")
        elif k in SKIPPED_TOP or k.startswith(SKIPPED_PREFIXES):
            conf.skipped.append(f"{st.file}:{st.line}: {k}")
        elif k in ("real_server",) + CHECKERS:
            raise st.error(f"{k} belongs in a virtual_server block")
        else:
            raise st.error(f"unknown keyword {k!r}")
    return conf


def _global_defs(st: Stmt, conf: KeepalivedConf) -> None:
    """global_defs is keepalived's, but for the IPVS settings in it:
    `lvs_timeouts [tcp N] [tcpfin N] [udp N]` (ipvsadm --set); the sync
    daemon is noted as not done."""
    for s in st.block or []:
        if s.keyword == "lvs_timeouts":
            vals = {"tcp": 0, "tcpfin": 0, "udp": 0}
            words = s.args
            if not words or len(words) % 2:
                raise s.error("lvs_timeouts takes tcp N, tcpfin N and/or udp N")
            for name, val in zip(words[::2], words[1::2], strict=True):
                n = number(val, 1, MAX_TIMEOUT)
                if name not in vals or n is None:
                    raise s.error(f"lvs_timeouts: {name} {val}: expected tcp, tcpfin or udp "
                                  f"and seconds 1..{MAX_TIMEOUT}")
                vals[name] = n
            conf.timeouts = (vals["tcp"], vals["tcpfin"], vals["udp"])
        elif s.keyword.startswith("lvs_sync_daemon"):
            conf.notes.append(f"{s.file}:{s.line}: {s.keyword}: userlb has no connection "
                              "sync daemon")


def load(path: str) -> KeepalivedConf:
    """Read and interpret keepalived.conf `path`.  Raises KeepalivedError."""
    return interpret(read_config(path), path)


def load_text(text: str, name: str = "<text>") -> KeepalivedConf:
    from .keepalived_parse import parse_text
    return interpret(parse_text(text, name), name)

