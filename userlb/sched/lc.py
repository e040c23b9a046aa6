# Deliberate twin of the kernel's ip_vs_lc.c, kept line for line like wlc, sed, nq: not factored.
"""`lc`: least connections (kernel ip_vs_lc).

Overhead = activeconns * 256 + inactconns; the destination with the smallest
overhead among those not overloaded and with weight != 0 wins; ties go to
the first in list order (strict < while walking the list).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class LCScheduler(Scheduler):
    name = "lc"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        least = None
        loh = 0
        for d in self.svc.dests:
            if d.overloaded or d.weight == 0:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or doh < loh:
                least = d
                loh = doh
        return least
