"""`lc`: least connections (kernel ip_vs_lc).

Overhead = activeconns * 256 + inactconns; the destination with the smallest
overhead among those not overloaded and with weight != 0 wins; ties go to
the first in list order (strict < while walking the list).
"""
from .base import Scheduler, register


@register
class LCScheduler(Scheduler):
    name = "lc"

    def schedule(self, caddr, cport):
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
