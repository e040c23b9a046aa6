"""Connection entries (docs/ipvs.md §5.1, §5.2), both directions, expiry.

Theory of operation
-------------------
One dict (`ConnTable.map`) maps the *packet key* of each direction to the
same `Entry` object:

* "in" key: the client's packet as it arrives, (proto, caddr, cport, vaddr,
  vport);
* "out" key: the real server's reply as it arrives, (proto, daddr, dport,
  caddr, cport).

So any TCP/UDP packet is looked up by its own (proto, saddr, sport, daddr,
dport) and the direction is `key == entry.ikey`.  Keys are plain values:

* IPv4: one int, ``proto << 96 | saddr << 64 | daddr << 32 | sport << 16 |
  dport`` (`key4`) -- 40 bytes, where a 5-tuple costs 80 plus its items; the
  engine builds it from the two 64/32-bit words it unpacks anyway;
* IPv6: the tuple ``(proto, saddr, sport, daddr, dport)`` (`key6`) -- the
  packet parser's own flow slice.

An int and a tuple never compare equal, so both families share the dict.

Everything that depends only on (service, destination) -- addresses, ports,
checksum deltas, the NAT plans, the stats objects -- lives in one shared
`Xlate` object per (service, destination) pair; an entry holds its keys, its
Xlate, its state and its timer.  Expiry: an entry is live while ``now < last
+ timeout``; `timeout` is re-read from the timeout table on every packet
(docs/ipvs.md §4.2/§4.4).  No timer per entry: a coarse timing wheel of
one-second buckets (`sweep`) plus the lazy test on lookup.  An entry is
scheduled in one bucket (`Entry.bucket` is that bucket's list); a refreshed
entry found in its bucket is moved to the bucket of its current expiry; a
state change that shortens the expiry re-schedules it at once (stale copies
in older buckets are skipped because `bucket` no longer names them); no
entry waits more than MAX_HOP seconds for its next visit.

Persistence templates (docs/ipvs.md §1.8, §4.3, §5.1, §7)
-----------------------------------------------------
A `Template` (kernel: a connection with IP_VS_CONN_F_TEMPLATE) is an entry
without packet keys: it binds (protocol, masked client address, VIP, vport)
-- `tpl_key`, cport 0 -- to a destination.  Templates live in their own dict
(`ConnTable.tpl`; no packet ever looks there, so the packet path is
unchanged), share the timing wheel, count in `count` (so in `max_entries`)
and in the destination's `persistconns` (not in ActiveConn/InActConn).  A
connection created through a template points at it (`Entry.control`) and the
template counts it (`n_control`); unlinking the connection releases it.  A
template that still controls connections when its timer runs out is retried
60 s later (`RETRY`; its timeout becomes 60 s for good, as in the kernel)
instead of expiring.  `detach` takes an invalid template (its destination
is gone) out of the lookup dict -- the kernel re-hashes it under vport
0xffff -- where it lives on, unrefreshed, until it expires: it is then
stored under its own object as key (an Entry never equals a lookup key).
"""
from typing import NamedTuple

from ..model import Stats
from . import xmit
from .proto import PROTOCOLS
from .tcpstate import IS_ACTIVE

DEAD = -1   # Entry.state of an unlinked entry
#: Template.state values (kernel IP_VS_CTPL_S_*): NONE, then ASSURED once a
#: controlled TCP connection reached ESTABLISHED
TPL_NONE = 0
TPL_ASSURED = 1
TPL_STATE_NAMES = ("NONE", "ASSURED")
#: a template that still controls connections is retried this much later
RETRY = 60
#: an entry is revisited by the sweep at least every MAX_HOP seconds, so that
#: a timeout shortened by `ipvsadm --set` (applied at the entry's next packet
#: without re-scheduling it) is swept at most MAX_HOP seconds late
MAX_HOP = 64


def key4(proto, saddr, sport, daddr, dport):
    return proto << 96 | saddr << 64 | daddr << 32 | sport << 16 | dport


def key6(proto, saddr, sport, daddr, dport):
    return (proto, saddr, sport, daddr, dport)


def make_key(proto, saddr, sport, daddr, dport):
    if type(saddr) is int:
        return proto << 96 | saddr << 64 | daddr << 32 | sport << 16 | dport
    return (proto, saddr, sport, daddr, dport)


def split_key(key):
    """(proto, saddr, sport, daddr, dport) of a key."""
    if type(key) is int:
        return (key >> 96, (key >> 64) & 0xFFFFFFFF, (key >> 16) & 0xFFFF,
                (key >> 32) & 0xFFFFFFFF, key & 0xFFFF)
    return key


