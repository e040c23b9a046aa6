"""`userlb simulate`: which real server gets this flow -- offline, no packets.

    userlb simulate --rules FILE [--flows FILE|-] [--json]
    userlb simulate --rules FILE --table VIP:VPORT [--proto tcp|udp] [--json]
    userlb simulate --rules FILE --against FILE2 [--flows FILE|-] [--json]

--rules FILE   ipvsadm commands, one per line, as `ipvsadm -R` reads them
               (a leading `ipvsadm` is ignored, `#` starts a comment).  They
               are applied with the kernel's semantics (userlb.control.config),
               all or nothing: a bad line is reported with its line number on
               stderr, the exit code is 1 and no flow is printed.
--flows FILE   one flow per line: `PROTO CLIENT:PORT VIP:VPORT`, PROTO tcp or
               udp, IPv6 addresses in brackets (`tcp [2001:db8::9]:4000
               [2001:db8::100]:80`); `-` (the default) reads stdin.  Output:
               the flow, then ` -> RIP:RPORT`, or ` -> -` when there is no
               service for the VIP or the scheduler returns no destination.
               Each flow is a new connection asking the scheduler once
               (schedule(client, client port)); there is no connection
               tracking here.  A bad flow line is an error (line number on
               stderr, exit code 1, nothing printed).
--json         flows: a JSON list of {"proto", "client", "vip", "dest"}
               (dest null when none).  --table / --against: a JSON object.
--table VIP:VPORT
               the scheduler's lookup table, one line per slot: `SLOT RIP:RPORT`
               or `SLOT -` (mh, mh-backport, sh, mhs -- for mhs the table that
               decides a SYN right now, MHS.md).  --proto picks the service's
               protocol (default tcp).
--against FILE2
               disruption between two rule sets (the rules of FILE are "before",
               FILE2 "after").  Per service with a lookup table in either set:
               the slots each backend owns before and after, how many it lost
               and gained, and (with --flows) how many of the given flows it had
               before / after and how many moved away from it; then the total
               of slots and flows that moved.  Backends are compared by
               address:port.  Flows are read only with --flows (`--flows -`
               for stdin); without it only the tables are compared.  Example:

                   service tcp 10.0.0.100:80: mh -> mh
                     slots: 4093, moved 1364 (33.33%)
                     flows: 1000, moved 339 (33.90%)
                     backend              slots_before slots_after  lost gained flows_before flows_after moved_away
                     10.0.0.1:80                  1365        2047     0    682          331         505          0
                     10.0.0.2:80                  1364           0  1364      0          339           0        339
                   flows (all services): 1000, moved 339 (33.90%)

Timed input (packets, entries; provisional syntax, for mhs and MHS.md)
----------------------------------------------------------------------
When a flow line carries TCP flag words, or any line starts with `@SECONDS`,
the input is *timed* and every flow line is a packet sent through the real
data plane (userlb.dataplane.engine, connection entries included) at its time:

    @0     tcp 192.168.1.1:1000 10.0.0.100:80 SYN
    @1000  -d -t 10.0.0.100:80 -r 10.0.0.2:80        # an ipvsadm command at t=1000
    @1001  tcp 192.168.1.7:2000 10.0.0.100:80 ACK
    @1003  udp 192.168.1.8:53 10.0.0.100:80

* `@SECONDS` (a number >= 0) sets the time of the line; a line without it
  has the time of the previous line (0 at the start).  Lines are processed in
  time order; at equal times rule lines apply before flow lines (MHS.md
  conventions); output lines follow the order of the flow lines.
* A rule line is an ipvsadm command (`-a ...`, `ipvsadm -d ...`), applied with
  the same semantics as --rules at its time.  An error stops everything
  (line number on stderr, exit code 1, nothing printed).
* TCP flag words: SYN ACK FIN RST PSH URG (several words, or joined with `,`
  or `+`: `SYN,ACK`), DATA (= PSH,ACK with one byte of payload).  A TCP line
  without flags is a SYN.  UDP lines take no flags.
* Output: `@T PROTO CLIENT VIP [FLAGS] -> RIP:RPORT|- entry|noentry`, where
  entry/noentry says whether a live connection entry exists for the flow
  after that packet (created now or earlier).  --json adds "time", "flags"
  and "entry" to each object.
* Flows without flags and without `@` keep the untimed behaviour above (the
  scheduler asked directly, no entries).
"""
import argparse
import io
import json
import struct
import sys

