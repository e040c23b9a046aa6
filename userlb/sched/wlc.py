# Deliberate twin of the kernel's ip_vs_wlc.c, kept line for line like lc, sed, nq: not factored.
"""`wlc`: weighted least connections (kernel ip_vs_wlc), ipvsadm's default.

Overhead = activeconns * 256 + inactconns.  The first destination (list
order) that is not overloaded and has weight > 0 is the initial choice; each
later non-overloaded destination replaces it when loh * dest.weight >
doh * least.weight (overhead/weight compared by cross-multiplication, so
ties keep the earlier one and weight-0 destinations never win).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class WLCScheduler(Scheduler):
    name = "wlc"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        least = None
        loh = lw = 0
        for d in self.svc.dests:
            if d.overloaded:
                continue
            if least is None:
                if d.weight > 0:
                    least = d
                    loh = (d.activeconns << 8) + d.inactconns
                    lw = d.weight
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if loh * d.weight > doh * lw:
                least = d
                loh = doh
                lw = d.weight
        return least
