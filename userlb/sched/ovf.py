# Deliberate twin of the kernel's ip_vs_ovf.c, kept line for line like fo, lc: not factored.
"""`ovf`: weighted overflow (kernel ip_vs_ovf).

Among destinations that are not overloaded, have weight > 0 and whose
activeconns does not exceed their weight (the kernel skips a destination
only when activeconns > weight, so activeconns == weight still qualifies),
the one with the highest weight; ties go to the first in list order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class OVFScheduler(Scheduler):
    name = "ovf"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        best = None
        hw = 0
        for d in self.svc.dests:
            w = d.weight
            if d.overloaded or d.activeconns > w or w == 0:
                continue
            if best is None or w > hw:
                best = d
                hw = w
        return best
