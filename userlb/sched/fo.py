"""`fo`: weighted failover (kernel ip_vs_fo).

The non-overloaded destination with the highest weight (> 0); ties go to
the first in list order.
"""
from .base import Scheduler, register


@register
class FOScheduler(Scheduler):
    name = "fo"

    def schedule(self, caddr, cport):
        best = None
        hw = 0
        for d in self.svc.dests:
            if not d.overloaded and d.weight > hw:
                best = d
                hw = d.weight
        return best