class Xlate:
    """The translation between one service and one destination, shared by
    every entry (and every stateless forward) of that pair: addresses and
    ports, the forwarding method (`fwd`, an xmit module) with what it
    precomputed (plans, the IPv4 fast path's words), and the Stats objects a
    packet of the pair counts in (`counted`: destination, service and the
    engine's global Stats -- a private one if none is given)."""
    __slots__ = ("svc", "dest", "proto", "vaddr", "vport", "daddr", "dport", "fwd",
                 "plan_in", "plan_out", "fast_in", "fast_out", "counted",
                 "sstats", "dstats", "stateless", "okey4", "in_only", "sig")

    def __init__(self, svc, dest, dec_ttl=False, gstats=None):
        self.svc = svc
        self.dest = dest
        self.proto = svc.protocol
        self.vaddr = svc.addr
        self.vport = svc.port
        self.daddr = da = dest.addr
        self.dport = dp = dest.port if dest.port else svc.port
        self.sstats = svc.stats
        self.dstats = dest.stats
        self.counted = (dest.stats, svc.stats, Stats() if gstats is None else gstats)
        sched = svc.sched
        self.stateless = sched is not None and sched.stateless
        # client -> server packets move by the protocol's INPUT rows; a method
        # whose replies bypass the director sets this for its INPUT-ONLY rows
        self.in_only = False
        self.sig = (dest.fwd, dest.tun)     # a change of these needs a new Xlate
        self.fwd = xmit.method(dest)
        self.fwd.prepare(self, dec_ttl)
        # IPv4: the reply key without the client (| caddr << 32 | cport)
        self.okey4 = self.proto << 96 | da << 64 | dp << 16 if type(da) is int else 0


class Entry:
    """One connection (kernel struct ip_vs_conn, masquerading only).
    `control`: the persistence Template it was created through, or None."""
    __slots__ = ("ikey", "okey", "xl", "state", "last", "timeout", "bucket", "control")

    def __init__(self, ikey, okey, xl, state, last, timeout):
        self.ikey = ikey
        self.okey = okey
        self.xl = xl
        self.state = state
        self.last = last
        self.timeout = timeout
        self.bucket = None
        self.control = None

    @property
    def expires(self):
        return self.last + self.timeout

    def flow(self):
        """(proto, caddr, cport, vaddr, vport) of the client side."""
        return split_key(self.ikey)

    def __repr__(self):
        p, ca, cp, va, vp = split_key(self.ikey)
        return (f"Entry(proto={p} c={ca}:{cp} v={va}:{vp} d={self.xl.daddr}:{self.xl.dport}"
                f" state={self.state} expires={self.expires})")


class Template(Entry):
    """A persistence template: `ikey` is its `tpl_key`, `okey` None, `xl` the
    (service, destination) it binds to, `state` TPL_NONE / TPL_ASSURED,
    `n_control` the number of linked connections created through it,
    `detached` True once invalidated (no longer found by lookups)."""
    __slots__ = ("n_control", "detached")

    def __init__(self, key, xl, last, timeout):
        Entry.__init__(self, key, None, xl, TPL_NONE, last, timeout)
        self.n_control = 0
        self.detached = False

    def __repr__(self):
        p, ca, _, va, vp = split_key(self.ikey)
        return (f"Template(proto={p} c={ca} v={va}:{vp} d={self.xl.daddr}:{self.xl.dport}"
                f" n_control={self.n_control} expires={self.expires})")


def tpl_key(proto, caddr, vaddr, vport):
    """The lookup key of a template: the key of (proto, caddr, 0, vaddr,
    vport), caddr already masked."""
    return make_key(proto, caddr, 0, vaddr, vport)


def mask6(addr, plen):
    """The first `plen` bits of a 16-byte IPv6 address, the rest zeroed."""
    if plen >= 128:
        return addr
    n = int.from_bytes(addr, "big") >> (128 - plen) << (128 - plen)
    return n.to_bytes(16, "big")


