"""Flows for `userlb simulate`: the flow-line syntax (`PROTO CLIENT:PORT
VIP:VPORT [FLAGS...]`, optionally timed with `@SECONDS` and mixed with
ipvsadm rule lines -- see cli/simulate.py for the user's description), and
asking a configuration's schedulers directly (no connection tracking)."""
from ..clock import ManualClock
from ..control import ipvsadm as ia
from ..dataplane.packet import TH_ACK, TH_FIN, TH_PSH, TH_RST, TH_SYN, TH_URG
from ..errors import ConfigError
from ..model import (
    IPPROTO_TCP,
    PROTO_BY_NAME,
    PROTO_NAMES,
    Service,
    addr_af,
    format_endpoint,
    parse_endpoint,
)

TCP_FLAG_BITS = {"FIN": TH_FIN, "SYN": TH_SYN, "RST": TH_RST, "PSH": TH_PSH, "ACK": TH_ACK,
                 "URG": TH_URG, "DATA": TH_PSH | TH_ACK}
_FLAG_ORDER = ("SYN", "FIN", "RST", "PSH", "ACK", "URG")


def flags_text(bits):
    return ",".join(n for n in _FLAG_ORDER if bits & TCP_FLAG_BITS[n])


class Flow:
    """One flow line.  `time` is None for untimed input; `flags` (TCP flag
    bits) None when the line has no flag words; `data` True with DATA."""
    __slots__ = ("line", "proto", "caddr", "cport", "vaddr", "vport", "time",
                 "flags", "data")

    def __init__(self, line, proto, caddr, cport, vaddr, vport, time=None,
                 flags=None, data=False):
        self.line = line
        self.proto = proto
        self.caddr, self.cport = caddr, cport
        self.vaddr, self.vport = vaddr, vport
        self.time = time
        self.flags = flags
        self.data = data

    @property
    def service_key(self):
        return (self.proto, self.vaddr, self.vport)

    def text(self):
        return (f"{PROTO_NAMES[self.proto]} {format_endpoint(self.caddr, self.cport)} "
                f"{format_endpoint(self.vaddr, self.vport)}")


# ------------------------------------------------------------------ input

def _endpoint(text, what, line):
    try:
        af, addr, port = parse_endpoint(text)
    except ConfigError as e:
        raise ConfigError(f"bad {what} {text!r}: {e.message}", line=line) from None
    if af == 6 and not text.startswith("["):
        raise ConfigError(f"bad {what} {text!r}: write IPv6 as [ADDR]:PORT", line=line)
    return addr, port


def _parse_flags(words, proto, line):
    if not words:
        return None, False
    if proto != 6:
        raise ConfigError(f"flag words are only for tcp flows: {' '.join(words)!r}", line=line)
    bits = 0
    data = False
    for w in words:
        for name in w.replace("+", ",").split(","):
            if not name:
                continue
            b = TCP_FLAG_BITS.get(name.upper())
            if b is None:
                raise ConfigError(f"unknown TCP flag {name!r} (SYN ACK FIN RST PSH URG DATA)",
                                  line=line)
            bits |= b
            data = data or name.upper() == "DATA"
    return bits, data


def parse_flow_line(text, line=None, time=None):
    """`PROTO CLIENT:PORT VIP:VPORT [FLAGS...]` -> Flow, None for blank or
    comment lines."""
    body = text.split("#", 1)[0].strip()
    if not body:
        return None
    words = body.split()
    if len(words) < 3:
        raise ConfigError(f"expected `PROTO CLIENT:PORT VIP:VPORT`, got {body!r}", line=line)
    proto = PROTO_BY_NAME.get(words[0].lower())
    if proto is None:
        raise ConfigError(f"unknown protocol {words[0]!r} (tcp or udp)", line=line)
    caddr, cport = _endpoint(words[1], "client", line)
    vaddr, vport = _endpoint(words[2], "virtual address", line)
    if addr_af(caddr) != addr_af(vaddr):
        raise ConfigError("client and virtual address are of different families", line=line)
    flags, data = _parse_flags(words[3:], proto, line)
    return Flow(line, proto, caddr, cport, vaddr, vport, time, flags, data)


def read_flows(text):
    """Parse flow input -> list of events in input order: ("flow", Flow) or
    ("rule", (time, ipvsadm.Command)); time None when no `@` was seen yet.
    Raises ConfigError naming the bad line."""
    events = []
    now = None
    for n, raw in enumerate(text.splitlines(), 1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        t = now
        if body.startswith("@"):
            head, _, rest = body.partition(" ")
            try:
                t = float(head[1:])
            except ValueError:
                raise ConfigError(f"bad time {head!r} (expected @SECONDS)", line=n) from None
            if not t >= 0 or t == float("inf"):
                raise ConfigError(f"bad time {head!r} (expected @SECONDS >= 0)", line=n)
            body = rest.strip()
            now = t
            if not body:
                raise ConfigError("a time without a flow or rule", line=n)
        first = body.split()[0]
        if ia.is_program_name(first) or first.startswith("-"):
            cmd = ia.parse_line(body, line=n)
            if cmd is not None:
                events.append(("rule", (t, cmd)))
            continue
        f = parse_flow_line(body, n, t)
        if f is not None:
            events.append(("flow", f))
    return events


def is_timed(events):
    return any(k == "rule" or f.time is not None or f.flags is not None for k, f in events)


# --------------------------------------------------------------- scheduling

def lookup(cfg, flow):
    """The Dest a new connection of `flow` gets, or None."""
    svc = cfg.services.get(flow.service_key)
    if svc is None or svc.sched is None:
        return None
    return svc.sched.schedule(flow.caddr, flow.cport)


def dest_text(d):
    return "-" if d is None else format_endpoint(d.addr, d.port)


def endpoint_of(x):
    """A table item (Dest, (addr, port) or None) -> (addr, port) or None."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return x
    return (x.addr, x.port)


def table_schedulers():
    """The registry's schedulers that have a lookup table (table_endpoints()
    is not None on a fresh instance)."""
    from ..sched import base
    out = []
    for name in base.names():
        cls = base.get(name)
        if cls is not None and cls(Service(IPPROTO_TCP, 0, 80, name),
                                   ManualClock(0.0)).table_endpoints() is not None:
            out.append(name)
    return out


def table_of(svc):
    """Per slot (addr, port) or None.  ConfigError if the scheduler has no
    lookup table."""
    table = svc.sched.table_endpoints()
    if table is None:
        raise ConfigError(f"scheduler '{svc.sched_name}' has no lookup table "
                          f"(--table works with {', '.join(table_schedulers())})")
    return [endpoint_of(x) for x in table]
