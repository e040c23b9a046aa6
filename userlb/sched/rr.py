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
from .base import Scheduler, register


@register
class RRScheduler(Scheduler):
    name = "rr"

    def __init__(self, svc, clock=None):
        super().__init__(svc, clock)
        self._cur = None      # Dest the cursor is on, None = list head
        self._pos = -1        # its index in svc.dests (-1 = head)

    def _resync(self):
        cur = self._cur
        if cur is None:
            self._pos = -1
            return
        for i, d in enumerate(self.svc.dests):
            if d is cur:
                self._pos = i
                return
        self._cur, self._pos = None, -1

    def add_dest(self, dest):
        self._resync()

    def upd_dest(self, dest):
        self._resync()

    def del_dest(self, dest):
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

    def schedule(self, caddr, cport):
        dests = self.svc.dests
        n = len(dests)
        cur = self._cur
        pos = self._pos
        if cur is not None and (pos >= n or dests[pos] is not cur):
            self._resync()            # list changed without notification
            cur, pos = self._cur, self._pos
        i = pos
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
