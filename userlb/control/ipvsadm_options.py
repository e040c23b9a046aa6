"""ipvsadm's option table and tokenizer (what popt does for ipvsadm 1.31):
the command and option names, which options take an argument, the table of
legal command/option combinations, and `tokens(words)`, which splits an
argument vector into commands, options with their values and positional
words.  The meaning of the values is ipvsadm.py's job.

* short options can be bundled (`-Ln`, `-At`), an argument can be glued
  (`-w5`) or separate (`-w 5`); long options take `--opt=value` or
  `--opt value`; an optional argument (`-p`) is the next word unless it
  starts with `-`.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..errors import ConfigError

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
START_DAEMON = "start-daemon"
STOP_DAEMON = "stop-daemon"

#: long command option -> (short letter or None, command)
COMMAND_OPTS: dict[str, tuple[str | None, str]] = {
    "add-service": ("A", ADD_SERVICE), "edit-service": ("E", EDIT_SERVICE),
    "delete-service": ("D", DEL_SERVICE), "clear": ("C", FLUSH),
    "list": ("L", LIST), "zero": ("Z", ZERO), "add-server": ("a", ADD_SERVER),
    "edit-server": ("e", EDIT_SERVER), "delete-server": ("d", DEL_SERVER),
    "set": (None, SET), "help": ("h", HELP), "version": ("v", VERSION),
    "restore": ("R", RESTORE), "save": ("S", SAVE),
    "start-daemon": (None, START_DAEMON), "stop-daemon": (None, STOP_DAEMON),
}
_CMD_TAKES_ARG = {START_DAEMON, STOP_DAEMON}

NO_ARG, ARG, OPTIONAL_ARG = 0, 1, 2

# One option a line: long name, short letter (- for none), argument (0 none,
# 1 required, 2 optional), key = the ipvsadm option name used in error
# messages and the legality table (= the long name when omitted; ~ for an
# option that is accepted and ignored).
_OPTION_TABLE = """
tcp-service      t 1 service-address
udp-service      u 1 service-address
sctp-service     - 1 service-address
fwmark-service   f 1 service-address
scheduler        s 1
persistent       p 2
netmask          M 1
real-server      r 1
masquerading     m 0 forwarding-method
ipip             i 0 forwarding-method
gatewaying       g 0 forwarding-method
weight           w 1
u-threshold      x 1
l-threshold      y 1
numeric          n 0
connection       c 0
mcast-interface  - 1
syncid           - 1
timeout          - 0
daemon           - 0
stats            - 0
rate             - 0
thresholds       - 0
persistent-conn  - 0
nosort           - 0
sort             - 0 ~
exact            X 0
ipv6             6 0
ops              o 0
pe               - 1
sched-flags      b 1
mcast-group      - 1
mcast-port       - 1
mcast-ttl        - 1
sync-maxlen      - 1
tun-info         - 0
tun-type         - 1
tun-port         - 1
tun-nocsum       - 0
tun-csum         - 0
tun-remcsum      - 0
mh-table-size    - 1
sh-tab-bits      - 1
sh-hash          - 1
health           - 0
"""
# (the last three are userlb extensions)


def _read_table(text: str) -> dict[str, tuple[str | None, int, str | None]]:
    out: dict[str, tuple[str | None, int, str | None]] = {}
    for row in text.strip().splitlines():
        long, short, arg, *key = row.split()
        k = key[0] if key else long
        out[long] = (None if short == "-" else short, int(arg), None if k == "~" else k)
    return out


#: long name -> (short letter or None, argument kind, option key or None)
OPTIONS = _read_table(_OPTION_TABLE)

#: short letter -> ("cmd" | "opt", long name)
SHORT: dict[str, tuple[str, str]] = {"l": ("cmd", "list")}
for _long, (_s, _cmd) in COMMAND_OPTS.items():
    if _s:
        SHORT[_s] = ("cmd", _long)
for _long, (_s, _k, _key) in OPTIONS.items():
    if _s:
        SHORT[_s] = ("opt", _long)

# Legal options per command ('+' required, ' ' optional, '1' at most one of
# them).  Anything not listed is illegal with that command; None: anything
# goes (like ipvsadm, which exits first).
_SVC_OPTS = dict.fromkeys(("scheduler", "persistent", "netmask", "ops", "pe", "sched-flags",
                           "mh-table-size", "sh-tab-bits", "sh-hash"), " ")
_DEST_OPTS = dict.fromkeys(("forwarding-method", "weight", "u-threshold", "l-threshold",
                            "tun-type", "tun-port", "tun-nocsum", "tun-csum",
                            "tun-remcsum"), " ")
LEGAL: dict[str, dict[str, str] | None] = {
    ADD_SERVICE: {"service-address": "+", **_SVC_OPTS},
    EDIT_SERVICE: {"service-address": "+", **_SVC_OPTS},
    DEL_SERVICE: {"service-address": "+"},
    FLUSH: {},
    LIST: {"numeric": " ", "connection": "1", "service-address": "1",
           "timeout": "1", "daemon": "1", "stats": " ", "rate": " ",
           "thresholds": " ", "persistent-conn": " ", "nosort": " ",
           "syncid": " ", "exact": " ", "tun-info": " ", "health": " "},
    ADD_SERVER: {"service-address": "+", "real-server": "+", **_DEST_OPTS},
    DEL_SERVER: {"service-address": "+", "real-server": "+"},
    EDIT_SERVER: {"service-address": "+", "real-server": "+", **_DEST_OPTS},
    SET: {},
    RESTORE: {},
    SAVE: {"numeric": " "},
    ZERO: {"service-address": " "},
    HELP: None, VERSION: None,
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
              "ipv6", "health")

#: (kind, name, value): kind "cmd" (name: long command option, value its
#: argument or None), "opt" (name: long option, value or None) or "arg"
#: (name None, value: the positional word)
Token = tuple[str, "str | None", "str | None"]


def tokens(words: list[str]) -> Iterator[Token]:
    """Yield the commands, options and positional words of `words` in order.
    Raises ConfigError for an unknown option or a missing argument."""
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        i += 1
        if w.startswith("--") and len(w) > 2:
            name, eq, val = w[2:].partition("=")
            tok, i = _long_option(words, i, name, val if eq else None)
            yield tok
        elif w.startswith("-") and len(w) > 1 and w != "--":
            j = 1
            while j < len(w):
                c = w[j]
                j += 1
                ent = SHORT.get(c)
                if ent is None:
                    raise ConfigError(f"-{c}: unknown option")
                kind_, name = ent
                if kind_ == "cmd":
                    yield "cmd", name, None
                    continue
                argkind = OPTIONS[name][1]
                if argkind == NO_ARG:
                    yield "opt", name, None
                    continue
                arg, i = _argument(words, i, f"-{c}", argkind, w[j:] or None)
                yield "opt", name, arg
                break
        else:
            yield "arg", None, w


def _long_option(words: list[str], i: int, name: str, val: str | None) -> tuple[Token, int]:
    """--name[=val] -> (token, index of the next word)."""
    if name in COMMAND_OPTS:
        if name in _CMD_TAKES_ARG:
            val, i = _argument(words, i, f"--{name}", ARG, val)
        elif val is not None:
            raise ConfigError(f"--{name}: option does not take an argument")
        return ("cmd", name, val), i
    spec = OPTIONS.get(name)
    if spec is None:
        raise ConfigError(f"--{name}: unknown option")
    if spec[1] == NO_ARG:
        if val is not None:
            raise ConfigError(f"--{name}: option does not take an argument")
        return ("opt", name, None), i
    val, i = _argument(words, i, f"--{name}", spec[1], val)
    return ("opt", name, val), i


def _argument(words: list[str], i: int, what: str, kind: int,
              inline: str | None) -> tuple[str | None, int]:
    """The argument of an option: given inline (glued or after `=`), else
    the next word (an optional argument only when it does not start with
    `-`).  -> (value or None, index of the next word)."""
    if inline is not None:
        return inline, i
    if kind == ARG:
        if i >= len(words):
            raise ConfigError(f"{what}: missing argument")
        return words[i], i + 1
    if i < len(words) and not words[i].startswith("-"):
        return words[i], i + 1
    return None, i


def check_legal(cmd: str, raw: Mapping[str, object]) -> None:
    """ipvsadm's table of legal command/option combinations: the first
    offending option (in ipvsadm's order) is reported."""
    legal = LEGAL[cmd]
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