def retry_expiry(t, now):
    """When a template's timer, run out at or before `now` while it still
    controls connections, fires next: its expiry plus a whole number of
    RETRY periods, after `now`."""
    x = t.last + t.timeout
    return x + ((now - x) // RETRY + 1) * RETRY


class EntryRow(NamedTuple):
    """One line of ``ipvsadm -L -c`` (``ConnTable.rows``)."""
    proto: int
    caddr: object       # int (IPv4) or 16 bytes (IPv6); masked for a template
    cport: int
    vaddr: object
    vport: int
    daddr: object
    dport: int
    state: str
    expires: float


class ConnTable:
    """The connection table: one dict for both directions, a bound on the
    number of entries, and a coarse timing wheel."""

    def __init__(self, max_entries=1_000_000):
        self.map = {}
        self.tpl = {}         # tpl_key -> Template (a detached one: itself -> itself)
        self.count = 0
        self.max_entries = max_entries
        self._wheel = {}      # int second -> [Entry, ...]
        self._swept = None    # last second swept

    def __len__(self):
        return self.count

    def full(self):
        return self.count >= self.max_entries

    def schedule(self, e, now=None):
        """(Re)place `e` in the bucket of its current expiry, or MAX_HOP
        seconds after `now` (default: its last packet) if that is sooner."""
        x = e.last + e.timeout
        b = int(x)
        if b < x:
            b += 1                # ceil: swept at the first second >= expiry
        h = int(e.last if now is None else now) + MAX_HOP
        if b > h:
            b = h                 # revisit long-lived entries now and then
        sw = self._swept
        if sw is not None and b <= sw:
            b = sw + 1            # never into a bucket already swept
        lst = self._wheel.get(b)
        if lst is None:
            lst = self._wheel[b] = []
        lst.append(e)
        e.bucket = lst

    def add(self, e):
        """Link a new entry (the caller checked `full()` and accounted the
        destination).  An older entry owning either key loses it."""
        m = self.map
        m[e.ikey] = e
        m[e.okey] = e
        self.count += 1
        self.schedule(e)

    def add_template(self, t):
        """Link a new template (the caller checked the room and accounted
        `persistconns`).  An older template under the same key loses it."""
        old = self.tpl.get(t.ikey)
        if old is not None:
            self.detach(old)
        self.tpl[t.ikey] = t
        self.count += 1
        self.schedule(t)

    def template(self, key, now):
        """The template under `key` that is live at `now`, or None.  One whose
        timer ran out is unlinked, or retried if it controls connections."""
        t = self.tpl.get(key)
        if t is not None and now >= t.last + t.timeout:
            if not t.n_control:
                self.unlink(t)
                return None
            self.retry(t, now)
        return t

    def retry(self, t, now):
        """The kernel's "expire later": the timer of a template that still
        controls connections runs RETRY seconds more (timeout stays RETRY)."""
        x = retry_expiry(t, now)
        t.timeout = RETRY
        t.last = x - RETRY

    def detach(self, t):
        """Invalidate a template: no lookup finds it any more; it stays linked
        (and keeps its connections) until it expires."""
        if t.detached:
            return
        if self.tpl.get(t.ikey) is t:
            del self.tpl[t.ikey]
        t.detached = True
        self.tpl[t] = t

    def unlink(self, e):
        """Remove `e` from the table and release it from its destination's
        ActiveConn/InActConn count -- PersistConn for a template -- (and the
        overload threshold), and from its controlling template."""
        if e.state == DEAD:
            return
        d = e.xl.dest
        if e.okey is None:                       # a Template
            m = self.tpl
            k = e if e.detached else e.ikey
            if m.get(k) is e:
                del m[k]
            d.persistconns -= 1
        else:
            m = self.map
            if m.get(e.ikey) is e:
                del m[e.ikey]
            if m.get(e.okey) is e:
                del m[e.okey]
            if IS_ACTIVE[e.state]:
                d.activeconns -= 1
            else:
                d.inactconns -= 1
            c = e.control
            if c is not None:
                c.n_control -= 1
        self.count -= 1
        d.conn_unbound()
        e.state = DEAD
        e.bucket = None

    def sweep(self, now):
        """Unlink every entry expired at `now` that sits in a due bucket.
        Returns the number of entries unlinked."""
        wheel = self._wheel
        if not wheel:
            self._swept = int(now)
            return 0
        upto = int(now)
        start = self._swept
        if start is None:
            start = min(wheel) - 1
        if upto - start > len(wheel):
            due = sorted(k for k in wheel if k <= upto)
        else:
            due = range(start + 1, upto + 1)
        if self._swept is None or upto > self._swept:
            self._swept = upto    # before re-scheduling: never into a bucket <= upto
        n = 0
        for s in due:
            lst = wheel.pop(s, None)
            if not lst:
                continue
            for e in lst:
                if e.bucket is not lst:
                    continue          # dead, or re-scheduled elsewhere
                if now >= e.last + e.timeout:
                    if e.okey is None and e.n_control:
                        self.retry(e, now)        # a template still in use
                        self.schedule(e, s)
                    else:
                        self.unlink(e)
                        n += 1
                else:
                    self.schedule(e, s)
        return n

    def live_entries(self, now=None):
        """Each linked entry once, connections then templates (and only live
        ones if `now` is given: a template that controls connections is live
        even past its timer, which the next sweep re-arms)."""
        for k, e in self.map.items():
            if k == e.ikey and (now is None or now < e.last + e.timeout):
                yield e
        yield from self.live_templates(now)

    def rows(self, now=None):
        """Live entries as EntryRow: connections, then persistence templates
        as the kernel lists them: masked client address, cport 0, state NONE
        or ASSURED (a detached one: vport and dport 65535; a port-21
        service's: vport and dport 0)."""
        out = []
        for e in self.live_entries(now):
            p, ca, cp, va, vp = split_key(e.ikey)
            xl = e.xl
            exp = e.last + e.timeout
            if e.okey is not None:
                name = PROTOCOLS[p].state_name(e.state)
                out.append(EntryRow(p, ca, cp, va, vp, xl.daddr, xl.dport, name, exp))
                continue
            if now is not None and now >= exp:
                exp = retry_expiry(e, now)          # still controlling: due for a retry
            if e.detached:
                vp = dp = 0xFFFF
            else:
                dp = xl.dport if vp else 0
            out.append(EntryRow(p, ca, 0, va, vp, xl.daddr, dp, TPL_STATE_NAMES[e.state], exp))
        return out

    def live_templates(self, now=None):
        for t in self.tpl.values():
            if now is None or now < t.last + t.timeout or t.n_control:
                yield t

    def clear(self):
        for e in list(self.live_entries()):
            self.unlink(e)
        self._wheel.clear()
