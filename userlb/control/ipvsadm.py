"""ipvsadm command-line syntax -> command objects (no side effects).

`parse_argv(words)` turns one ipvsadm argument vector into a `Command`;
`parse_line(text)` does the same for one line of `ipvsadm -R` input (shell-like
quoting, `#` comments, blank line -> None); `parse_rules(text)` parses a whole
rules file / -R stream into commands that carry their 1-based line numbers.
A leading word `ipvsadm` is ignored everywhere.

The parser mirrors ipvsadm 1.31 (the option table and the tokenizer, popt's
part, are in ipvsadm_options.py; the value syntax -- numbers, addresses,
netmasks, -b flag names, scheduler names -- in ipvsadm_values.py):

* exactly one command; an option given twice is an error; the ipvsadm
  table of legal command/option combinations is enforced
  ("Illegal 'weight' option with the 'add-service' command").
* values: -w 0..65535 (default 1), -x/-y 0..INT_MAX (lower > upper refused),
  -p 1..2678400 (default 360), --set values 0..2678400, -M dotted IPv4 mask
  or IPv6 prefix length 1..128; -r port defaults to the virtual port and is
  forced to the virtual port for -g/-i (as ipvsadm); forwarding default -g.
* -s defaults to wlc on -A and -E (ipvsadm always sends a complete service).
  `-b` names: flag-1, flag-2, flag-3 for any scheduler; sh-fallback/sh-port
  only with sh; mh-fallback/mh-port only with mh-like schedulers (mh, and
  userlb's mh-backport and mhs, where they alias flag-1/flag-2).
* a virtual port of 0 needs -p; -o (one-packet scheduling) is UDP only.

Refused with a clear error although ipvsadm accepts them (userlb does not
implement them): schedulers lblc lblcr dh twos, fwmark services (-f, -6),
persistence engines (--pe), tunnel options, the sync daemon
commands, host and service *names* (addresses and ports must be numeric).
`-p` with `mhs` is refused (docs/mhs-spec.md rule 1).  Forwarding methods -g/-i are
parsed here; the configuration (config.py) refuses them for now.

userlb extensions (only with -A/-E, saved by -S):

* `--mh-table-size N`: Maglev table size for mh, mh-backport and mhs; N must
  be one of the kernel's primes (userlb.sched.maglev.PRIMES; default 4093).  Stored as
  Service.options['mh_table_size'].
* `--sh-tab-bits B`: sh table of 2**B buckets, B in 4..20 (default 8), as the
  kernel's CONFIG_IP_VS_SH_TAB_BITS.  Stored as Service.options['sh_tab_bits'].
* `--sh-hash hash_32|legacy`: sh bucket hash of current kernels (hash_32,
  default, since about 4.13) or of older ones (legacy: x * 2654435761).
  Stored as Service.options['sh_hash'].

Only the syntax and ipvsadm-level validation is here; kernel-level semantics
(service exists, destination exists, ...) live in config.py.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError
from ..model import (
    AF_INET,
    DEFAULT_PERSISTENCE_TIMEOUT,
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    TUN_GRE,
    TUN_GUE,
    TUN_IPIP,
    TUN_NONE,
    TUN_TYPE_NAMES,
    Addr,
    DestKey,
    Service,
    ServiceKey,
)
from .ipvsadm_options import (
    ADD_SERVER,
    ADD_SERVICE,
    COMMAND_OPTS,
    DEL_SERVER,
    DEL_SERVICE,
    EDIT_SERVER,
    EDIT_SERVICE,
    FLUSH,
    HELP,
    LEGAL,
    LIST,
    OPTIONS,
    RESTORE,
    SAVE,
    SET,
    START_DAEMON,
    STOP_DAEMON,
    VERSION,
    ZERO,
    check_legal,
    tokens,
)
from .ipvsadm_values import (
    DEFAULT_SCHEDULER,
    MH_LIKE,
    SCHED_FLAG_BITS,
    SH_LIKE,
    bracket_hint,
    check_scheduler,
    checked,
    format_netmask,
    number,
    parse_netmask,
    parse_sched_flags,
    parse_service_address,
    sched_flag_names,
    schedulers,
)

__all__ = ["ADD_SERVER", "ADD_SERVICE", "DEL_SERVER", "DEL_SERVICE", "EDIT_SERVER",
           "EDIT_SERVICE", "FLUSH", "HELP", "LIST", "RESTORE", "SAVE", "SET", "VERSION",
           "ZERO", "MUTATING", "Command", "parse_argv", "parse_line", "parse_rules",
           "split_line", "is_program_name", "check_scheduler", "schedulers",
           "parse_sched_flags", "sched_flag_names", "parse_service_address",
           "parse_netmask", "format_netmask", "SCHED_FLAG_BITS"]

# ----------------------------------------------------------------- constants

MAX_TIMEOUT = 86400 * 31          # ipvsadm's limit for -p and --set
#: longest argument and longest -R line taken (no valid one comes near: a
#: line of garbage megabytes long is refused before it is split or quoted)
MAX_WORD = 1024
MAX_LINE = 4096
INT_MAX = 2 ** 31 - 1
#: commands that change the configuration
MUTATING = (ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE, FLUSH, ADD_SERVER,
            DEL_SERVER, EDIT_SERVER, SET)

#: (option key, what) of the features ipvsadm has and userlb refuses
_UNSUPPORTED_OPTIONS = (
    ("ipv6", "-6 (fwmark services)"), ("pe", "--pe (persistence engines)"),
    ("mcast-interface", "--mcast-interface"), ("syncid", "--syncid"),
    ("mcast-group", "--mcast-group"), ("mcast-port", "--mcast-port"),
    ("mcast-ttl", "--mcast-ttl"), ("sync-maxlen", "--sync-maxlen"))

#: the tunnel options of -a/-e and, per tunnel type, whether each is
#: compulsory '+', illegal 'x' or one of an exclusive group '1' (ipvsadm 1.31)
_TUN_OPTIONS = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
_TUN_RULES = {TUN_IPIP: "xxxx", TUN_GUE: "+111", TUN_GRE: "x11x"}

#: listing switch attribute -> ipvsadm option key
_SWITCHES = (("numeric", "numeric"), ("connections", "connection"),
             ("timeouts_list", "timeout"), ("daemon", "daemon"), ("stats", "stats"),
             ("rate", "rate"), ("thresholds", "thresholds"),
             ("persistent_conn", "persistent-conn"), ("nosort", "nosort"),
             ("exact", "exact"), ("tun_info", "tun-info"), ("health", "health"))


class Command:
    """One parsed ipvsadm invocation.  Every field ipvsadm would send to the
    kernel is filled in (defaults applied), so applying a Command needs no
    further knowledge of ipvsadm's defaults.

    Service fields (when `has_service`): protocol, af, addr, port, sched_name,
    flags (SVC_F_*), timeout (persistence, 0 unless -p), netmask (IPv4 int
    mask / IPv6 prefix length), options (userlb extensions).
    Destination fields (when `has_dest`): daddr, dport, fwd, weight,
    u_threshold, l_threshold.
    Listing switches: numeric, connections, timeouts_list, daemon, stats, rate,
    thresholds, persistent_conn, exact, nosort, tun_info.
    --set: set_timeouts = (tcp, tcpfin, udp).
    `given` is the set of ipvsadm option names present; `line` the 1-based
    line number in a rules file (or None).
    """

    __slots__ = ("cmd", "line", "given", "protocol", "af", "addr", "port",
                 "sched_name", "flags", "timeout", "netmask", "options",
                 "daddr", "dport", "daf", "fwd", "tun", "weight", "u_threshold",
                 "l_threshold", "numeric", "connections", "timeouts_list",
                 "daemon", "stats", "rate", "thresholds", "persistent_conn",
                 "exact", "nosort", "tun_info", "set_timeouts", "text", "health")

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        self.line: int | None = None
        self.text: str | None = None
        self.given: set[str] = set()
        self.protocol: int | None = None
        self.af: int | None = None
        self.addr: Addr | None = None
        self.port: int | None = None
        self.sched_name: str | None = None
        self.flags = 0
        self.timeout = 0
        self.netmask: int | None = None
        self.options: dict[str, Any] = {}
        self.daddr: Addr | None = None
        self.dport: int | None = None
        self.daf: int | None = None
        self.fwd = FWD_DROUTE
        self.tun = TUN_NONE             # (tun_type, tun_port, tun_flags), -i only
        self.weight = 1
        self.u_threshold = 0
        self.l_threshold = 0
        self.numeric = self.connections = self.timeouts_list = False
        self.daemon = self.stats = self.rate = self.thresholds = False
        self.persistent_conn = self.exact = self.nosort = self.tun_info = False
        self.health = False             # userlb: -L --health (checker state column)
        self.set_timeouts: tuple[int, int, int] | None = None

    @classmethod
    def for_service(cls, cmd: str, svc: Service) -> Command:
        """A service command carrying `svc`'s whole definition (as ipvsadm
        sends a complete service)."""
        c = cls(cmd)
        c.protocol, c.af, c.addr, c.port = svc.protocol, svc.af, svc.addr, svc.port
        c.sched_name, c.flags, c.timeout = svc.sched_name, svc.flags, svc.timeout
        c.netmask, c.options = svc.netmask, dict(svc.options)
        return c

    @property
    def has_service(self) -> bool:
        return self.addr is not None

    @property
    def has_dest(self) -> bool:
        return self.daddr is not None

    @property
    def service_key(self) -> ServiceKey:
        """(protocol, addr, port); only for a command with a service."""
        if self.protocol is None or self.addr is None or self.port is None:
            raise ConfigError(f"{self.cmd}: no service given")
        return (self.protocol, self.addr, self.port)

    @property
    def dest_key(self) -> DestKey:
        """(daddr, dport); only for a command with a real server."""
        if self.daddr is None or self.dport is None:
            raise ConfigError(f"{self.cmd}: no real server given")
        return (self.daddr, self.dport)

    @property
    def scheduler(self) -> str:
        """The scheduler name (-s; wlc when omitted, as ipvsadm sends it)."""
        return self.sched_name or DEFAULT_SCHEDULER

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__
                           if k not in ("cmd",)
                           and getattr(self, k) not in (None, False, 0, {}, set()))
        return f"Command({self.cmd!r}, {fields})"


# ------------------------------------------------------------------- parser

#: option key -> (long name given, value or None)
_Raw = dict[str, tuple[str, "str | None"]]


def parse_argv(words: Iterable[str]) -> Command:
    """Parse one ipvsadm argv (without the program name; a leading 'ipvsadm'
    is dropped) into a Command.  Raises ConfigError."""
    words = list(words)
    for w in words:
        if len(w) > MAX_WORD:
            raise ConfigError(f"argument too long ({len(w)} characters; at most {MAX_WORD})")
    if words and is_program_name(words[0]):
        words = words[1:]
    if not words:
        # bare `ipvsadm` lists the table
        return Command(LIST)

    cmd = None
    raw: _Raw = {}
    positional = []
    for kind, name, val in tokens(words):
        if kind == "cmd" and name is not None:
            if cmd is not None:
                raise ConfigError("multiple commands specified")
            cmd = COMMAND_OPTS[name][1]
            if cmd in (START_DAEMON, STOP_DAEMON):
                raise ConfigError(f"--{cmd} is not supported by userlb (no connection sync daemon)")
        elif kind == "opt" and name is not None:
            key = OPTIONS[name][2]
            if key is None:
                continue
            if key in raw:
                raise ConfigError(f"multiple '{key}' options specified")
            raw[key] = (name, val)
        elif val is not None:
            positional.append(val)
    if cmd is None:
        raise ConfigError("no command specified (one of -A -E -D -C -a -e -d -L -Z -R -S --set)")

    c = Command(cmd)
    c.given = set(raw)
    if cmd in (HELP, VERSION):
        return c
    _refuse_unsupported(cmd, raw)
    _service_fields(c, raw)
    _dest_fields(c, raw)
    for attr, key in _SWITCHES:
        setattr(c, attr, key in raw)
    if "ops" in raw:
        c.flags |= SVC_F_ONEPACKET
    if cmd == SET:
        positional = _set_timeouts(c, positional)
    if positional:
        raise ConfigError(f"unexpected argument {positional[0]}")
    # -b is interpreted once the scheduler is known (ipvsadm does the same)
    if "sched-flags" in raw:
        c.flags |= parse_sched_flags(c.sched_name, raw["sched-flags"][1] or "")
    check_legal(cmd, raw)
    if cmd in (ADD_SERVICE, EDIT_SERVICE):
        _check_service(c, raw)
    if cmd in (ADD_SERVER, EDIT_SERVER):
        _check_dest(c, raw)
    if cmd == LIST:
        _check_list(c)
    return c


def _refuse_unsupported(cmd: str, raw: _Raw) -> None:
    """Unsupported features: clear errors before anything else."""
    if "service-address" in raw:
        name = raw["service-address"][0]
        if name == "fwmark-service":
            raise ConfigError("fwmark services (-f) are not supported by userlb")
    legal = LEGAL.get(cmd) or {}
    for key, what in _UNSUPPORTED_OPTIONS:
        if key in raw and key in legal:      # else reported as illegal with this command
            raise ConfigError(f"{what} is not supported by userlb")


def _service_fields(c: Command, raw: _Raw) -> None:
    if "service-address" in raw:
        name, val = raw["service-address"]
        c.protocol = {"tcp-service": IPPROTO_TCP,
                      "sctp-service": IPPROTO_SCTP}.get(name, IPPROTO_UDP)
        c.af, c.addr, port = parse_service_address(val or "", c.protocol)
        c.port = 0 if port is None else port
        c.netmask = Service.full_netmask(c.af)
    if "scheduler" in raw:
        c.sched_name = raw["scheduler"][1]
    if "persistent" in raw:
        c.flags |= SVC_F_PERSISTENT
        val = raw["persistent"][1]
        c.timeout = DEFAULT_PERSISTENCE_TIMEOUT if val is None else checked(
            val, 1, MAX_TIMEOUT, f"invalid timeout value `{val}' specified")
    if "netmask" in raw:
        c.netmask = parse_netmask(raw["netmask"][1] or "", c.af or AF_INET)


def _dest_fields(c: Command, raw: _Raw) -> None:
    if "real-server" in raw:
        val = raw["real-server"][1] or ""
        c.daf, c.daddr, dport = parse_service_address(val, c.protocol, "real server")
        c.dport = c.port if dport is None else dport
    if "forwarding-method" in raw:
        c.fwd = {"masquerading": FWD_MASQ, "ipip": FWD_TUNNEL,
                 "gatewaying": FWD_DROUTE}[raw["forwarding-method"][0]]
    ttype, tport, tflags = TUN_NONE
    if "tun-type" in raw:
        val = raw["tun-type"][1] or ""
        if val not in TUN_TYPE_NAMES:
            raise ConfigError("illegal tunnel type specified")
        ttype = TUN_TYPE_NAMES.index(val)
    if "tun-port" in raw:
        tport = checked(raw["tun-port"][1], 1, 65535, "illegal tunnel port specified")
    if "tun-csum" in raw:
        tflags |= TUN_F_CSUM
    if "tun-remcsum" in raw:
        tflags |= TUN_F_REMCSUM
    c.tun = (ttype, tport, tflags)
    if "weight" in raw:
        # ipvsadm 1.31 takes 0..INT_MAX (the kernel's weight is an int)
        c.weight = checked(raw["weight"][1], 0, INT_MAX, "illegal weight specified")
    if "u-threshold" in raw:
        c.u_threshold = checked(raw["u-threshold"][1], 0, INT_MAX,
                                 "illegal u_threshold specified")
    if "l-threshold" in raw:
        c.l_threshold = checked(raw["l-threshold"][1], 0, INT_MAX,
                                 "illegal l_threshold specified")


def _set_timeouts(c: Command, positional: list[str]) -> list[str]:
    """--set tcp tcpfin udp; returns the positional words left."""
    if len(positional) < 3:
        raise ConfigError("--set option requires 3 timeout values")
    tcp, fin, udp = (checked(p, 0, MAX_TIMEOUT, f"invalid timeout value `{p}' specified")
                     for p in positional[:3])
    c.set_timeouts = (tcp, fin, udp)
    return positional[3:]


def _check_service(c: Command, raw: _Raw) -> None:
    """-A / -E: what ipvsadm checks, and the userlb options."""
    if not c.port and not (c.flags & SVC_F_PERSISTENT):
        raise ConfigError("Zero port specified for non-persistent service"
                          + bracket_hint(raw.get("service-address", ("", None))[1]))
    if c.flags & SVC_F_ONEPACKET and c.protocol != IPPROTO_UDP:
        raise ConfigError("One-Packet Scheduling is only for UDP virtual services")
    if not c.sched_name:
        c.sched_name = DEFAULT_SCHEDULER
    check_scheduler(c.sched_name)
    if c.sched_name == "mhs" and c.flags & SVC_F_PERSISTENT:
        raise ConfigError("-p (persistence) cannot be used with the mhs scheduler: "
                          "an mhs service is stateless (docs/mhs-spec.md rule 1)")
    from ..sched import maglev, mh, sh
    if "mh-table-size" in raw:
        text = raw["mh-table-size"][1]
        v = number(text, 1, 1 << 31)
        if v is None or not _accepted(mh.validate_options, {mh.OPT_TABLE_SIZE: v}):
            raise ConfigError(f"illegal --mh-table-size {text!r}: "
                              f"must be one of {' '.join(map(str, maglev.PRIMES))}")
        _only_for(c, MH_LIKE, "--mh-table-size", f"the {', '.join(MH_LIKE)} schedulers")
        c.options[mh.OPT_TABLE_SIZE] = v
    if "sh-tab-bits" in raw:
        text = raw["sh-tab-bits"][1]
        v = number(text, 1, 1 << 31)
        if v is None or not _accepted(sh.validate_options, {sh.OPT_TAB_BITS: v}):
            raise ConfigError(f"illegal --sh-tab-bits {text!r}: must be 4..20")
        _only_for(c, SH_LIKE, "--sh-tab-bits", "the sh scheduler")
        c.options[sh.OPT_TAB_BITS] = v
    if "sh-hash" in raw:
        text = raw["sh-hash"][1]
        if text is None or not _accepted(sh.validate_options, {sh.OPT_HASH: text}):
            raise ConfigError(f"illegal --sh-hash {text!r}: must be one of "
                              f"{' '.join(sh.HASH_VARIANTS)}")
        _only_for(c, SH_LIKE, "--sh-hash", "the sh scheduler")
        c.options[sh.OPT_HASH] = text


def _accepted(validate: Callable[[dict[str, Any]], object], options: dict[str, Any]) -> bool:
    """Whether the scheduler module's own validation accepts `options`."""
    try:
        validate(options)
    except ConfigError:
        return False
    return True


