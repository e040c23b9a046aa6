"""Connection entries (IPVS.md §5.1, §5.2), both directions, expiry.

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
(IPVS.md §4.2/§4.4).  No timer per entry: a coarse timing wheel of
one-second buckets (`sweep`) plus the lazy test on lookup.  An entry is
scheduled in one bucket (`Entry.bucket` is that bucket's list); a refreshed
entry found in its bucket is moved to the bucket of its current expiry; a
state change that shortens the expiry re-schedules it at once (stale copies
in older buckets are skipped because `bucket` no longer names them); no
entry waits more than MAX_HOP seconds for its next visit.
"""
from .csum import delta_addr, delta_addr_port
from .nat import plan_in, plan_out
from .tcpstate import IS_ACTIVE

DEAD = -1   # Entry.state of an unlinked entry
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
    every entry (and every stateless forward) of that pair."""
    __slots__ = ("svc", "dest", "proto", "vaddr", "vport", "daddr", "dport",
                 "sd_in", "pp_in", "ipd_in", "l4d_in",
                 "sd_out", "pp_out", "ipd_out", "l4d_out",
                 "plan_in", "plan_out", "sstats", "dstats", "stateless", "okey4")

    def __init__(self, svc, dest, dec_ttl=False):
        self.svc = svc
        self.dest = dest
        self.proto = svc.protocol
        self.vaddr = va = svc.addr
        self.vport = vp = svc.port
        self.daddr = da = dest.addr
        self.dport = dp = dest.port if dest.port else svc.port
        self.sstats = svc.stats
        self.dstats = dest.stats
        self.stateless = bool(getattr(svc.sched, "stateless", False))
        self.plan_in = plan_in(va, vp, da, dp, dec_ttl)
        self.plan_out = plan_out(da, dp, va, vp, dec_ttl)
        self.l4d_in = delta_addr_port(va, vp, da, dp)
        self.l4d_out = delta_addr_port(da, dp, va, vp)
        if type(va) is int:
            # IPv4 fast path (no TTL change): the (saddr << 32 | daddr) word
            # and the (sport << 16 | dport) word move by a constant
            self.ipd_in = delta_addr(va, da)
            self.ipd_out = delta_addr(da, va)
            self.sd_in = da - va
            self.pp_in = dp - vp
            self.sd_out = (va - da) << 32
            self.pp_out = (vp - dp) << 16
            # the reply key without the client: | caddr << 32 | cport
            self.okey4 = self.proto << 96 | da << 64 | dp << 16
        else:
            self.okey4 = 0
            self.ipd_in = self.ipd_out = 0
            self.sd_in = self.pp_in = self.sd_out = self.pp_out = 0


class Entry:
    """One connection (kernel struct ip_vs_conn, masquerading only)."""
    __slots__ = ("ikey", "okey", "xl", "state", "last", "timeout", "bucket")

    def __init__(self, ikey, okey, xl, state, last, timeout):
        self.ikey = ikey
        self.okey = okey
        self.xl = xl
        self.state = state
        self.last = last
        self.timeout = timeout
        self.bucket = None

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


class ConnTable:
    """The connection table: one dict for both directions, a bound on the
    number of entries, and a coarse timing wheel."""

    def __init__(self, max_entries=1_000_000):
        self.map = {}
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

    def unlink(self, e):
        """Remove `e` from the table and release it from its destination's
        ActiveConn/InActConn count (and the overload threshold)."""
        if e.state == DEAD:
            return
        m = self.map
        if m.get(e.ikey) is e:
            del m[e.ikey]
        if m.get(e.okey) is e:
            del m[e.okey]
        self.count -= 1
        d = e.xl.dest
        if IS_ACTIVE[e.state]:
            d.activeconns -= 1
        else:
            d.inactconns -= 1
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
        n = 0
        for s in due:
            lst = wheel.pop(s, None)
            if not lst:
                continue
            for e in lst:
                if e.bucket is not lst:
                    continue          # dead, or re-scheduled elsewhere
                if now >= e.last + e.timeout:
                    self.unlink(e)
                    n += 1
                else:
                    self.schedule(e, s)
        if self._swept is None or upto > self._swept:
            self._swept = upto
        return n

    def live_entries(self, now=None):
        """Each linked entry once (and only live ones if `now` is given)."""
        for k, e in self.map.items():
            if k == e.ikey and (now is None or now < e.last + e.timeout):
                yield e

    def clear(self):
        for e in list(self.live_entries()):
            self.unlink(e)
        self._wheel.clear()
