"""ipvsadm command-line syntax -> command objects (no side effects).

`parse_argv(words)` turns one ipvsadm argument vector into a `Command`;
`parse_line(text)` does the same for one line of `ipvsadm -R` input (shell-like
quoting, `#` comments, blank line -> None); `parse_rules(text)` parses a whole
rules file / -R stream into commands that carry their 1-based line numbers.
A leading word `ipvsadm` is ignored everywhere.

The parser mirrors ipvsadm 1.31 (popt option processing):

* short options can be bundled (`-Ln`, `-At`), an argument can be glued
  (`-w5`) or separate (`-w 5`); long options take `--opt=value` or
  `--opt value`; `-p` takes an optional timeout (the next word, unless it
  starts with `-`).
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
SCTP services, persistence engines (--pe), tunnel options, the sync daemon
commands, host and service *names* (addresses and ports must be numeric).
`-p` with `mhs` is refused (MHS.md rule 1).  Forwarding methods -g/-i are
parsed here; the configuration (config.py) refuses them for now.

userlb extensions (only with -A/-E, saved by -S):

* `--mh-table-size N`: Maglev table size for mh, mh-backport and mhs; N must
  be one of the kernel's primes (userlb.sched.maglev.PRIMES: 251 509 1021 2039
  4093 8191 16381 32749 65521 131071; default 4093).  Stored as
  Service.options['mh_table_size'].
* `--sh-tab-bits B`: sh table of 2**B buckets, B in 4..20 (default 8), as the
  kernel's CONFIG_IP_VS_SH_TAB_BITS.  Stored as Service.options['sh_tab_bits'].
* `--sh-hash hash_32|legacy`: sh bucket hash of current kernels (hash_32,
  default, since about 4.13) or of older ones (legacy: x * 2654435761).
  Stored as Service.options['sh_hash'].

Only the syntax and ipvsadm-level validation is here; kernel-level semantics
(service exists, destination exists, ...) live in config.py.
"""
import re
import shlex

from ..errors import ConfigError
from ..model import (AF_INET, AF_INET6, DEFAULT_PERSISTENCE_TIMEOUT, FWD_DROUTE,
                     FWD_MASQ, FWD_TUNNEL, IPPROTO_TCP, IPPROTO_UDP,
                     SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1,
                     SVC_F_SCHED2, SVC_F_SCHED3, parse_addr)

# ----------------------------------------------------------------- constants

MAX_TIMEOUT = 86400 * 31          # ipvsadm's limit for -p and --set
INT_MAX = 2 ** 31 - 1
DEFAULT_SCHEDULER = "wlc"

#: schedulers userlb implements (the registry names)
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "mh",
              "mh-backport", "mhs")
#: kernel schedulers userlb knows but refuses
UNSUPPORTED_SCHEDULERS = ("lblc", "lblcr", "dh", "twos")
#: schedulers that accept the mh-* flag names
MH_LIKE = ("mh", "mh-backport", "mhs")
SH_LIKE = ("sh",)

SCHED_FLAG_BITS = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

MH_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
SH_TAB_BITS_RANGE = (4, 20)
SH_HASH_VARIANTS = ("hash_32", "legacy")

# commands (the ipvsadm long names)
ADD_SERVICE = "add-service"
EDIT_SERVICE = "edit-service"
DEL_SERVICE = "delete-service"
FLUSH = "flush"
LIST = "list"
ADD_SERVER = "add-server"
DEL_SERVER = "delete-server"
EDIT_SERVER = "edit-server"
SET = "set"
RESTORE = "restore"
SAVE = "save"
ZERO = "zero"
HELP = "help"
VERSION = "version"

