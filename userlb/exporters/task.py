"""The exporters' periodic task inside `userlb run` (--procfs, --metrics).

Once a second, on the event loop: take a Snapshot, write the procfs files if
asked, publish the snapshot to the metrics endpoint.  Nothing is added to the
packet path; the cost is one walk over services and destinations per second.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Any

from . import snapshot as snap_mod


class Exporters:
    def __init__(self, director, procfs_dir: str | None = None, metrics: str | None = None,
                 interval: float = 1.0):
        self.director = director
        self.procfs_dir = procfs_dir
        self.metrics = metrics
        self.interval = interval
        self.latest: snap_mod.Snapshot | None = None
        self.writer: Any = None
        self.http: Any = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def take(self) -> snap_mod.Snapshot:
        d = self.director
        return snap_mod.take(d.cfg, getattr(d, "engine", None), getattr(d, "driver", None),
                             conns=self.writer is not None)

    def start(self, loop: asyncio.AbstractEventLoop) -> list[str]:
        """-> lines saying where things are served/written.  Raises OSError /
        ValueError when the directory or the address cannot be used."""
        self._loop = loop
        said = []
        if self.procfs_dir:
            from .procfs import ProcfsWriter
            self.writer = ProcfsWriter(self.procfs_dir)
            self.writer.prepare()
            said.append(f"procfs {self.procfs_dir}/net/ip_vs")
        self.tick()
        if self.metrics:
            from .prometheus import serve
            self.http = serve(self.metrics, lambda: self.latest)
            said.append(f"metrics http://{self.metrics}/metrics")
        return said

    def tick(self) -> None:
        try:
            self.latest = self.take()
            if self.writer is not None:
                self.writer.write(self.latest)
        except Exception as e:   # noqa: BLE001 - reported, the director keeps running
            print(f"userlb run: exporters: {e}", file=sys.stderr, flush=True)
        if self._loop is not None:
            self._handle = self._loop.call_later(self.interval, self.tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None
        if self.http is not None:
            server, thread = self.http
            server.shutdown()
            server.server_close()
            self.http = None
        if self.writer is not None:
            self.writer.remove()
            self.writer = None
