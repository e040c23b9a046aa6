# Deliberate twin of the kernel's ip_vs_fo.c, kept line for line like ovf, lc: not factored.
"""`fo`: weighted failover (kernel ip_vs_fo).

The non-overloaded destination with the highest weight (> 0); ties go to
the first in list order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class FOScheduler(Scheduler):
    name = "fo"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        best = None
        hw = 0
        for d in self.svc.dests:
            if not d.overloaded and d.weight > hw:
                best = d
                hw = d.weight
        return best
