"""Shared helpers of tests/sched/test_mhs*.py (no tests here): building
services with model.Service's destination semantics (as the configuration
layer does), expected tables computed independently with maglev.build, key
search, and a TEST-ONLY connection-entry model.

The entry model below (ToyDirector) is a minimal stand-in for the real
engine (rule 8 "entries first", rule 11 entry states, rule 5 "has
forwarded"); userlb/dataplane/engine.py replaces it.  It only knows the
INPUT direction of the IPVS TCP state table and the default timeouts
(docs/ipvs.md §4.2, §4.3).
"""
import ipaddress

from userlb.clock import ManualClock
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, Service
from userlb.sched import maglev
from userlb.sched.hashing import MH_KEY1, mh_hashkey
from userlb.sched.mhs import MHSScheduler


def ip(text):
    a = ipaddress.ip_address(text)
    return int(a) if a.version == 4 else a.packed


A = (ip("10.0.0.1"), 80)
B = (ip("10.0.0.2"), 80)
C = (ip("10.0.0.3"), 80)
D = (ip("10.0.0.4"), 80)
VIP = ip("10.0.0.100")


# ---------------------------------------------------------------- configuration

class Director:
    """One service with an mhs scheduler, configured like `ipvsadm`."""

    def __init__(self, dests=(), t=0.0, flags=0, options=None, timeouts=None,
                 protocol=IPPROTO_TCP, vip=VIP):
        self.clock = ManualClock(t)
        self.svc = Service(protocol, vip, 80, "mhs", flags=flags, options=options)
        self.sched = MHSScheduler(self.svc, self.clock, timeouts=timeouts)
        self.svc.sched = self.sched
        for ep in dests:
            w = 1
            if len(ep) == 3:
                ep, w = ep[:2], ep[2]
            self.add(ep, w)

    @property
    def m(self):
        return self.sched.m

    def at(self, t):
        self.clock.set(t)
        return self

    def add(self, ep, weight=1):
        """ipvsadm -a (kernel order: newest first)."""
        return self.svc.add_dest(ep[0], ep[1], weight)

    def remove(self, ep):
        """ipvsadm -d"""
        d = self.svc.find_dest(*ep)
        self.svc.del_dest(d)
        return d

    def edit(self, ep, weight):
        """ipvsadm -e -w weight"""
        d = self.svc.find_dest(*ep)
        self.svc.edit_dest(d, weight)
        return d


# ---------------------------------------------------------------- expected tables

def canonical(endpoints):
    """Canonical order computed here, independently of mhs.canonical_order."""
    v4 = sorted(e for e in endpoints if isinstance(e[0], int))
    v6 = sorted(e for e in endpoints if not isinstance(e[0], int))
    return v4 + v6


def expected_table(weighted, m=maglev.DEFAULT_SIZE):
    """{endpoint: weight} -> per-slot endpoint or None, with maglev.build over
    the weight > 0 backends in canonical order."""
    eps = canonical([e for e, w in weighted.items() if w > 0])
    t = maglev.build(eps, [weighted[e] for e in eps], m)
    return [eps[j] if j >= 0 else None for j in t]


def slot_of(caddr, cport=0, m=maglev.DEFAULT_SIZE):
    """The mh lookup slot computed directly from the kernel hash (no mhs code)."""
    return mh_hashkey(caddr, cport, MH_KEY1) % m


CLIENT_START = ip("192.168.0.1")


def find_keys(wanted_slots, m=maglev.DEFAULT_SIZE, start=CLIENT_START, limit=400000):
    """Yield (client address, slot) with slot in `wanted_slots`, searching
    client addresses upwards from `start`."""
    wanted = set(wanted_slots)
    for a in range(start, start + limit):
        s = slot_of(a, 0, m)
        if s in wanted:
            yield a, s


def key_where(pred, m=maglev.DEFAULT_SIZE, start=CLIENT_START, exclude_slots=()):
    """First client address whose slot i satisfies pred(i)."""
    for a in range(start, start + 400000):
        s = slot_of(a, 0, m)
        if s not in exclude_slots and pred(s):
            return a, s
    raise AssertionError("no key found")


def ep(dest):
    return None if dest is None else (dest.addr, dest.port)


def eps(dests):
    """[Dest or None] -> [(addr, port) or None]"""
    return [ep(x) for x in dests]


# ---------------------------------------------------------------- TEST-ONLY entry model

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

# docs/ipvs.md §4.2, INPUT rows only (client -> director); None = state NONE.
_STATES = ("NONE", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA")
_IN = {
    "syn": "SR ES ES SR SR SR SR SR SR SR SR",
    "fin": "CL CW SS TW TW TW CL CW LA LI TW",
    "ack": "ES ES SS ES FW TW CL CW CL LI ES",
    "rst": "CL CL CL SR CL CL CL CL LA LI SR",
}
IN_TABLE = {ev: dict(zip(_STATES, row.split(), strict=True)) for ev, row in _IN.items()}
TCP_TIMEOUT = {"NONE": 2, "ES": 900, "SS": 120, "SR": 60, "FW": 120, "TW": 120,
               "CL": 10, "CW": 60, "LA": 30, "LI": 120, "SA": 120}
UDP_TIMEOUT = 300


def tcp_event(flags):
    if flags & RST:
        return "rst"
    if flags & SYN:
        return "syn"
    if flags & FIN:
        return "fin"
    if flags & ACK:
        return "ack"
    return None          # no flag: forces CLOSE


class Entry:
    __slots__ = ("dest", "state", "expires")

    def __init__(self, dest, state, expires):
        self.dest, self.state, self.expires = dest, state, expires


class ToyDirector(Director):
    """TEST-ONLY: Director + a dict of connection entries.  packet() follows
    docs/mhs-spec.md rules 8, 9, 10, 11 and the 'has forwarded' convention."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entries = {}   # (proto, caddr, cport) -> Entry

    def live_entry(self, flow, now):
        e = self.entries.get(flow)
        if e is not None and now < e.expires:
            return e
        return None

    def _advance(self, e, proto, flags, now):
        if proto == IPPROTO_UDP:
            e.expires = now + UDP_TIMEOUT
            return
        ev = tcp_event(flags)
        e.state = IN_TABLE[ev][e.state] if ev else "CL"
        e.expires = now + TCP_TIMEOUT[e.state]

    def packet(self, caddr, cport, flags=ACK, proto=IPPROTO_TCP, now=None):
        """-> (endpoint or None, live entry after the packet?)"""
        if now is None:
            now = self.clock.now()
        else:
            self.clock.set(now)
        flow = (proto, caddr, cport)
        e = self.live_entry(flow, now)
        if e is not None:                                   # rule 8
            self._advance(e, proto, flags, now)
            return ep(e.dest), True
        self.entries.pop(flow, None)
        is_tcp = proto == IPPROTO_TCP
        dest, need = self.sched.schedule_sl(caddr, cport, is_tcp, bool(flags & SYN), now)
        if dest is None:
            return None, False
        self.svc.forwarded = True                           # rule 5 (engine's job)
        if need:                                            # rule 11
            e = self.entries[flow] = Entry(dest, "NONE", now + 3)
            self._advance(e, proto, flags, now)
        return ep(dest), need

    def live_entries(self, now=None):
        now = self.clock.now() if now is None else now
        return sum(1 for e in self.entries.values() if now < e.expires)