#: commands that change the configuration
MUTATING = (ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE, FLUSH, ADD_SERVER,
            DEL_SERVER, EDIT_SERVER, SET)


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
                 "daddr", "dport", "daf", "fwd", "weight", "u_threshold",
                 "l_threshold", "numeric", "connections", "timeouts_list",
                 "daemon", "stats", "rate", "thresholds", "persistent_conn",
                 "exact", "nosort", "tun_info", "set_timeouts", "text")

    def __init__(self, cmd):
        self.cmd = cmd
        self.line = None
        self.text = None
        self.given = set()
        self.protocol = self.af = self.addr = self.port = None
        self.sched_name = None
        self.flags = 0
        self.timeout = 0
        self.netmask = None
        self.options = {}
        self.daddr = self.dport = self.daf = None
        self.fwd = FWD_DROUTE
        self.weight = 1
        self.u_threshold = 0
        self.l_threshold = 0
        self.numeric = self.connections = self.timeouts_list = False
        self.daemon = self.stats = self.rate = self.thresholds = False
        self.persistent_conn = self.exact = self.nosort = self.tun_info = False
        self.set_timeouts = None

    @property
    def has_service(self):
        return self.addr is not None

    @property
    def has_dest(self):
        return self.daddr is not None

    @property
    def service_key(self):
        return (self.protocol, self.addr, self.port)

    def __repr__(self):
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__
                           if k not in ("cmd",) and getattr(self, k) not in (None, False, 0, {}, set()))
        return f"Command({self.cmd!r}, {fields})"


# ------------------------------------------------------------- option table
# name -> (short letter or None, argument: 0 none, 1 required, 2 optional, key)
# key = the ipvsadm option name used in error messages and the legality table.

_COMMAND_OPTS = {
    "add-service": ("A", ADD_SERVICE), "edit-service": ("E", EDIT_SERVICE),
    "delete-service": ("D", DEL_SERVICE), "clear": ("C", FLUSH),
    "list": ("L", LIST), "zero": ("Z", ZERO), "add-server": ("a", ADD_SERVER),
    "edit-server": ("e", EDIT_SERVER), "delete-server": ("d", DEL_SERVER),
    "set": (None, SET), "help": ("h", HELP), "version": ("v", VERSION),
    "restore": ("R", RESTORE), "save": ("S", SAVE),
    "start-daemon": (None, "start-daemon"), "stop-daemon": (None, "stop-daemon"),
}
_CMD_TAKES_ARG = {"start-daemon", "stop-daemon"}

# long name -> (short, arg kind, option key)
_OPTIONS = {
    "tcp-service": ("t", 1, "service-address"),
    "udp-service": ("u", 1, "service-address"),
    "sctp-service": (None, 1, "service-address"),
    "fwmark-service": ("f", 1, "service-address"),
    "scheduler": ("s", 1, "scheduler"),
    "persistent": ("p", 2, "persistent"),
    "netmask": ("M", 1, "netmask"),
    "real-server": ("r", 1, "real-server"),
    "masquerading": ("m", 0, "forwarding-method"),
    "ipip": ("i", 0, "forwarding-method"),
    "gatewaying": ("g", 0, "forwarding-method"),
    "weight": ("w", 1, "weight"),
    "u-threshold": ("x", 1, "u-threshold"),
    "l-threshold": ("y", 1, "l-threshold"),
    "numeric": ("n", 0, "numeric"),
    "connection": ("c", 0, "connection"),
    "mcast-interface": (None, 1, "mcast-interface"),
    "syncid": (None, 1, "syncid"),
    "timeout": (None, 0, "timeout"),
    "daemon": (None, 0, "daemon"),
    "stats": (None, 0, "stats"),
    "rate": (None, 0, "rate"),
    "thresholds": (None, 0, "thresholds"),
    "persistent-conn": (None, 0, "persistent-conn"),
    "nosort": (None, 0, "nosort"),
    "sort": (None, 0, None),            # no-op, for compatibility
    "exact": ("X", 0, "exact"),
    "ipv6": ("6", 0, "ipv6"),
    "ops": ("o", 0, "ops"),
    "pe": (None, 1, "pe"),
    "sched-flags": ("b", 1, "sched-flags"),
    "mcast-group": (None, 1, "mcast-group"),
    "mcast-port": (None, 1, "mcast-port"),
    "mcast-ttl": (None, 1, "mcast-ttl"),
    "sync-maxlen": (None, 1, "sync-maxlen"),
    "tun-info": (None, 0, "tun-info"),
    "tun-type": (None, 1, "tun-type"),
    "tun-port": (None, 1, "tun-port"),
    "tun-nocsum": (None, 0, "tun-nocsum"),
    "tun-csum": (None, 0, "tun-csum"),
    "tun-remcsum": (None, 0, "tun-remcsum"),
    # userlb extensions
    "mh-table-size": (None, 1, "mh-table-size"),
    "sh-tab-bits": (None, 1, "sh-tab-bits"),
    "sh-hash": (None, 1, "sh-hash"),
}
_SHORT = {}
for _long, (_s, _cmd) in _COMMAND_OPTS.items():
    if _s:
        _SHORT[_s] = ("cmd", _long)