def _only_for(c: Command, family: tuple[str, ...], option: str, which: str) -> None:
    if c.sched_name not in family:
        raise ConfigError(f"{option} only applies to {which}")


def _check_dest(c: Command, raw: _Raw) -> None:
    if c.fwd in (FWD_TUNNEL, FWD_DROUTE):
        c.dport = c.port          # ipvsadm forces the virtual port
    if c.daf != c.af and c.fwd != FWD_TUNNEL:
        hint = (bracket_hint(raw.get("real-server", ("", None))[1])
                or bracket_hint(raw.get("service-address", ("", None))[1]))
        raise ConfigError("Different address family is allowed only for tunneling servers"
                          + hint)
    given = [k for k in ("tun-type",) + _TUN_OPTIONS if k in raw]
    if given and c.fwd != FWD_TUNNEL:
        raise ConfigError("Tunnel options conflict with forward method")
    ttype = c.tun[0]
    name = TUN_TYPE_NAMES[ttype]
    last = None
    for opt, rule in zip(_TUN_OPTIONS, _TUN_RULES[ttype], strict=True):
        if opt not in raw:
            if rule == "+":
                raise ConfigError(f"You need to supply the '{opt}' option for the "
                                  f"'{name}' tunnel type")
        elif rule == "x":
            raise ConfigError(f"Illegal '{opt}' option with the '{name}' tunnel type")
        elif rule == "1":
            if last is not None:
                raise ConfigError(f"The option '{opt}' conflicts with the '{last}' option "
                                  f"in the '{name}' tunnel type")
            last = opt
    # -y above -x is refused by the director (as the kernel does), not here


