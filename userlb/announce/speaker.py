"""The loop of `userlb announce`: every `interval` seconds one look at the
director, a decision (fitness.py), and the API lines for what changed.

Each line written to ExaBGP waits for its answer (ExaBGP's `done`/`error`,
exabgp.py) for at most `ack_timeout` seconds:

* `done`: the change is recorded as made;
* `error`: not recorded, logged; the line is sent again at the next look;
* no answer: if ExaBGP never answered anything so far, ACKs are taken to be
  off (`exabgp.api.ack = false`), which is logged once, and lines count as
  made when written; after an answer was seen once, a missing one counts as
  an error and the late answer, when it comes, is skipped;
* `shutdown` or the end of stdin (ExaBGP stopped): the loop ends.

SIGTERM (`stop()`) withdraws what is announced, then ends the loop.
`dry_run` prints the lines without reading answers.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import IO

from . import exabgp as X
from .fitness import Announcer, Reading

Look = Callable[[], Reading]
Log = Callable[[str], None]

EOF_MARK = None


class Speaker:
    def __init__(self, look: Look, out: IO[str], answers: queue.Queue[str | None] | None,
                 announcer: Announcer, interval: float = 1.0, ack: str = "auto",
                 ack_timeout: float = 2.0, attrs: X.Attrs = X.NO_ATTRS,
                 attrs_of: dict[str, X.Attrs] | None = None, next_hop: str = "self",
                 clear: bool = True, log: Log = print,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """answers: lines read from ExaBGP (None at the end of input), or None
        for a dry run.  ack: 'auto', 'on' or 'off'."""
        self.look, self.out, self.answers = look, out, answers
        self.announcer = announcer
        self.interval, self.ack_timeout = interval, ack_timeout
        self.ack = ack
        self.seen_answer = False
        self.late = 0                    # answers still owed to lines that timed out
        self.attrs, self.attrs_of = attrs, attrs_of or {}
        self.next_hop = next_hop
        self.clear = clear
        self.log = log
        self.clock = clock
        self.announced: set[str] = set()   # what ExaBGP confirmed
        self.why: dict[str, str] = {}      # last reason logged per withdrawn prefix
        self.ended = False
        self.stopping = threading.Event()

    # ------------------------------------------------------------ one line
    def send(self, line: str) -> bool:
        """Write one API line; True when it counts as done."""
        if self.ended:
            return False
        self.out.write(line + "\n")
        self.out.flush()
        if self.answers is None or self.ack == "off":
            return True
        deadline = self.clock() + self.ack_timeout
        while True:
            left = deadline - self.clock()
            if left <= 0:
                break
            try:
                got = self.answers.get(timeout=left)
            except queue.Empty:
                break
            if got is EOF_MARK:
                self._end("ExaBGP closed our stdin (it stopped)")
                return False
            a = X.answer(got)
            if a is None:
                continue                  # not an answer (neighbor state, ...)
            if a == X.SHUTDOWN:
                self._end("ExaBGP is shutting down")
                return False
            self.seen_answer = True
            if self.late:
                self.late -= 1
                continue
            if a == X.ERROR:
                self.log(f"ExaBGP answered error to: {line}")
            return a == X.DONE
        if self.ack == "auto" and not self.seen_answer:
            self.ack = "off"
            self.log(f"no answer from ExaBGP within {self.ack_timeout:g}s: taking its "
                     f"ACKs to be off (exabgp.api.ack = false)")
            return True
        self.late += 1
        self.log(f"no answer from ExaBGP within {self.ack_timeout:g}s to: {line}")
        return False

    def _end(self, why: str) -> None:
        if not self.ended:
            self.log(why)
        self.ended = True

    # ------------------------------------------------------------ one look
    def attrs_for(self, pfx: str) -> X.Attrs:
        return self.attrs_of.get(pfx, self.attrs)

    def tick(self) -> None:
        """One look, one decision, the lines for what changed."""
        d = self.announcer.step(self.look())
        for p in sorted(d.wanted - self.announced):
            if self.send(X.announce_line(p, self.attrs_for(p), self.next_hop)):
                self.announced.add(p)
                self.why.pop(p, None)
                self.log(f"announced {p}")
        for p in sorted(self.announced - d.wanted):
            why = d.why_not.get(p, "no longer a VIP of the director")
            if self.send(X.withdraw_line(p, self.next_hop)):
                self.announced.discard(p)
                self.why[p] = why
                self.log(f"withdrew {p}: {why}")
        for p, why in d.why_not.items():
            if p not in self.announced and self.why.get(p) != why:
                self.why[p] = why
                self.log(f"not announcing {p}: {why}")

    def withdraw_all(self) -> None:
        for p in sorted(self.announced):
            if self.send(X.withdraw_line(p, self.next_hop)):
                self.announced.discard(p)
                self.log(f"withdrew {p}: stopping")

    # ------------------------------------------------------------ the loop
    def start(self) -> None:
        if self.clear and self.answers is not None:
            # a previous instance (ExaBGP respawns its processes) may have left
            # routes announced that we know nothing of; ExaBGP answers error
            # while no neighbor is configured for us, which is harmless
            self.send(X.CLEAR)

    def run(self, count: int | None = None) -> None:
        """Loop until ExaBGP stops, stop() is called, or `count` looks."""
        self.start()
        n = 0
        while not self.ended and not self.stopping.is_set():
            t0 = self.clock()
            self.tick()
            n += 1
            if count is not None and n >= count:
                break
            self._wait(t0 + self.interval)
        if self.stopping.is_set() and not self.ended:
            self.withdraw_all()

    def _wait(self, until: float) -> None:
        """Sleep until `until`, watching ExaBGP's input for its end."""
        while not self.ended and not self.stopping.is_set():
            left = until - self.clock()
            if left <= 0:
                return
            if self.answers is None:
                self.stopping.wait(min(left, 0.2))
                continue
            try:
                got = self.answers.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if got is EOF_MARK:
                self._end("ExaBGP closed our stdin (it stopped)")
            elif X.answer(got) == X.SHUTDOWN:
                self._end("ExaBGP is shutting down")
            elif X.answer(got) is not None and self.late:
                self.late -= 1

    def stop(self) -> None:
        self.stopping.set()


def reader(stream: IO[str]) -> queue.Queue[str | None]:
    """A queue fed with the lines of `stream` by a daemon thread; None at EOF."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(EOF_MARK)
    threading.Thread(target=pump, daemon=True, name="exabgp-stdin").start()
    return q
