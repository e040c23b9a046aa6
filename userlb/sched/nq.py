# Deliberate twin of the kernel's ip_vs_nq.c, kept line for line like sed, wlc, lc: not factored.
"""`nq`: never queue (kernel ip_vs_nq).

Walking the list, skipping overloaded and weight-0 destinations: the first
one with no active connection is returned at once; otherwise the sed choice
(overhead activeconns + 1, smallest overhead/weight by cross-multiplication,
ties to the earlier one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class NQScheduler(Scheduler):
    name = "nq"

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        least = None
        loh = lw = 0
        for d in self.svc.dests:
            if d.overloaded or d.weight == 0:
                continue
            if d.activeconns == 0:
                return d
            doh = d.activeconns + 1
            if least is None or loh * d.weight > doh * lw:
                least = d
                loh = doh
                lw = d.weight
        return least
