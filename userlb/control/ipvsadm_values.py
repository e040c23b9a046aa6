"""ipvsadm's value syntax, shared by the parser (ipvsadm.py) and the
listings (listing.py): numbers as ipvsadm reads them, service and real-server
addresses, persistence netmasks, scheduler flag names (-b) and scheduler
names."""
from __future__ import annotations

import re

from ..errors import ConfigError
from ..model import AF_INET, AF_INET6, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3, Addr, parse_addr

DEFAULT_SCHEDULER = "wlc"
#: kernel schedulers userlb knows but refuses
UNSUPPORTED_SCHEDULERS = ("lblc", "lblcr", "dh", "twos")
#: schedulers that accept the mh-* flag names
MH_LIKE = ("mh", "mh-backport", "mhs")
SH_LIKE = ("sh",)

SCHED_FLAG_BITS = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3


def schedulers() -> list[str]:
    """The schedulers userlb implements: the registry's names."""
    from ..sched import base
    return list(base.names())


_INT_RE = re.compile(r"[+-]?[0-9]+")


def number(text: str | None, lo: int, hi: int) -> int | None:
    """ipvsadm's string_to_number: a decimal integer within [lo, hi] or None."""
    if text is None or not _INT_RE.fullmatch(text):
        return None
    try:
        n = int(text)
    except ValueError:            # more digits than int() takes from a string
        return None
    return n if lo <= n <= hi else None


def checked(text: str | None, lo: int, hi: int, error: str) -> int:
    """number(), or ConfigError(error)."""
    n = number(text, lo, hi)
    if n is None:
        raise ConfigError(error)
    return n


def parse_service_address(text: str, protocol: int | None,
                          what: str = "virtual server") -> tuple[int, Addr, int | None]:
    """ipvsadm's parse_service: 'host[:port]' / '[v6]:port' / bare IPv6.
    -> (af, addr, port or None)."""
    illegal = f"illegal {what} address[:port] specified"
    if not text or text.isdigit():
        raise ConfigError(illegal)
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ConfigError(illegal)
        host, port_text = text[1:end], text[end + 2:]
        af, addr = _host(host, illegal, AF_INET6, illegal)
    elif text.count(":") > 1:             # a bare IPv6 address, no port
        af, addr = _host(text, illegal, None, illegal)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        why = ("invalid IPv4 address" if host.replace(".", "").isdigit()
               else "userlb does not resolve host names")
        af, addr = _host(host, f"{illegal} ({why}: {host!r})", AF_INET, illegal)
    port = None
    if port_text is not None:
        port = checked(port_text, 0, 65535,
                        f"{illegal} (port {port_text!r}; userlb does not resolve service names)")
    return af, addr, port


#: how bracket_hint's addition starts (the ipvsadm script strips it: ipvsadm
#: itself gives no hint)
BRACKET_HINT = " (IPv6 addresses need brackets: "


def bracket_hint(text: str | None) -> str:
    """For 'fd00:99::1:80' (an IPv6 address and a port without brackets,
    which ipvsadm reads as an address without port): a hint to append to the
    error that follows, else ''."""
    if not text or text.startswith("[") or text.count(":") < 2:
        return ""
    head, _, tail = text.rpartition(":")
    try:
        af, _ = parse_addr(head)
    except ConfigError:
        return ""
    if af != AF_INET6 or not tail.isdigit():
        return ""
    return f"{BRACKET_HINT}[{head}]:{tail})"


def _host(text: str, bad: str, want_af: int | None, wrong_af: str) -> tuple[int, Addr]:
    try:
        af, addr = parse_addr(text)
    except ConfigError:
        raise ConfigError(bad) from None
    if want_af is not None and af != want_af:
        raise ConfigError(wrong_af)
    return af, addr


def parse_netmask(text: str, af: int) -> int:
    """-M: IPv4 dotted mask -> int; IPv6 prefix length 1..128 -> int."""
    if af == AF_INET6:
        return checked(text, 1, 128, "illegal ipv6 netmask specified")
    try:
        maf, mask = parse_addr(text)
    except ConfigError:
        maf, mask = None, 0
    if maf != AF_INET or not isinstance(mask, int):
        raise ConfigError("illegal virtual server persistent mask specified")
    return mask


def format_netmask(mask: int, af: int) -> str:
    if af == AF_INET6:
        return str(mask)
    return ".".join(str((mask >> s) & 0xFF) for s in (24, 16, 8, 0))


def parse_sched_flags(sched: str | None, text: str) -> int:
    """-b: comma-separated flag names -> SVC_F_SCHED* bits (ipvsadm rules,
    mh-* also accepted for userlb's mh-backport and mhs)."""
    sched = sched or DEFAULT_SCHEDULER
    flags = 0
    names = [n for n in text.split(",") if n] or [text]
    for name in names:
        if name in ("flag-1", "flag-2", "flag-3"):
            flags |= (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)[int(name[-1]) - 1]
            continue
        prefix, _, what = name.partition("-")
        family = {"sh": SH_LIKE, "mh": MH_LIKE}.get(prefix)
        if family is None or what not in ("fallback", "port"):
            raise ConfigError(f"invalid scheduler flag `{name}'")
        if sched not in family:
            raise ConfigError(f"incompatible scheduler flag `{name}'")
        flags |= SVC_F_SCHED1 if what == "fallback" else SVC_F_SCHED2
    return flags


def sched_flag_names(sched: str, flags: int) -> list[str]:
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


def check_scheduler(name: str) -> None:
    supported = schedulers()
    if name in supported:
        return
    if name in UNSUPPORTED_SCHEDULERS:
        raise ConfigError(f"scheduler '{name}' is not supported by userlb "
                          f"(supported: {' '.join(supported)})")
    raise ConfigError(f"Scheduler not found: '{name}' (supported: {' '.join(supported)})")