_SHORT["l"] = ("cmd", "list")
for _long, (_s, _k, _key) in _OPTIONS.items():
    if _s:
        _SHORT[_s] = ("opt", _long)

# Legal options per command ('+' required, ' ' optional, '1' at most one of
# them).  Anything not listed is illegal with that command.
_SVC_OPTS = {"scheduler": " ", "persistent": " ", "netmask": " ", "ops": " ",
             "pe": " ", "sched-flags": " ", "mh-table-size": " ", "sh-tab-bits": " ",
             "sh-hash": " "}
_DEST_OPTS = {"forwarding-method": " ", "weight": " ", "u-threshold": " ",
              "l-threshold": " ", "tun-type": " ", "tun-port": " ",
              "tun-nocsum": " ", "tun-csum": " ", "tun-remcsum": " "}
_LEGAL = {
    ADD_SERVICE: {"service-address": "+", **_SVC_OPTS},
    EDIT_SERVICE: {"service-address": "+", **_SVC_OPTS},
    DEL_SERVICE: {"service-address": "+"},
    FLUSH: {},
    LIST: {"numeric": " ", "connection": "1", "service-address": "1",
           "timeout": "1", "daemon": "1", "stats": " ", "rate": " ",
           "thresholds": " ", "persistent-conn": " ", "nosort": " ",
           "syncid": " ", "exact": " ", "tun-info": " "},
    ADD_SERVER: {"service-address": "+", "real-server": "+", **_DEST_OPTS},
    DEL_SERVER: {"service-address": "+", "real-server": "+"},
    EDIT_SERVER: {"service-address": "+", "real-server": "+", **_DEST_OPTS},
    SET: {},
    RESTORE: {},
    SAVE: {"numeric": " "},
    ZERO: {"service-address": " "},
    HELP: None, VERSION: None,          # anything goes, like ipvsadm (exits first)
}
# ipvsadm's column order, used to report the first offending option the way
# ipvsadm does.
_OPT_ORDER = ("numeric", "connection", "service-address", "scheduler",
              "persistent", "netmask", "real-server", "forwarding-method",
              "weight", "u-threshold", "l-threshold", "mcast-interface",
              "timeout", "daemon", "stats", "rate", "thresholds",
              "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
              "sched-flags", "mcast-group", "mcast-port", "mcast-ttl",
              "sync-maxlen", "tun-info", "tun-type", "tun-port", "tun-nocsum",
              "tun-csum", "tun-remcsum", "mh-table-size", "sh-tab-bits", "sh-hash",
              "ipv6")


# ------------------------------------------------------------------ helpers

_INT_RE = re.compile(r"[+-]?[0-9]+")


def _number(text, lo, hi):
    """ipvsadm's string_to_number: a decimal integer within [lo, hi] or None."""
    if text is None or not _INT_RE.fullmatch(text):
        return None
    try:
        n = int(text)
    except ValueError:            # more digits than int() takes from a string
        return None
    return n if lo <= n <= hi else None


def _port(text, protocol):
    n = _number(text, 0, 65535)
    if n is not None:
        return n
    raise ConfigError(f"port {text!r} is not a number (userlb does not resolve service names)")


