"""`wrr`: weighted round robin (kernel ip_vs_wrr).

State (the kernel's "mark"): cursor cl (list head or a destination), current
weight cw, max weight mw = max(weight) - (di - 1) and step di = gcd of the
positive weights (1 if none).  schedule() continues after the cursor and
takes the first destination that is not overloaded and whose current weight
>= cw; at the end of the list cw -= di, wrapping to mw when it drops to 0 or
below.  The kernel's termination rules are kept: after a full descent to
cw <= di ("last pass", checking weight >= 1) without a hit, or when the walk
started from the head, it answers None (all overloaded), leaving the cursor
where the walk stopped.  mw == 0 (all weights 0) -> None at once.

Any add/del/upd resets the cursor to the head and recomputes di and mw; cw
is kept if still valid (cw is reset to mw when cw > mw or cw == 0, else
rounded to (cw // di) * di + 1 when di > 1), as the kernel does.
"""
from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING

from .base import CursorScheduler, register

if TYPE_CHECKING:
    from ..clock import Clock
    from ..model import Addr, Dest, Service


@register
class WRRScheduler(CursorScheduler):
    name = "wrr"

    def __init__(self, svc: Service, clock: Clock | None = None) -> None:
        super().__init__(svc, clock)
        self.di, self.mw = self._weights()
        self.cw = self.mw

    def _weights(self) -> tuple[int, int]:
        g = 0
        mx = 0
        for d in self.svc.dests:
            w = d.weight
            if w > 0:
                g = gcd(g, w)
            if w > mx:
                mx = w
        di = g or 1
        return di, mx - (di - 1)

    def update(self) -> None:
        self._cur, self._pos = None, -1
        self.di, self.mw = self._weights()
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        if self.mw == 0:
            return None
        dests = self.svc.dests
        n = len(dests)
        cur = self._cur
        pos = self._pos
        if cur is not None and (pos >= n or dests[pos] is not cur):
            pos = self._resync()  # list changed without notification
        last = pos                # -1 = head
        stop = -2                 # no stop position
        last_pass = restarted = False
        cw, di, mw = self.cw, self.di, self.mw
        i = pos
        while True:
            i += 1
            while i < n:
                d = dests[i]
                if not d.overloaded and d.weight >= cw:
                    self.cw = cw
                    self._cur, self._pos = d, i
                    return d
                if i == stop:
                    self.cw = cw
                    self._cur, self._pos = d, i
                    return None
                i += 1
            i = -1                # back at the head
            cw -= di
            if cw <= 0:
                cw = mw
                if last_pass or last == -1:
                    self.cw = cw
                    self._cur, self._pos = None, -1
                    return None
                restarted = True
            last_pass = cw <= di
            if last_pass and restarted and last != -1:
                stop = last
