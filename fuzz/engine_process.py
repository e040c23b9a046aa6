"""Fuzz target: Engine.process on a sequence of arbitrary packets (the record
format of fuzz/_common.py), through a configuration with TCP and UDP services
over IPv4 and IPv6 (wlc, rr, mh, persistence, mhs).

Invariants: no exception; every verdict is one of the four with its outputs
(V_FORWARD: 20 <= out_len <= n; V_REPLY / V_FORWARD_OUT: a packet that
parses; V_DROP: a named reason counted once); the destinations' connection
counters equal the entry table; after expiry far in the future the table is
empty and every counter is back to 0.

    python fuzz/engine_process.py [libFuzzer options] [corpus dirs]
"""

import _common
from _common import instrumented, records, run

with instrumented(__name__ == "__main__"):
    from userlb.clock import ManualClock
    from userlb.control.config import Config
    from userlb.dataplane import packet as P
    from userlb.dataplane.engine import V_DROP, V_FORWARD, V_FORWARD_OUT, V_REPLY, Engine

RULES = """\
-A -t 10.0.0.100:80 -s wlc
-a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 2
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.1:53 -m
-A -t 10.0.0.100:443 -s mh -b mh-port -p 30
-a -t 10.0.0.100:443 -r 10.1.0.1:443 -m
-a -t 10.0.0.100:443 -r 10.1.0.3:443 -m
-A -t 10.0.0.101:80 -s mhs --mh-table-size 251
-a -t 10.0.0.101:80 -r 10.1.0.1:80 -m
-a -t 10.0.0.101:80 -r 10.1.0.2:80 -m
-A -t [2001:db8::100]:80 -s wlc
-a -t [2001:db8::100]:80 -r [2001:db8:1::1]:8080 -m
-A -u [2001:db8::100]:53 -s sh
-a -u [2001:db8::100]:53 -r [2001:db8:1::1]:53 -m
-a -u [2001:db8::100]:53 -r [2001:db8:1::2]:53 -m
"""

CLOCK = ManualClock(0.0)
CONFIG = Config(clock=CLOCK)
CONFIG.load_rules(RULES)
SERVICES = list(CONFIG)
BUF = bytearray(70000)
MAX_ENTRIES = 64


def new_engine(sloppy):
    eng = Engine(sloppy_tcp=sloppy, max_entries=MAX_ENTRIES)
    eng.set_timeouts(20, 10, 15)
    eng.set_services(SERVICES)
    return eng


START = 1000.0
_kept = {}      # sloppy -> [engine, the time its next input starts at]


def engine_for(sloppy):
    """(engine, start time) for one input.  Under atheris one engine per
    sloppy setting is kept: building one is two thirds of an input's cost
    there, and finish() leaves it empty with every counter at 0.  Its time
    only moves forward (the entry wheel and the rate estimators expect a
    monotonic clock), so the next input starts after the last one finished.
    (The schedulers' own state lives in SERVICES and was always shared.)
    Without atheris -- the tests replaying an input -- a fresh engine."""
    if not _common.FUZZING:
        return new_engine(sloppy), START
    kept = _kept.get(sloppy)
    if kept is None:
        kept = _kept[sloppy] = [new_engine(sloppy), START]
    return kept[0], kept[1]


def done_with(eng, sloppy, end):
    """The kept engine's next input starts after `end` (see engine_for)."""
    kept = _kept.get(sloppy)
    if kept is not None and kept[0] is eng:
        kept[1] = end + 1.0


def _counters():
    """The destinations' connection counters: active + inactive (entries),
    persistent (templates)."""
    n = 0
    for s in SERVICES:
        for d in s.dests:
            assert d.activeconns >= 0 and d.inactconns >= 0 and d.persistconns >= 0, \
                (d, d.activeconns, d.inactconns, d.persistconns)
            n += d.activeconns + d.inactconns + d.persistconns
    return n


def check_verdict(eng, v, n, drops_before):
    assert v in (V_DROP, V_FORWARD, V_REPLY, V_FORWARD_OUT), v
    if v == V_FORWARD:
        assert 20 <= eng.out_len <= n, (eng.out_len, n)
    elif v in (V_REPLY, V_FORWARD_OUT):
        assert isinstance(eng.out, (bytes, bytearray)) and len(eng.out) >= 20
        assert type(P.parse(eng.out)) is tuple, P.parse(eng.out)
    else:
        assert isinstance(eng.last_reason, str)
        assert sum(eng.drops.values()) == drops_before + 1


def feed(eng, data, process, now=START):
    """Run the records of `data` through process(record, now) from time
    `now`; check the table afterwards.  Returns the final time."""
    for dt, rec in records(data):
        now += dt
        CLOCK.set(now)
        if dt >= 1.0:
            eng.expire(now)
        process(rec, now)
    assert _counters() == len(eng)
    return now


def finish(eng, now):
    """Everything expires: no entry, no connection counted, no fragment kept.
    Returns the time it ends at (far beyond every timeout)."""
    for step in (400.0, 10_000.0, 100_000.0):
        eng.expire(now + step)
    assert len(eng) == 0, len(eng)
    assert _counters() == 0
    return now + 100_000.0


def one_input(data):
    sloppy = bool(data[:1]) and data[0] & 0x80 != 0
    eng, start = engine_for(sloppy)

    def process(rec, now):
        n = len(rec)
        BUF[:n] = rec
        before = sum(eng.drops.values())
        v = eng.process(BUF, n, now)
        check_verdict(eng, v, n, before)

    now = feed(eng, data, process, start)
    done_with(eng, sloppy, finish(eng, now))


if __name__ == "__main__":
    run(one_input)