def parse_service_address(text, protocol, what="virtual server"):
    """ipvsadm's parse_service: 'host[:port]' / '[v6]:port' / bare IPv6.
    -> (af, addr, port or None)."""
    illegal = f"illegal {what} address[:port] specified"
    if not text or text.isdigit():
        raise ConfigError(illegal)
    port_text = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ConfigError(illegal)
        host, port_text = text[1:end], text[end + 2:]
        try:
            af, addr = parse_addr(host)
        except ConfigError:
            raise ConfigError(illegal) from None
        if af != AF_INET6:
            raise ConfigError(illegal)
    else:
        af = None
        if text.count(":") > 1:             # a bare IPv6 address, no port
            try:
                af, addr = parse_addr(text)
            except ConfigError:
                raise ConfigError(illegal) from None
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                host, port_text = text, None
            try:
                af, addr = parse_addr(host)
            except ConfigError:
                raise ConfigError(f"{illegal} (userlb does not resolve host names: {host!r})") from None
            if af != AF_INET:
                raise ConfigError(illegal)
    port = None
    if port_text is not None:
        port = _number(port_text, 0, 65535)
        if port is None:
            raise ConfigError(f"{illegal} (port {port_text!r}; userlb does not resolve service names)")
    return af, addr, port


def parse_netmask(text, af):
    """-M: IPv4 dotted mask -> int; IPv6 prefix length 1..128 -> int."""
    if af == AF_INET6:
        n = _number(text, 1, 128)
        if n is None:
            raise ConfigError("illegal ipv6 netmask specified")
        return n
    try:
        maf, mask = parse_addr(text)
    except ConfigError:
        maf = None
    if maf != AF_INET:
        raise ConfigError("illegal virtual server persistent mask specified")
    return mask


def format_netmask(mask, af):
    if af == AF_INET6:
        return str(mask)
    return ".".join(str((mask >> s) & 0xFF) for s in (24, 16, 8, 0))


def parse_sched_flags(sched, text):
    """-b: comma-separated flag names -> SVC_F_SCHED* bits (ipvsadm rules,
    mh-* also accepted for userlb's mh-backport and mhs)."""
    sched = sched or DEFAULT_SCHEDULER
    flags = 0
    names = [n for n in text.split(",") if n] or [text]
    for name in names:
        if name in ("flag-1", "flag-2", "flag-3"):
            flags |= (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)[int(name[-1]) - 1]
        elif name in ("sh-fallback", "sh-port"):
            if sched not in SH_LIKE:
                raise ConfigError(f"incompatible scheduler flag `{name}'")
            flags |= SVC_F_SCHED1 if name == "sh-fallback" else SVC_F_SCHED2
        elif name in ("mh-fallback", "mh-port"):
            if sched not in MH_LIKE:
                raise ConfigError(f"incompatible scheduler flag `{name}'")
            flags |= SVC_F_SCHED1 if name == "mh-fallback" else SVC_F_SCHED2
        else:
            raise ConfigError(f"invalid scheduler flag `{name}'")
    return flags


def sched_flag_names(sched, flags):
    """SVC_F_SCHED* bits -> the -b names in ipvsadm's order: fallback, port
    for sh / mh-like schedulers, flag-1,2,3 otherwise.  (ipvsadm drops flag-3
    for sh and mh when printing; userlb prints it so that -S | -R round-trips.)"""
    out = []
    if sched in SH_LIKE or sched in MH_LIKE:
        p = "sh" if sched in SH_LIKE else "mh"
        if flags & SVC_F_SCHED1:
            out.append(f"{p}-fallback")
        if flags & SVC_F_SCHED2:
            out.append(f"{p}-port")
        if flags & SVC_F_SCHED3:
            out.append("flag-3")
    else:
        for i, bit in enumerate((SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)):
            if flags & bit:
                out.append(f"flag-{i + 1}")
    return out


def check_scheduler(name):
    if name in SCHEDULERS:
        return
    if name in UNSUPPORTED_SCHEDULERS:
        raise ConfigError(f"scheduler '{name}' is not supported by userlb "
                          f"(supported: {' '.join(SCHEDULERS)})")
    raise ConfigError(f"Scheduler not found: '{name}' (supported: {' '.join(SCHEDULERS)})")


# ---------------------------------------------------------------- tokenizer

