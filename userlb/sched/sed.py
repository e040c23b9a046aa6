# Deliberate twin of the kernel's ip_vs_sed.c, kept line for line like wlc, nq, lc: not factored.
"""`sed`: shortest expected delay (kernel ip_vs_sed).

Overhead = activeconns + 1.  Same walk as wlc: the first non-overloaded
destination with weight > 0 is the initial choice; a later non-overloaded
one replaces it when loh * dest.weight > doh * least.weight.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class SEDScheduler(Scheduler):
    name = "sed"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        least = None
        loh = lw = 0
        for d in self.svc.dests:
            if d.overloaded:
                continue
            if least is None:
                if d.weight > 0:
                    least = d
                    loh = d.activeconns + 1
                    lw = d.weight
                continue
            doh = d.activeconns + 1
            if loh * d.weight > doh * lw:
                least = d
                loh = doh
                lw = d.weight
        return least
