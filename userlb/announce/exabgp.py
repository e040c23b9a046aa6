"""ExaBGP's text API, the part `userlb announce` speaks (ExaBGP 4.x,
`encoder text`).

Lines written to ExaBGP (one command a line, on the process's stdout):

    announce route 10.99.0.1/32 next-hop self [med 10] [community [65000:1 65000:2]]
    withdraw route 10.99.0.1/32 next-hop self
    clear adj-rib out          (forget every route announced before, e.g. by a
                                previous instance of this process)

Answers read back (on stdin), one per command while ExaBGP's
`exabgp.api.ack` is true (its default): `done` or `error`.  When ExaBGP stops
it writes `shutdown PID PPID`.  Other lines (neighbor state, received
routes, when the process's `api { receive ... }` asks for them) are not
answers and are ignored.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DONE = "done"
ERROR = "error"
SHUTDOWN = "shutdown"

CLEAR = "clear adj-rib out"

MED_MAX = 2**32 - 1


class AttrError(ValueError):
    """An attribute option that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Attrs:
    """Optional BGP attributes of one announced prefix."""
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()

    def text(self) -> str:
        out = ""
        if self.med is not None:
            out += f" med {self.med}"
        if len(self.communities) == 1:
            a, b = self.communities[0]
            out += f" community {a}:{b}"
        elif self.communities:
            out += " community [" + " ".join(f"{a}:{b}" for a, b in self.communities) + "]"
        return out


NO_ATTRS = Attrs()


def host_prefix(addr: str) -> str:
    """'10.99.0.1' -> '10.99.0.1/32', 'fd00:99::1' -> 'fd00:99::1/128'
    (canonical text).  ValueError for anything else."""
    ip = ipaddress.ip_address(addr.strip().strip("[]"))
    return f"{ip}/{ip.max_prefixlen}"


def prefix(text: str) -> str:
    """A prefix in canonical form ('10.10.0.0/24'); a bare address becomes a
    host prefix.  ValueError when it is neither (or has host bits set)."""
    t = text.strip()
    if "/" not in t:
        return host_prefix(t)
    return str(ipaddress.ip_network(t, strict=True))


def announce_line(pfx: str, attrs: Attrs = NO_ATTRS, next_hop: str = "self") -> str:
    return f"announce route {pfx} next-hop {next_hop}{attrs.text()}"


def withdraw_line(pfx: str, next_hop: str = "self") -> str:
    return f"withdraw route {pfx} next-hop {next_hop}"


def answer(line: str) -> str | None:
    """DONE, ERROR or SHUTDOWN for an answer line from ExaBGP, else None."""
    words = line.split()
    if not words:
        return None
    if len(words) == 1 and words[0] in (DONE, ERROR):
        return words[0]
    if words[0] == SHUTDOWN:
        return SHUTDOWN
    return None


def community(text: str) -> tuple[int, int]:
    """'65000:200' -> (65000, 200); each half 0..65535."""
    a, sep, b = text.strip().partition(":")
    if not sep or not a.isdigit() or not b.isdigit():
        raise AttrError(f"community {text!r}: expected ASN:VALUE, two numbers 0..65535")
    x, y = int(a), int(b)
    if x > 0xFFFF or y > 0xFFFF:
        raise AttrError(f"community {text!r}: each half must be 0..65535")
    return x, y


def med(text: str) -> int:
    if not text.strip().isdigit() or int(text) > MED_MAX:
        raise AttrError(f"med {text!r}: expected a number 0..{MED_MAX}")
    return int(text)


def keyed(text: str) -> tuple[str | None, str]:
    """'[PREFIX=]VALUE' -> (canonical prefix or None for every prefix, VALUE)."""
    key, sep, value = text.rpartition("=")
    if not sep:
        return None, text
    try:
        return prefix(key), value
    except ValueError:
        raise AttrError(f"{text!r}: {key!r} is not an address or prefix") from None


def attrs_table(meds: list[str], communities: list[str]
                ) -> tuple[Attrs, dict[str, Attrs]]:
    """The `--med [PREFIX=]N` and `--community [PREFIX=]A:B` options -> the
    attributes of every prefix and those of named prefixes (a named prefix
    gets its own MED over the common one, and the common communities plus
    its own)."""
    common_med: int | None = None
    common_comm: list[tuple[int, int]] = []
    own_med: dict[str, int] = {}
    own_comm: dict[str, list[tuple[int, int]]] = {}
    for m in meds:
        k, v = keyed(m)
        if k is None:
            common_med = med(v)
        else:
            own_med[k] = med(v)
    for c in communities:
        k, v = keyed(c)
        if k is None:
            common_comm.append(community(v))
        else:
            own_comm.setdefault(k, []).append(community(v))
    common = Attrs(common_med, tuple(common_comm))
    table = {}
    for k in set(own_med) | set(own_comm):
        table[k] = Attrs(own_med.get(k, common_med),
                         tuple(common_comm + [c for c in own_comm.get(k, [])
                                              if c not in common_comm]))
    return common, table