def _tokens(words):
    """Yield (kind, name, value) for each option / positional word.
    kind: 'cmd' | 'opt' | 'arg'."""
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        i += 1
        if w.startswith("--") and len(w) > 2:
            name, eq, val = w[2:].partition("=")
            if name in _COMMAND_OPTS:
                if name in _CMD_TAKES_ARG:
                    if not eq:
                        if i >= n:
                            raise ConfigError(f"--{name}: missing argument")
                        val = words[i]
                        i += 1
                    yield "cmd", name, val
                elif eq:
                    raise ConfigError(f"--{name}: option does not take an argument")
                else:
                    yield "cmd", name, None
                continue
            spec = _OPTIONS.get(name)
            if spec is None:
                raise ConfigError(f"--{name}: unknown option")
            kind = spec[1]
            if kind == 0:
                if eq:
                    raise ConfigError(f"--{name}: option does not take an argument")
                yield "opt", name, None
            elif eq:
                yield "opt", name, val
            elif kind == 1:
                if i >= n:
                    raise ConfigError(f"--{name}: missing argument")
                yield "opt", name, words[i]
                i += 1
            else:   # optional argument
                if i < n and not words[i].startswith("-"):
                    yield "opt", name, words[i]
                    i += 1
                else:
                    yield "opt", name, None
        elif w.startswith("-") and len(w) > 1 and w != "--":
            j = 1
            while j < len(w):
                c = w[j]
                j += 1
                ent = _SHORT.get(c)
                if ent is None:
                    raise ConfigError(f"-{c}: unknown option")
                kind_, name = ent
                if kind_ == "cmd":
                    yield "cmd", name, None
                    continue
                argkind = _OPTIONS[name][1]
                if argkind == 0:
                    yield "opt", name, None
                    continue
                rest = w[j:]
                if rest:
                    yield "opt", name, rest
                elif argkind == 1:
                    if i >= n:
                        raise ConfigError(f"-{c}: missing argument")
                    yield "opt", name, words[i]
                    i += 1
                else:
                    if i < n and not words[i].startswith("-"):
                        yield "opt", name, words[i]
                        i += 1
                    else:
                        yield "opt", name, None
                break
        else:
            yield "arg", None, w


# ------------------------------------------------------------------- parser