from ..clock import ManualClock
from ..control import ipvsadm as ia
from ..control.config import Config
from ..errors import ConfigError
from ..model import (PROTO_BY_NAME, PROTO_NAMES, addr_af, format_endpoint,
                     parse_endpoint)


TCP_FLAG_BITS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10,
                 "URG": 0x20, "DATA": 0x18}
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


def load_config(path, clock=None):
    with open(path) as fh:
        text = _utf8(fh.read)
    cfg = Config(clock=clock if clock is not None else ManualClock(0.0))
    cfg.load_rules(text)
    return cfg


# --------------------------------------------------------------- scheduling

def lookup(cfg, flow):
    """The Dest a new connection of `flow` gets, or None."""
    svc = cfg.services.get(flow.service_key)
    if svc is None or svc.sched is None:
        return None
    return svc.sched.schedule(flow.caddr, flow.cport)


def _dest_text(d):
    return "-" if d is None else format_endpoint(d.addr, d.port)


def _ep(x):
    """A table item (Dest, (addr, port) or None) -> (addr, port) or None."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return x
    return (x.addr, x.port)


TABLE_SCHEDULERS = "mh, mh-backport, sh, mhs"


def table_of(svc):
    """Per slot (addr, port) or None.  ConfigError if the scheduler has no
    lookup table."""
    table = svc.sched.table_endpoints()
    if table is None:
        raise ConfigError(f"scheduler '{svc.sched_name}' has no lookup table "
                          f"(--table works with {TABLE_SCHEDULERS})")
    return [_ep(x) for x in table]


# ------------------------------------------------------------------ modes

def run_flows(cfg, events, as_json, out):
    results = []
    for kind, f in events:
        if kind == "flow":
            results.append((f, lookup(cfg, f)))
    if as_json:
        json.dump([{"proto": PROTO_NAMES[f.proto],
                    "client": format_endpoint(f.caddr, f.cport),
                    "vip": format_endpoint(f.vaddr, f.vport),
                    "dest": None if d is None else format_endpoint(d.addr, d.port)}
                   for f, d in results], out, indent=1)
        out.write("\n")
    else:
        for f, d in results:
            out.write(f"{f.text()} -> {_dest_text(d)}\n")


# --------------------------------------------------------------- timed mode

def _fmt_time(t):
    return str(int(t)) if t == int(t) else repr(t)


def build_packet(f):
    """A client -> VIP packet for flow `f` (IPv4 or IPv6, TCP or UDP, valid
    checksums)."""
    from ..dataplane.csum import checksum, pseudo_sum
    payload = b"x" if (f.data or f.proto == 17) else b""
    if f.proto == 6:
        flags = f.flags if f.flags is not None else TCP_FLAG_BITS["SYN"]
        ack = 1 if flags & TCP_FLAG_BITS["ACK"] else 0
        l4 = bytearray(struct.pack("!HHIIBBHHH", f.cport, f.vport, 1000, ack, 5 << 4,
                                   flags, 65535, 0, 0) + payload)
        coff = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", f.cport, f.vport, 8 + len(payload), 0) + payload)
        coff = 6
    af = addr_af(f.caddr)
    c = checksum(l4, initial=pseudo_sum(af, f.caddr, f.vaddr, f.proto, len(l4)))
    if f.proto == 17 and c == 0:
        c = 0xFFFF
    struct.pack_into("!H", l4, coff, c)
    if af == 4:
        ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 1, 0, 64, f.proto, 0,
                                   f.caddr, f.vaddr))
        struct.pack_into("!H", ip, 10, checksum(ip))
    else:
        ip = bytearray(struct.pack("!IHBB", 6 << 28, len(l4), f.proto, 64)
                       + bytes(f.caddr) + bytes(f.vaddr))
    return bytes(ip + l4)


def _forwarded_dest(buf):
    """(daddr, dport) of a rewritten packet."""
    if buf[0] >> 4 == 4:
        ihl = (buf[0] & 0x0F) * 4
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[ihl + 2:ihl + 4], "big")
    return bytes(buf[24:40]), int.from_bytes(buf[42:44], "big")


class TimedRun:
    """Rules and packets in time order through the real engine."""

    def __init__(self, cfg, clock):
        from ..dataplane.engine import Engine
        self.cfg = cfg
        self.clock = clock
        self.engine = Engine()
        self.engine.set_timeouts(*cfg.timeouts.as_tuple())
        self.engine.set_services(cfg.services.values())
        cfg.subscribe(self._on_change)

    def _on_change(self, event, svc, dest):
        if event == "timeouts":
            self.engine.set_timeouts(*self.cfg.timeouts.as_tuple())
        else:
            self.engine.set_services(self.cfg.services.values())

    def has_entry(self, f, now):
        for e in self.engine.entries(now):
            if e[:5] == (f.proto, f.caddr, f.cport, f.vaddr, f.vport):
                return True
        return False

    def packet(self, f, now):
        from ..dataplane.engine import V_FORWARD
        raw = build_packet(f)
        buf = bytearray(raw) + bytearray(64)
        v = self.engine.process(buf, len(raw), now)
        dest = _forwarded_dest(buf[:self.engine.out_len]) if v == V_FORWARD else None
        return dest, self.has_entry(f, now)

    def run(self, events):
        """-> list of (Flow, (addr, port) | None, entry?) in flow-line order."""
        order = []
        t = 0.0
        for i, (kind, x) in enumerate(events):
            if kind == "rule":
                t = x[0] if x[0] is not None else t
            else:
                t = x.time if x.time is not None else t
            order.append((t, 0 if kind == "rule" else 1, i))
        order.sort()
        results = {}
        for t, _, i in order:
            kind, x = events[i]
            self.clock.set(t)
            if kind == "rule":
                self.cfg.apply(x[1])
            else:
                x.time = t
                results[i] = (x,) + self.packet(x, t)
        return [results[i] for i in sorted(results)]


def run_timed(cfg, clock, events, as_json, out):
    results = TimedRun(cfg, clock).run(events)
    if as_json:
        json.dump([{"time": f.time, "proto": PROTO_NAMES[f.proto],
                    "client": format_endpoint(f.caddr, f.cport),
                    "vip": format_endpoint(f.vaddr, f.vport),
                    "flags": None if f.proto != 6 else flags_text(
                        f.flags if f.flags is not None else TCP_FLAG_BITS["SYN"]),
                    "dest": None if d is None else format_endpoint(*d),
                    "entry": e} for f, d, e in results], out, indent=1)
        out.write("\n")
        return
    for f, d, e in results:
        fl = ""
        if f.proto == 6:
            fl = " " + flags_text(f.flags if f.flags is not None else TCP_FLAG_BITS["SYN"])
        out.write(f"@{_fmt_time(f.time)} {f.text()}{fl} -> "
                  f"{'-' if d is None else format_endpoint(*d)} {'entry' if e else 'noentry'}\n")


def run_table(cfg, key, as_json, out):
    svc = cfg.services.get(key)
    if svc is None:
        raise ConfigError(f"no service {PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])} "
                          "in the rules")
    table = table_of(svc)
    if as_json:
        json.dump({"service": f"{PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])}",
                   "scheduler": svc.sched_name, "size": len(table),
                   "table": [None if e is None else format_endpoint(*e) for e in table]},
                  out)
        out.write("\n")
        return
    for i, e in enumerate(table):
        out.write(f"{i} {'-' if e is None else format_endpoint(*e)}\n")


def compare(cfg_a, cfg_b, flows):
    """The disruption between two configurations: a dict (see --against)."""
    keys = list(cfg_a.services)
    keys += [k for k in cfg_b.services if k not in cfg_a.services]
    by_svc = {}
    flow_res = []
    for f in flows:
        da, db = _ep(lookup(cfg_a, f)), _ep(lookup(cfg_b, f))
        flow_res.append((f, da, db))
        by_svc.setdefault(f.service_key, []).append((da, db))
    services = []
    for key in keys:
        sa, sb = cfg_a.services.get(key), cfg_b.services.get(key)
        ta = _try_table(sa)
        tb = _try_table(sb)
        fl = by_svc.get(key, [])
        if ta is None and tb is None and not fl:
            continue
        backends = {}

        def row(ep):
            if ep not in backends:
                backends[ep] = dict(slots_before=0, slots_after=0, lost=0, gained=0,
                                    flows_before=0, flows_after=0, moved_away=0)
            return backends[ep]

        entry = {"service": f"{PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])}",
                 "scheduler_before": sa.sched_name if sa else None,
                 "scheduler_after": sb.sched_name if sb else None}
        if ta is not None or tb is not None:
            n = max(len(ta or ()), len(tb or ()))
            ta_ = (ta or []) + [None] * (n - len(ta or ()))
            tb_ = (tb or []) + [None] * (n - len(tb or ()))
            moved = 0
            for a, b in zip(ta_, tb_):
                if a is not None:
                    row(a)["slots_before"] += 1
                if b is not None:
                    row(b)["slots_after"] += 1
                if a != b:
                    moved += 1
                    if a is not None:
                        row(a)["lost"] += 1
                    if b is not None:
                        row(b)["gained"] += 1
            entry["slots"] = n
            entry["slots_moved"] = moved
        for a, b in fl:
            if a is not None:
                row(a)["flows_before"] += 1
                if a != b:
                    row(a)["moved_away"] += 1
            if b is not None:
                row(b)["flows_after"] += 1
        entry["flows"] = len(fl)
        entry["flows_moved"] = sum(1 for a, b in fl if a != b)
        entry["backends"] = [dict(backend=format_endpoint(*ep), **v)
                             for ep, v in sorted(backends.items(), key=_ep_key)]
        services.append(entry)
    return {"services": services,
            "flows": len(flow_res),
            "flows_moved": sum(1 for _, a, b in flow_res if a != b),
            "moved": [{"proto": PROTO_NAMES[f.proto],
                       "client": format_endpoint(f.caddr, f.cport),
                       "vip": format_endpoint(f.vaddr, f.vport),
                       "before": None if a is None else format_endpoint(*a),
                       "after": None if b is None else format_endpoint(*b)}
                      for f, a, b in flow_res if a != b]}


def _ep_key(item):
    (addr, port), _ = item
    return (0, addr, b"", port) if isinstance(addr, int) else (1, 0, bytes(addr), port)


def _try_table(svc):
    if svc is None or svc.sched.table_endpoints() is None:
        return None
    return table_of(svc)


def _pct(a, n):
    return f"{100.0 * a / n:.2f}%" if n else "0.00%"


def format_compare(res, with_flows):
    lines = []
    for s in res["services"]:
        lines.append(f"service {s['service']}: {s['scheduler_before'] or '(none)'} -> "
                     f"{s['scheduler_after'] or '(none)'}")
        if "slots" in s:
            lines.append(f"  slots: {s['slots']}, moved {s['slots_moved']} "
                         f"({_pct(s['slots_moved'], s['slots'])})")
        if with_flows:
            lines.append(f"  flows: {s['flows']}, moved {s['flows_moved']} "
                         f"({_pct(s['flows_moved'], s['flows'])})")
        head = f"  {'backend':<24} {'slots_before':>12} {'slots_after':>11} {'lost':>5} {'gained':>6}"
        if with_flows:
            head += f" {'flows_before':>12} {'flows_after':>11} {'moved_away':>10}"
        lines.append(head)
        for b in s["backends"]:
            row = (f"  {b['backend']:<24} {b['slots_before']:>12} {b['slots_after']:>11} "
                   f"{b['lost']:>5} {b['gained']:>6}")
            if with_flows:
                row += f" {b['flows_before']:>12} {b['flows_after']:>11} {b['moved_away']:>10}"
            lines.append(row)
    if with_flows:
        lines.append(f"flows (all services): {res['flows']}, moved {res['flows_moved']} "
                     f"({_pct(res['flows_moved'], res['flows'])})")
    return "".join(x + "\n" for x in lines)


# ------------------------------------------------------------------- main

def _parser():
    p = argparse.ArgumentParser(
        prog="userlb simulate",
        description="Offline: which real server gets each flow, the scheduler's "
                    "lookup table, or the disruption between two rule sets.")
    p.add_argument("--rules", required=True, metavar="FILE",
                   help="ipvsadm commands (ipvsadm -R syntax)")
    p.add_argument("--flows", metavar="FILE", default=None,
                   help="flows `PROTO CLIENT:PORT VIP:VPORT`, one per line ('-' = stdin, the default)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--table", metavar="VIP:VPORT", help="print the lookup table of this service")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp",
                   help="protocol of the --table service (default tcp)")
    p.add_argument("--against", metavar="FILE2",
                   help="compare with a second rule set (slots and flows that move)")
    return p


def _read(path, stdin):
    if path in (None, "-"):
        return _utf8(stdin.read)
    with open(path) as fh:
        return _utf8(fh.read)


def _utf8(read):
    """read() -> text; ConfigError (not a traceback) for bytes that are not UTF-8."""
    try:
        return read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def main(argv=None, stdin=None, stdout=None, stderr=None):
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if args.table and args.against:
        err.write("userlb simulate: --table and --against cannot be combined\n")
        return 2
    where = args.rules
    clock = ManualClock(0.0)
    try:
        cfg = load_config(args.rules, clock)
        if args.table:
            where = "--table"
            try:
                _af, vaddr, vport = _table_endpoint(args.table)
            except ConfigError as e:
                raise ConfigError(f"bad --table {args.table!r}: {e.message}") from None
            run_table(cfg, (PROTO_BY_NAME[args.proto], vaddr, vport), args.json, out)
            return 0
        if args.against:
            where = args.against
            cfg_b = load_config(args.against)
            where = args.flows or "-"
            events = read_flows(_read(args.flows, stdin)) if args.flows else []
            if any(k == "rule" for k, _ in events):
                raise ConfigError("--against takes flow lines only (no rules, no times)")
            res = compare(cfg, cfg_b, [f for k, f in events if k == "flow"])
            if args.json:
                json.dump(res, out, indent=1)
                out.write("\n")
            else:
                out.write(format_compare(res, bool(args.flows)))
            return 0
        where = args.flows or "-"
        events = read_flows(_read(args.flows, stdin))
        buf = io.StringIO()
        if is_timed(events):
            run_timed(cfg, clock, events, args.json, buf)
        else:
            run_flows(cfg, events, args.json, buf)
        out.write(buf.getvalue())
        return 0
    except ConfigError as e:
        loc = f"{where}:{e.line}: " if e.line is not None else f"{where}: "
        err.write(f"userlb simulate: {loc}{e.message}\n")
        return 1
    except BrokenPipeError:
        return 0
    except OSError as e:
        err.write(f"userlb simulate: {e}\n")
        return 1


def _table_endpoint(text):
    af, addr, port = parse_endpoint(text)
    return af, addr, port
