"""`sed`: shortest expected delay (kernel ip_vs_sed).

Overhead = activeconns + 1.  Same walk as wlc: the first non-overloaded
destination with weight > 0 is the initial choice; a later non-overloaded
one replaces it when loh * dest.weight > doh * least.weight.
"""
from .base import Scheduler, register


@register
class SEDScheduler(Scheduler):
    name = "sed"

    def schedule(self, caddr, cport):
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
