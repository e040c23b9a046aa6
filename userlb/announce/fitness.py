"""What should be announced, from looks at the director (no I/O).

A `Reading` is one look at the director (userlb/announce/probe.py makes
it): whether it answered and its TUN device is up (else `down` says why),
its VIPs as host prefixes with the services on each, and the services whose
health checks have lost their keepalived quorum.

`Announcer.step(reading)` feeds the counters and returns the prefixes that
should be announced now, with the reason of every prefix that should not:

* the director as a whole: up after `rise` fit readings in a row, down after
  `fall` unfit ones (gone, not answering, TUN device down);
* each VIP: down after `fall` readings in a row with one of its services
  below its quorum or the VIP not routed into the TUN device, up again
  after `rise` readings without.  A VIP seen for
  the first time takes its state from that reading at once, so a VIP added
  with `userlb adm -A` is announced at the next look, and a VIP that is gone
  from the configuration is withdrawn at the next look;
* `also` prefixes (e.g. routes toward the clients that the real servers'
  replies take) follow the director's state alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reading:
    down: str | None = None                 # why the director is not fit (None: fit)
    vips: dict[str, tuple[str, ...]] = field(default_factory=dict)   # prefix -> services
    lost: dict[str, str] = field(default_factory=dict)   # prefix -> a service below quorum
    unrouted: dict[str, str] = field(default_factory=dict)   # prefix -> not into the TUN

    def why_not(self, prefix: str) -> str | None:
        """Why the VIP `prefix` cannot be served, or None."""
        return self.unrouted.get(prefix) or self.lost.get(prefix)


class Counter:
    """Rise/fall hysteresis: `up` changes after `rise` good (or `fall` bad)
    results in a row."""

    def __init__(self, rise: int, fall: int, up: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise, self.fall, self.up, self.run = rise, fall, up, 0

    def feed(self, ok: bool) -> bool:
        """One result; True when `up` changed."""
        if ok == self.up:
            self.run = 0
            return False
        self.run += 1
        if self.run >= (self.rise if ok else self.fall):
            self.up, self.run = ok, 0
            return True
        return False


@dataclass(frozen=True)
class Decision:
    wanted: frozenset[str]          # prefixes to announce now
    why_not: dict[str, str]         # the other known prefixes -> reason
    director_up: bool


class Announcer:
    def __init__(self, rise: int = 3, fall: int = 2, also: tuple[str, ...] = (),
                 immediate: bool = False) -> None:
        """immediate=True: the first reading decides at once (`--once`)."""
        self.rise, self.fall, self.also = rise, fall, tuple(also)
        self.director = Counter(rise, fall)
        self.immediate = immediate
        self.vips: dict[str, Counter] = {}
        self.down_reason = "no look at the director yet"

    def step(self, r: Reading) -> Decision:
        ok = r.down is None
        if self.immediate:
            self.director.up, self.immediate = ok, False
        else:
            self.director.feed(ok)
        if r.down is not None:
            self.down_reason = r.down
        why: dict[str, str] = {}
        wanted: set[str] = set()
        if ok:
            for p in list(self.vips):
                if p not in r.vips:
                    del self.vips[p]            # gone from the configuration
            for p in r.vips:
                good = r.why_not(p) is None
                c = self.vips.get(p)
                if c is None:
                    self.vips[p] = Counter(self.rise, self.fall, up=good)
                else:
                    c.feed(good)
        director_why = None if self.director.up else (
            f"director not fit: {self.down_reason}" if not ok else
            f"director fit for {self.director.run} of the {self.rise} looks it needs")
        if ok is False and self.director.up:
            director_why = None          # still up: `fall` not reached yet
        for p, c in self.vips.items():
            if director_why is not None:
                why[p] = director_why
            elif not c.up:
                why[p] = (f"VIP not fit: {r.why_not(p)}" if r.why_not(p) is not None else
                          f"VIP fit again for {c.run} of the {self.rise} looks it needs")
            else:
                wanted.add(p)
        for p in self.also:
            if director_why is not None:
                why[p] = director_why
            else:
                wanted.add(p)
        return Decision(frozenset(wanted), why, self.director.up)
