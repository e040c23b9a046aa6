"""Shared helpers of tests/control/test_server*.py and tests/cli/test_adm.py (no
tests here): a control server on its own uvloop loop in a thread (as in
`userlb run`, where the server and the packet path share one loop), with a
Config, a real Engine and a manual clock; `adm(...)` runs the real `userlb
adm` client against it."""
import asyncio
import io
import os
import tempfile
import threading

import uvloop

from userlb.cli import adm as adm_cli
from userlb.clock import ManualClock
from userlb.control.config import Config
from userlb.control.server import ControlServer
from userlb.dataplane.engine import Engine


class ServedDirector:
    """Config + Engine + ControlServer on a uvloop loop in a daemon thread.

    `call(fn)` runs fn() on the loop thread (as the TUN driver's packet
    batches run there) and returns its result; `adm(*words)` runs
    `userlb adm --control PATH words...` and returns (status, stdout, stderr).
    """

    def __init__(self, path=None, sloppy_tcp=False):
        self.dir = tempfile.mkdtemp(prefix="ulb-ctl-")
        self.path = path or os.path.join(self.dir, "control.sock")
        self.now = 1000.0
        self.clock = ManualClock(self.now)
        self.config = Config(clock=self.clock)
        self.engine = Engine(sloppy_tcp=sloppy_tcp)
        self.server = ControlServer(self.path, self.config, self.engine, clock=self._now)
        self.loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _now(self):
        return self.now

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:   # noqa: BLE001 - reported to the test
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def call(self, fn):
        fut = asyncio.run_coroutine_threadsafe(_acall(fn), self.loop)
        return fut.result(10)

    def adm(self, *words, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        rc = adm_cli.main(["--control", self.path] + list(words), stdin=io.StringIO(stdin),
                          stdout=out, stderr=err)
        return rc, out.getvalue(), err.getvalue()

    def ok(self, *words, stdin=""):
        rc, out, err = self.adm(*words, stdin=stdin)
        assert rc == 0, (words, rc, err)
        assert err == ""
        return out

    def packet(self, pkt, now=None):
        """Feed one scapy packet to the engine on the loop thread."""
        from helpers.engine import run
        t = self.now if now is None else now
        return self.call(lambda: run(self.engine, pkt, now=t))

    def close(self):
        if self.loop.is_running():
            self.call(self.server.close)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        try:
            self.loop.close()
        except RuntimeError:
            pass


async def _acall(fn):
    return fn()


def lines(text):
    """Text -> list of lines (the final newline required, as ipvsadm prints)."""
    assert text.endswith("\n"), repr(text)
    return text[:-1].split("\n")
