"""`userlb simulate`: which real server gets this flow -- offline, no packets.

    userlb simulate --rules FILE [--flows FILE|-] [--json]
    userlb simulate --rules FILE --table VIP:VPORT [--proto tcp|udp] [--summary] [--json]
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
               decides a SYN right now, docs/mhs-spec.md).  --proto picks the service's
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

Timed input (packets, entries; provisional syntax, for mhs and docs/mhs-spec.md)
-----------------------------------------------------------------------------
When a flow line carries TCP flag words, or any line starts with `@SECONDS`,
the input is *timed* and every flow line is a packet sent through the real
data plane (userlb.dataplane.engine, connection entries included) at its time:

    @0     tcp 192.168.1.1:1000 10.0.0.100:80 SYN
    @1000  -d -t 10.0.0.100:80 -r 10.0.0.2:80        # an ipvsadm command at t=1000
    @1001  tcp 192.168.1.7:2000 10.0.0.100:80 ACK
    @1003  udp 192.168.1.8:53 10.0.0.100:80

* `@SECONDS` (a number >= 0) sets the time of the line; a line without it
  has the time of the previous line (0 at the start).  Lines are processed in
  time order; at equal times rule lines apply before flow lines (docs/mhs-spec.md
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
import sys

from ..clock import ManualClock
from ..control.config import Config
from ..errors import ConfigError
from ..model import PROTO_BY_NAME, PROTO_NAMES, format_endpoint, parse_endpoint
from .disruption import compare, format_compare
from .flows import (  # noqa: F401
    TCP_FLAG_BITS,
    Flow,
    dest_text,
    flags_text,
    is_timed,
    lookup,
    parse_flow_line,
    read_flows,
    table_of,
)
from .timed import TimedRun, build_packet, run_timed  # noqa: F401


def load_config(path, clock=None, timed=None):
    """The rules file -> Config.  Lines before the first `@SECONDS` line are
    the starting configuration (applied atomically, as -R); from the first
    `@SECONDS` line on, the file holds timed rules with the flows file's
    semantics (a line without `@` keeps the time of the line before).  They
    are appended to the list `timed` as ("rule", (time, Command)) events, or
    refused when the caller has no use for them (timed=None)."""
    with open(path) as fh:
        text = _utf8(fh.read)
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("@")),
                 len(lines))
    cfg = Config(clock=clock if clock is not None else ManualClock(0.0))
    cfg.load_rules("\n".join(lines[:first]) + "\n")
    if first < len(lines):
        # blank the starting lines so that errors keep the file's line numbers
        events = read_flows("\n" * first + "\n".join(lines[first:]))
        for kind, x in events:
            if kind != "rule":
                raise ConfigError(f"a flow line in the rules file ({x.text()}): flows "
                                  "belong in --flows")
        if timed is None:
            raise ConfigError("timed rules (@SECONDS) are only used with flows "
                              "(not with --table or --against)", line=first + 1)
        timed.extend(events)
    return cfg


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
            out.write(f"{f.text()} -> {dest_text(d)}\n")


def run_table(cfg, key, as_json, out, summary=False):
    svc = cfg.services.get(key)
    if svc is None:
        raise ConfigError(f"no service {PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])} "
                          "in the rules")
    table = table_of(svc)
    names = [None if e is None else format_endpoint(*e) for e in table]
    share = slot_share(svc, names)
    if as_json:
        json.dump({"service": f"{PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])}",
                   "scheduler": svc.sched_name, "size": len(table),
                   "slots": dict(share), "table": names}, out)
        out.write("\n")
        return
    if summary:
        for name, (weight, n) in share.items():
            out.write(f"{name:<30} weight {weight:<6} slots {n:>7} "
                      f"({100.0 * n / len(table):.2f}%)\n")
        return
    for i, name in enumerate(names):
        out.write(f"{i} {'-' if name is None else name}\n")


def slot_share(svc, names):
    """{real server (or '-' for empty slots): (weight, slots)} in the
    service's destination order, for --table --summary and --json."""
    share = {format_endpoint(d.addr, d.port): [d.weight, 0] for d in svc.dests}
    for name in names:
        share.setdefault(name or "-", [0, 0])[1] += 1
    return {k: tuple(v) for k, v in share.items()}


# ------------------------------------------------------------------- main

