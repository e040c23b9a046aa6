"""Statistics outside the hot path (docs/ipvs.md §7).

The packet path only increments plain counters (`model.Stats` on services,
destinations and the engine's global object; `Engine.drops` per drop
reason).  This module derives what ipvsadm shows from them:

* `Estimator`: the kernel's 2-second rate estimator for one Stats object,
  exactly the kernel's fixed-point EWMA (weight 1/4):
  ``est_cps += ((d << 9) - est_cps) >> 2`` (same for inpps/outpps),
  ``est_bps += ((d << 4) - est_bps) >> 2`` and the reported rates
  ``(est + 0x1FF) >> 10`` resp. ``(est + 0xF) >> 5``, where ``d`` is the
  counter increase over the last 2 seconds.
* `RateEstimators`: the set of estimators, driven by `tick(now)` from the
  driver's periodic timer (every second is fine: it acts every 2 s).
* `Zero`: -Z as a snapshot (reads return counter - snapshot), for callers
  that must not touch the live counters.  `config.zero()` instead resets the
  counters in place; an estimator notices that (a counter went down) and
  restarts from the new values, and `RateEstimators.reset(stats)` resets it
  explicitly.
"""
from ..model import Stats

EST_INTERVAL = 2.0

_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


class Estimator:
    """Rate estimator for one `model.Stats` object (kernel ip_vs_est.c)."""
    __slots__ = ("stats", "last", "cps", "inpps", "outpps", "inbps", "outbps")

    def __init__(self, stats):
        self.stats = stats
        self.reset()

    def reset(self):
        """Rates to 0, current counters as the new base (-Z)."""
        self.last = self.stats.as_tuple()
        self.cps = self.inpps = self.outpps = self.inbps = self.outbps = 0

    def update(self):
        """One 2-second estimation step."""
        cur = self.stats.as_tuple()
        last = self.last
        self.last = cur
        if any(c < p for c, p in zip(cur, last, strict=True)):
            # counters were zeroed in place: start over from them
            self.cps = self.inpps = self.outpps = self.inbps = self.outbps = 0
            return
        # per 2 s -> per second: the kernel scales d << 9 over a 2 s period
        # so that (est + 0x1FF) >> 10 is the per-second rate
        self.cps += (((cur[0] - last[0]) << 9) - self.cps) >> 2
        self.inpps += (((cur[1] - last[1]) << 9) - self.inpps) >> 2
        self.outpps += (((cur[2] - last[2]) << 9) - self.outpps) >> 2
        self.inbps += (((cur[3] - last[3]) << 4) - self.inbps) >> 2
        self.outbps += (((cur[4] - last[4]) << 4) - self.outbps) >> 2

    def rates(self):
        """(cps, inpps, outpps, inbps, outbps) per second, as ipvsadm shows them."""
        return ((self.cps + 0x1FF) >> 10, (self.inpps + 0x1FF) >> 10,
                (self.outpps + 0x1FF) >> 10, (self.inbps + 0xF) >> 5,
                (self.outbps + 0xF) >> 5)


class RateEstimators:
    """Estimators for a set of Stats objects, stepped every 2 s of `now`."""

    def __init__(self, interval=EST_INTERVAL):
        self.interval = interval
        self._est = {}          # id(stats) -> Estimator
        self._next = None

    def track(self, stats):
        e = self._est.get(id(stats))
        if e is None or e.stats is not stats:
            e = self._est[id(stats)] = Estimator(stats)
        return e

    def untrack(self, stats):
        e = self._est.get(id(stats))
        if e is not None and e.stats is stats:
            del self._est[id(stats)]

    def retain(self, stats_objects):
        """Keep estimators only for `stats_objects` (adding missing ones)."""
        keep = {}
        for s in stats_objects:
            keep[id(s)] = self.track(s)
        self._est = keep

    def get(self, stats):
        e = self._est.get(id(stats))
        return e if e is not None and e.stats is stats else None

    def rates(self, stats):
        e = self.get(stats)
        return e.rates() if e is not None else (0, 0, 0, 0, 0)

    def reset(self, stats=None):
        if stats is None:
            for e in self._est.values():
                e.reset()
        else:
            e = self.get(stats)
            if e is not None:
                e.reset()

    def tick(self, now):
        """Run the estimation steps due at `now` (at most one per call even if
        the caller was late, like the kernel's timer).  Returns True if a step ran."""
        if self._next is None:
            self._next = now + self.interval
            return False
        if now < self._next:
            return False
        self._next += self.interval
        if self._next <= now:
            self._next = now + self.interval
        for e in self._est.values():
            e.update()
        return True


class Zero:
    """-Z by snapshot: `zero(stats)` remembers the counters; `read(stats)`
    returns a Stats with counter - snapshot."""

    def __init__(self):
        self._snap = {}

    def zero(self, stats):
        self._snap[id(stats)] = (stats, stats.as_tuple())

    def read(self, stats):
        out = Stats()
        s = self._snap.get(id(stats))
        base = s[1] if s is not None and s[0] is stats else (0, 0, 0, 0, 0)
        for f, cur, b in zip(_FIELDS, stats.as_tuple(), base, strict=True):
            setattr(out, f, cur - b)
        return out