def parse_argv(words):
    """Parse one ipvsadm argv (without the program name; a leading 'ipvsadm'
    is dropped) into a Command.  Raises ConfigError."""
    words = list(words)
    if words and is_program_name(words[0]):
        words = words[1:]
    if not words:
        # bare `ipvsadm` lists the table
        return Command(LIST)

    cmd = None
    raw = {}           # option key -> (long name, value)
    positional = []
    for kind, name, val in _tokens(words):
        if kind == "cmd":
            if cmd is not None:
                raise ConfigError("multiple commands specified")
            cmd = _COMMAND_OPTS[name][1]
            if cmd in ("start-daemon", "stop-daemon"):
                raise ConfigError(f"--{cmd} is not supported by userlb (no connection sync daemon)")
        elif kind == "opt":
            key = _OPTIONS[name][2]
            if key is None:
                continue
            if key in raw:
                raise ConfigError(f"multiple '{key}' options specified")
            raw[key] = (name, val)
        else:
            positional.append(name if name else val)
    if cmd is None:
        raise ConfigError("no command specified (one of -A -E -D -C -a -e -d -L -Z -R -S --set)")

    c = Command(cmd)
    c.given = set(raw)
    if cmd in (HELP, VERSION):
        return c

    # unsupported features: clear errors before anything else
    if "service-address" in raw:
        name = raw["service-address"][0]
        if name == "fwmark-service":
            raise ConfigError("fwmark services (-f) are not supported by userlb")
        if name == "sctp-service":
            raise ConfigError("SCTP services are not supported by userlb")
    for key, what in (("ipv6", "-6 (fwmark services)"), ("pe", "--pe (persistence engines)"),
                      ("mcast-interface", "--mcast-interface"), ("syncid", "--syncid"),
                      ("mcast-group", "--mcast-group"), ("mcast-port", "--mcast-port"),
                      ("mcast-ttl", "--mcast-ttl"), ("sync-maxlen", "--sync-maxlen"),
                      ("tun-type", "--tun-type"), ("tun-port", "--tun-port"),
                      ("tun-nocsum", "--tun-nocsum"), ("tun-csum", "--tun-csum"),
                      ("tun-remcsum", "--tun-remcsum")):
        if key in raw and key not in (_LEGAL.get(cmd) or {}):
            continue    # reported below as illegal with this command
        if key in raw:
            raise ConfigError(f"{what} is not supported by userlb")

    # service
    if "service-address" in raw:
        name, val = raw["service-address"]
        c.protocol = IPPROTO_TCP if name == "tcp-service" else IPPROTO_UDP
        c.af, c.addr, port = parse_service_address(val, c.protocol)
        c.port = 0 if port is None else port
        c.netmask = 0xFFFFFFFF if c.af == AF_INET else 128
    if "scheduler" in raw:
        c.sched_name = raw["scheduler"][1]
    if "persistent" in raw:
        c.flags |= SVC_F_PERSISTENT
        val = raw["persistent"][1]
        if val is None:
            c.timeout = DEFAULT_PERSISTENCE_TIMEOUT
        else:
            t = _number(val, 1, MAX_TIMEOUT)
            if t is None:
                raise ConfigError(f"invalid timeout value `{val}' specified")
            c.timeout = t
    if "netmask" in raw:
        c.netmask = parse_netmask(raw["netmask"][1], c.af or AF_INET)
    if "real-server" in raw:
        val = raw["real-server"][1]
        c.daf, c.daddr, dport = parse_service_address(val, c.protocol, "real server")
        c.dport = c.port if dport is None else dport
    if "forwarding-method" in raw:
        c.fwd = {"masquerading": FWD_MASQ, "ipip": FWD_TUNNEL,
                 "gatewaying": FWD_DROUTE}[raw["forwarding-method"][0]]
    if "weight" in raw:
        w = _number(raw["weight"][1], 0, 65535)
        if w is None:
            raise ConfigError("illegal weight specified")
        c.weight = w
    if "u-threshold" in raw:
        v = _number(raw["u-threshold"][1], 0, INT_MAX)
        if v is None:
            raise ConfigError("illegal u_threshold specified")
        c.u_threshold = v
    if "l-threshold" in raw:
        v = _number(raw["l-threshold"][1], 0, INT_MAX)
        if v is None:
            raise ConfigError("illegal l_threshold specified")
        c.l_threshold = v
    c.numeric = "numeric" in raw
    c.connections = "connection" in raw
    c.timeouts_list = "timeout" in raw
    c.daemon = "daemon" in raw
    c.stats = "stats" in raw
    c.rate = "rate" in raw
    c.thresholds = "thresholds" in raw
    c.persistent_conn = "persistent-conn" in raw
    c.nosort = "nosort" in raw
    c.exact = "exact" in raw
    c.tun_info = "tun-info" in raw
    if "ops" in raw:
        c.flags |= SVC_F_ONEPACKET

    # --set tcp tcpfin udp
    if cmd == SET:
        if len(positional) < 3:
            raise ConfigError("--set option requires 3 timeout values")
        vals = []
        for p in positional[:3]:
            v = _number(p, 0, MAX_TIMEOUT)
            if v is None:
                raise ConfigError(f"invalid timeout value `{p}' specified")
            vals.append(v)
        c.set_timeouts = tuple(vals)
        positional = positional[3:]
    if positional:
        raise ConfigError(f"unexpected argument {positional[0]}")

    # -b is interpreted once the scheduler is known (ipvsadm does the same)
    if "sched-flags" in raw:
        c.flags |= parse_sched_flags(c.sched_name, raw["sched-flags"][1])

    _check_legal(cmd, raw)

    if cmd in (ADD_SERVICE, EDIT_SERVICE):
        if not c.port and not (c.flags & SVC_F_PERSISTENT):
            raise ConfigError("Zero port specified for non-persistent service")
        if c.flags & SVC_F_ONEPACKET and c.protocol != IPPROTO_UDP:
            raise ConfigError("One-Packet Scheduling is only for UDP virtual services")
        if not c.sched_name:
            c.sched_name = DEFAULT_SCHEDULER
        check_scheduler(c.sched_name)
        if c.sched_name == "mhs" and c.flags & SVC_F_PERSISTENT:
            raise ConfigError("-p (persistence) cannot be used with the mhs scheduler: "
                              "an mhs service is stateless (MHS.md rule 1)")
        if "mh-table-size" in raw:
            v = _number(raw["mh-table-size"][1], 1, 1 << 31)
            if v not in MH_TABLE_SIZES:
                raise ConfigError(f"illegal --mh-table-size {raw['mh-table-size'][1]!r}: "
                                  f"must be one of {' '.join(map(str, MH_TABLE_SIZES))}")
            if c.sched_name not in MH_LIKE:
                raise ConfigError(f"--mh-table-size only applies to the {', '.join(MH_LIKE)} schedulers")
            c.options["mh_table_size"] = v
        if "sh-tab-bits" in raw:
            v = _number(raw["sh-tab-bits"][1], *SH_TAB_BITS_RANGE)
            if v is None:
                raise ConfigError(f"illegal --sh-tab-bits {raw['sh-tab-bits'][1]!r}: must be 4..20")
            if c.sched_name not in SH_LIKE:
                raise ConfigError("--sh-tab-bits only applies to the sh scheduler")
            c.options["sh_tab_bits"] = v
        if "sh-hash" in raw:
            v = raw["sh-hash"][1]
            if v not in SH_HASH_VARIANTS:
                raise ConfigError(f"illegal --sh-hash {v!r}: must be one of {' '.join(SH_HASH_VARIANTS)}")
            if c.sched_name not in SH_LIKE:
                raise ConfigError("--sh-hash only applies to the sh scheduler")
            c.options["sh_hash"] = v

    if cmd in (ADD_SERVER, EDIT_SERVER):
        if c.fwd in (FWD_TUNNEL, FWD_DROUTE):
            c.dport = c.port          # ipvsadm forces the virtual port
        if c.daf != c.af and c.fwd != FWD_TUNNEL:
            raise ConfigError("Different address family is allowed only for tunneling servers")
        if c.l_threshold > c.u_threshold:
            raise ConfigError("lower threshold (-y) is higher than upper threshold (-x)")

    if cmd == LIST:
        conflict = ((c.connections or c.timeouts_list or c.daemon)
                    and (c.stats or c.rate or c.thresholds)) or \
                   ((c.timeouts_list or c.daemon) and c.persistent_conn)
        if conflict:
            raise ConfigError("options conflicts in the list command")
        if c.daemon:
            raise ConfigError("--daemon is not supported by userlb (no connection sync daemon)")
    return c