def _check_list(c: Command) -> None:
    conflict = ((c.connections or c.timeouts_list or c.daemon)
                and (c.stats or c.rate or c.thresholds)) or \
               ((c.timeouts_list or c.daemon) and c.persistent_conn)
    if conflict:
        raise ConfigError("options conflicts in the list command")
    if c.daemon:
        raise ConfigError("--daemon is not supported by userlb (no connection sync daemon)")


def is_program_name(word: str) -> bool:
    """`ipvsadm`, `/sbin/ipvsadm` (a leading program name is ignored)."""
    return word == "ipvsadm" or word.endswith("/ipvsadm")


def split_line(text: str) -> list[str]:
    """Words of one -R line (shell-like quoting; '#' starts a comment)."""
    try:
        return shlex.split(text, comments=True)
    except ValueError as e:
        raise ConfigError(f"cannot split line: {e}") from None


def parse_line(text: str, line: int | None = None) -> Command | None:
    """One line of -R input -> Command, or None for a blank/comment line."""
    try:
        if len(text) > MAX_LINE:
            raise ConfigError(f"line too long ({len(text)} characters; at most {MAX_LINE})")
        words = split_line(text)
        if words and is_program_name(words[0]):
            words = words[1:]
        if not words:
            return None
        c = parse_argv(words)
        if c.cmd == RESTORE:
            raise ConfigError("-R cannot be used inside -R input")
    except ConfigError as e:
        raise ConfigError(e.message, line=line) from None
    c.line = line
    c.text = text.strip()
    return c


def parse_rules(text: str) -> list[Command]:
    """A whole rules file / -R stream -> list of Commands (line numbers set).
    Raises ConfigError naming the first bad line."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        c = parse_line(raw, line=n)
        if c is not None:
            out.append(c)
    return out
