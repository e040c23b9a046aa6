"""Fuzz target: the control socket's request handling (userlb.control.protocol
and ControlServer.handle_line, without the socket) on arbitrary lines.

The input is split into at most 8 lines, each handed to one server (with a
Config, a real Engine and a manual clock) in turn, as one client connection
would send them.  Invariants: handle_line never raises; every answer has the
response shape and encodes as one JSON line; no request reaches the server's
"internal error" branch (that branch is a bug caught, not an answer); a
refused request changes nothing (-S output and settings unchanged).

    python fuzz/control_protocol.py [libFuzzer options] [corpus dirs]
"""
import json

from _common import instrumented, run

# coverage of the control package only: the schedulers' table builds it
# triggers (a Maglev table of 65,537 slots per mh change) are another
# target's business and, instrumented, took half of every execution
with instrumented(__name__ == "__main__", include=["userlb.control"]):
    from userlb.clock import ManualClock
    from userlb.control import ipvsadm as ia
    from userlb.control import protocol as P
    from userlb.control.config import Config
    from userlb.control.server import ControlServer, settings_text
    from userlb.dataplane.engine import Engine

BASE = ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n"
        "-A -u [2001:db8::1]:53 -s sh\n-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -m\n")


class InternalError(AssertionError):
    pass


def _log(msg):
    if "internal error" in msg:
        raise InternalError(msg)


CLOCK = ManualClock(1000.0)
CONFIG = Config(clock=CLOCK)
ENGINE = Engine()
SERVER = ControlServer("/nonexistent/fuzz.sock", CONFIG, ENGINE, clock=CLOCK.now, log=_log)
BASE_CMDS = [ia.Command(ia.FLUSH)] + ia.parse_rules(BASE)
CONFIG.apply_batch(BASE_CMDS)
START = (CONFIG.save(), settings_text(ENGINE))
SLOPPY, MAX = ENGINE.sloppy_tcp, ENGINE.max_entries
_last = [START]     # the state the previous input left (computed anyway)


def _state():
    return (CONFIG.save(), settings_text(ENGINE))


def _reset():
    """Back to the starting state when the previous input changed it (a
    fresh server per input costs 5x the executions; the base rules are
    parsed once)."""
    if _last[0] != START:
        CONFIG.apply_batch(BASE_CMDS)
        ENGINE.sloppy_tcp, ENGINE.max_entries = SLOPPY, MAX
        CONFIG.apply(["--set", "900", "120", "300"])
        assert _state() == START


def one_input(data):
    _reset()
    state = START
    try:
        for line in data.split(b"\n")[:8]:
            resp = SERVER.handle_line(line)
            assert set(resp) <= {"ok", "output", "error", "status", "id"}, resp
            assert isinstance(resp["ok"], bool) and isinstance(resp["output"], str)
            assert isinstance(resp["error"], str) and resp["status"] in (0, 2, 255), resp
            assert not resp["error"].startswith("internal error"), resp
            enc = P.encode(resp)
            assert enc.endswith(b"\n") and enc.count(b"\n") == 1
            assert P.encode(json.loads(enc)) == enc
            after = _state()
            if not resp["ok"]:
                assert after == state, resp
            state = after
            CLOCK.advance(1.0)
    finally:
        _last[0] = state if state == START else None


if __name__ == "__main__":
    run(one_input)