def _check_legal(cmd, raw):
    legal = _LEGAL[cmd]
    if legal is None:
        return
    exclusive = None
    for key in _OPT_ORDER:
        mode = legal.get(key)
        if key not in raw:
            if mode == "+":
                raise ConfigError(f"You need to supply the '{key}' option for the '{cmd}' command")
            continue
        if mode is None:
            raise ConfigError(f"Illegal '{key}' option with the '{cmd}' command")
        if mode == "1":
            if exclusive is not None:
                raise ConfigError(f"The option '{key}' conflicts with the '{exclusive}' option "
                                  f"in the '{cmd}' command")
            exclusive = key


def is_program_name(word):
    """`ipvsadm`, `/sbin/ipvsadm` (a leading program name is ignored)."""
    return word == "ipvsadm" or word.endswith("/ipvsadm")


def split_line(text):
    """Words of one -R line (shell-like quoting; '#' starts a comment)."""
    try:
        return shlex.split(text, comments=True)
    except ValueError as e:
        raise ConfigError(f"cannot split line: {e}") from None


def parse_line(text, line=None):
    """One line of -R input -> Command, or None for a blank/comment line."""
    try:
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


def parse_rules(text):
    """A whole rules file / -R stream -> list of Commands (line numbers set).
    Raises ConfigError naming the first bad line."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        c = parse_line(raw, line=n)
        if c is not None:
            out.append(c)
    return out
