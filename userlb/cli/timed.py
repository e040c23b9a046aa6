"""`userlb simulate` timed mode: rules and packets in time order through the
real data plane (connection entries included); cli/simulate.py describes
the input and the output."""
import json
import struct

from ..control.engine_sync import EngineSync
from ..dataplane.packet import TH_ACK, TH_SYN
from ..model import PROTO_NAMES, addr_af, format_endpoint
from .flows import flags_text


def _fmt_time(t):
    return str(int(t)) if t == int(t) else repr(t)


def build_packet(f):
    """A client -> VIP packet for flow `f` (IPv4 or IPv6, TCP or UDP, valid
    checksums)."""
    from ..dataplane.csum import checksum, pseudo_sum
    payload = b"x" if (f.data or f.proto == 17) else b""
    if f.proto == 6:
        flags = f.flags if f.flags is not None else TH_SYN
        ack = 1 if flags & TH_ACK else 0
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
        self.sync = EngineSync(cfg, self.engine)
        self.sync.push()

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
                self.sync.flush()
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
                        f.flags if f.flags is not None else TH_SYN),
                    "dest": None if d is None else format_endpoint(*d),
                    "entry": e} for f, d, e in results], out, indent=1)
        out.write("\n")
        return
    for f, d, e in results:
        fl = ""
        if f.proto == 6:
            fl = " " + flags_text(f.flags if f.flags is not None else TH_SYN)
        out.write(f"@{_fmt_time(f.time)} {f.text()}{fl} -> "
                  f"{'-' if d is None else format_endpoint(*d)} {'entry' if e else 'noentry'}\n")