def _parser():
    p = argparse.ArgumentParser(
        prog="userlb simulate",
        description="Offline: which real server gets each flow, the scheduler's "
                    "lookup table, or the disruption between two rule sets.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rules", metavar="FILE",
                     help="ipvsadm commands (ipvsadm -R syntax)")
    src.add_argument("--control", metavar="SOCK",
                     help="the running director's configuration, read over its control "
                          "socket: `-S -n` plus what -S cannot carry (last weights, "
                          "--set timeouts, mhs unstable slots and their timers)")
    p.add_argument("--flows", metavar="FILE", default=None,
                   help="flows `PROTO CLIENT:PORT VIP:VPORT`, one per line "
                        "('-' = stdin, the default)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--table", metavar="VIP:VPORT", help="print the lookup table of this service")
    p.add_argument("--summary", action="store_true",
                   help="with --table: slots per real server instead of the slot list")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp",
                   help="protocol of the --table service (default tcp)")
    p.add_argument("--against", metavar="FILE2",
                   help="compare with a second rule set (slots and flows that move)")
    return p


def _state_from_director(sock, cfg, now):
    """Give cfg what `-S` cannot carry, read with the control socket's
    `state` request: the destinations' last weights (mh builds its table
    from them), the `--set` timeouts, and each mhs service's unstable slots
    with the time they have left (docs/mhs-spec.md), at `now` of cfg's
    clock."""
    from ..control import protocol as P
    from ..model import Dest
    resp = P.request(sock, {"state": True})
    if not resp.get("ok"):
        raise ConfigError(resp.get("error") or "refused")
    state = json.loads(resp["output"])
    timeouts = state.get("timeouts")
    if timeouts:
        cfg.apply(["--set", *(str(t) for t in timeouts)])
    for proto, vip, rip, last in state["dests"]:
        _af, vaddr, vport = parse_endpoint(vip)
        _af, raddr, rport = parse_endpoint(rip)
        svc = cfg.services.get((PROTO_BY_NAME[proto], vaddr, vport))
        d = svc.find_dest(raddr, rport) if svc is not None else None
        if d is not None and d.last_weight != last:
            d.last_weight = last
            svc.sched.upd_dest(d)
    for proto, vip, forwarded, slots in state.get("mhs", []):
        _af, vaddr, vport = parse_endpoint(vip)
        svc = cfg.services.get((PROTO_BY_NAME[proto], vaddr, vport))
        if svc is None or not hasattr(svc.sched, "restore_unstable"):
            continue
        svc.forwarded = bool(forwarded)

        def dest_of(key, svc=svc):
            # a removed backend the old table still names: a stand-in Dest
            d = svc.find_dest(*key)
            if d is None:
                d = Dest(key[0], key[1], 0)
                d.available = False
            return d
        rows = []
        for slot, rip, left in slots:
            key = None
            if rip is not None:
                _af, raddr, rport = parse_endpoint(rip)
                key = (raddr, rport)
            rows.append((slot, key, left))
        svc.sched.restore_unstable(rows, now, dest_of)


def _rules_from_director(sock):
    """`-S -n` of the director at `sock`, in a temporary file (removed at exit)."""
    import atexit
    import os
    import tempfile

    from ..control import protocol as P
    try:
        resp = P.request(sock, {"argv": ["-S", "-n"]})
    except P.NoDirector:
        raise ConfigError("no director listens there") from None
    except P.ProtocolError as e:
        raise ConfigError(str(e)) from None
    if not resp.get("ok"):
        raise ConfigError(resp.get("error") or "refused")
    fd, path = tempfile.mkstemp(prefix="userlb-simulate-", suffix=".rules")
    with os.fdopen(fd, "w") as fh:
        fh.write(resp.get("output", ""))
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path


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
    if args.control:
        try:
            args.rules = _rules_from_director(args.control)
        except (ConfigError, OSError) as e:
            err.write(f"userlb simulate: --control {args.control}: {e}\n")
            return 1
    where = args.rules
    clock = ManualClock(0.0)
    try:
        timed_rules = [] if not (args.table or args.against) else None
        cfg = load_config(args.rules, clock, timed_rules)
        if args.control:
            _state_from_director(args.control, cfg, clock.now())
        if args.table:
            where = "--table"
            try:
                _af, vaddr, vport = _table_endpoint(args.table)
            except ConfigError as e:
                raise ConfigError(f"bad --table {args.table!r}: {e.message}") from None
            run_table(cfg, (PROTO_BY_NAME[args.proto], vaddr, vport), args.json, out,
                      summary=args.summary)
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
        if args.flows in (None, "-") and stdin.isatty():
            err.write("userlb simulate: reading flows from the terminal, one per line "
                      "(PROTO CLIENT:PORT VIP:VPORT, e.g. tcp 10.0.0.1:40000 10.99.0.1:80); "
                      "end with Ctrl-D.  --flows FILE reads a file, --table VIP:PORT prints a "
                      "table.\n")
            err.flush()
        events = read_flows(_read(args.flows, stdin))
        if timed_rules:
            # the rules file's timed rules first: at equal times they apply
            # before the flows file's own rules (TimedRun keeps input order)
            events = timed_rules + events
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
