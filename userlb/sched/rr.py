"""`rr`: round robin (kernel ip_vs_rr).

The kernel keeps a cursor on the destination list (the list head at first,
then the last destination chosen).  schedule() walks circularly from the
entry after the cursor, the cursor itself last, and takes the first
available destination (current weight > 0 and not overloaded).  From the
head the walk is one pass over the list.  When the cursor's destination is
deleted the cursor moves to its predecessor (the head if it was first).
Adding a destination (at the list head) does not move the cursor; it is
reached when the walk wraps.  Editing does not touch the cursor.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import CursorScheduler, register

if TYPE_CHECKING:
    from ..model import Addr, Dest


@register
class RRScheduler(CursorScheduler):
    name = "rr"

    def add_dest(self, dest: Dest) -> None:
        self._resync()

    def upd_dest(self, dest: Dest) -> None:
        self._resync()

    def del_dest(self, dest: Dest) -> None:
        if self._cur is dest:
            # _pos was its index before removal: the predecessor is at _pos-1
            pos = self._pos - 1
            dests = self.svc.dests
            if 0 <= pos < len(dests):
                self._cur, self._pos = dests[pos], pos
            else:
                self._cur, self._pos = None, -1
        else:
            self._resync()

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        cur = self._cur
        i = self._pos
        dests = self.svc.dests
        n = len(dests)
        if cur is not None and (i >= n or dests[i] is not cur):
            i = self._resync()            # list changed without notification
        left = n
        while left:
            left -= 1
            i += 1
            if i == n:
                i = 0
            d = dests[i]
            if d.weight > 0 and not d.overloaded:
                self._cur = d
                self._pos = i
                return d
        return None
