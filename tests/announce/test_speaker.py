"""The loop's lines and ExaBGP's ACKs (userlb/announce/speaker.py), with a
fake ExaBGP: a queue of answer lines and a StringIO for what is written."""
import io
import queue

from userlb.announce import exabgp as X
from userlb.announce.fitness import Announcer, Reading
from userlb.announce.speaker import Speaker

V1, V6 = "10.99.0.1/32", "fd00:99::1/128"
FIT = Reading(vips={V1: (), V6: ()})
GONE = Reading(down="userlb run is not running")


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class AnsweringQueue(queue.Queue):
    """ExaBGP's stdin side: answers each written line from a script."""

    def __init__(self, out, script, clock):
        super().__init__()
        self.out, self.script, self.clock, self.seen = out, list(script), clock, 0

    def get(self, block=True, timeout=None):
        lines = self.out.getvalue().splitlines()
        while self.seen < len(lines):
            self.seen += 1
            if self.script:
                got = self.script.pop(0)
                if got is not None:
                    for a in got if isinstance(got, list) else [got]:
                        self.put(a)
        try:
            return super().get(block=False)
        except queue.Empty:
            self.clock.t += timeout or 0
            raise


def speaker(readings, script=(), ack="auto", **kw):
    out, clock, logs = io.StringIO(), FakeClock(), []
    ans = AnsweringQueue(out, script, clock)
    it = iter(readings)
    sp = Speaker(lambda: next(it), out, ans, Announcer(kw.pop("rise", 1), kw.pop("fall", 1)),
                 ack=ack, ack_timeout=1.0, clock=clock, log=logs.append, **kw)
    return sp, out, logs


def lines(out):
    return out.getvalue().splitlines()


def test_clear_then_announce_then_withdraw():
    sp, out, logs = speaker([FIT, FIT, GONE], script=["done"] * 5)
    sp.run(count=3)
    assert lines(out) == [X.CLEAR,
                          f"announce route {V1} next-hop self",
                          f"announce route {V6} next-hop self",
                          f"withdraw route {V1} next-hop self",
                          f"withdraw route {V6} next-hop self"]
    assert sp.announced == set()
    assert any("withdrew 10.99.0.1/32: director not fit: userlb run is not running" in m
               for m in logs)


def test_error_answer_is_retried_at_the_next_look():
    sp, out, logs = speaker([FIT, FIT], script=["done", "error", "done", "done"],
                            clear=True)
    sp.run(count=2)
    assert lines(out)[1:] == [f"announce route {V1} next-hop self",
                              f"announce route {V6} next-hop self",
                              f"announce route {V1} next-hop self"]
    assert sp.announced == {V1, V6}
    assert any("answered error" in m for m in logs)


def test_non_answer_lines_are_skipped():
    sp, out, _ = speaker([FIT], script=[["neighbor 10.30.1.1 up", "done"]] * 3)
    sp.run(count=1)
    assert sp.announced == {V1, V6}


def test_no_answers_at_all_means_acks_are_off():
    sp, out, logs = speaker([FIT, GONE], script=[])
    sp.run(count=2)
    assert sp.ack == "off" and sp.announced == set()
    assert lines(out)[-2:] == [f"withdraw route {V1} next-hop self",
                               f"withdraw route {V6} next-hop self"]
    assert sum("ACKs to be off" in m for m in logs) == 1


def test_a_missing_answer_after_answers_is_a_failure_and_the_late_one_skipped():
    # clear: done; V1: no answer; V6: the late "done" of V1 arrives, then V6's own "error"
    sp, out, logs = speaker([FIT], script=["done", None, ["done", "error"]])
    sp.run(count=1)
    assert sp.announced == set() and sp.late == 0
    assert any("no answer from ExaBGP" in m for m in logs)


def test_shutdown_and_eof_end_the_loop():
    sp, out, logs = speaker([FIT] * 5, script=["done", "shutdown 10 1"])
    sp.run()
    assert sp.ended and any("shutting down" in m for m in logs)
    sp, out, logs = speaker([FIT] * 5, script=["done", [None]])
    sp.run()
    assert sp.ended and any("closed our stdin" in m for m in logs)


def test_ack_off_and_dry_run_write_without_waiting():
    sp, out, _ = speaker([FIT], ack="off", clear=False)
    sp.run(count=1)
    assert lines(out) == [f"announce route {V1} next-hop self",
                          f"announce route {V6} next-hop self"]
    out2 = io.StringIO()
    dry = Speaker(lambda: FIT, out2, None, Announcer(1, 1), log=lambda m: None)
    dry.run(count=1)
    assert lines(out2) == lines(out)          # no clear in a dry run


def test_stop_withdraws_what_is_announced():
    sp, out, _ = speaker([FIT, FIT], script=["done"] * 5, clear=False)
    sp.run(count=1)
    sp.stop()
    sp.run(count=1)
    assert sp.announced == set()
    assert lines(out)[-2:] == [f"withdraw route {V1} next-hop self",
                               f"withdraw route {V6} next-hop self"]


def test_attributes_per_prefix():
    sp, out, _ = speaker([FIT], ack="off", clear=False, attrs=X.Attrs(med=5),
                         attrs_of={V6: X.Attrs(communities=((65000, 6),))})
    sp.run(count=1)
    assert lines(out) == [f"announce route {V1} next-hop self med 5",
                          f"announce route {V6} next-hop self community 65000:6"]
