"""Say so when the connection table is full.

When the engine holds `max_entries` entries it refuses every new connection
and counts the packet under the drop reason `conn_limit` (docs/ipvs.md §5.1
describes the kernel's table; userlb bounds it by a number of entries).  The
count alone is easy to miss, so the director logs one line while it keeps
happening, at most once per `interval` seconds: how many new connections
were refused since the last line, and the limit.  Called from a periodic
timer of the driver with the time; no I/O but the log callback.
"""
from __future__ import annotations

from collections.abc import Callable

from ..dataplane.verdict import R_CONN_LIMIT
from .engine_sync import EngineControl


class TableWatch:
    """check(now) logs (and returns) a line when `conn_limit` drops grew since
    the last line and at least `interval` seconds have passed since it."""

    def __init__(self, engine: EngineControl, log: Callable[[str], None],
                 interval: float = 10.0) -> None:
        self.engine = engine
        self.log = log
        self.interval = interval
        self._reported = engine.drops.get(R_CONN_LIMIT, 0)
        self._last: float | None = None

    def check(self, now: float) -> str | None:
        drops = self.engine.drops.get(R_CONN_LIMIT, 0)
        if drops <= self._reported:
            return None
        if self._last is not None and now - self._last < self.interval:
            return None
        since = "" if self._last is None else f" in the last {now - self._last:.0f} s"
        line = (f"connection table full ({len(self.engine)} of max_entries "
                f"{self.engine.max_entries}): {drops - self._reported} new connection(s) "
                f"refused{since} (drop reason conn_limit; raise it with "
                f"`userlb adm --max-entries N`)")
        self._reported, self._last = drops, now
        self.log(line)
        return line
