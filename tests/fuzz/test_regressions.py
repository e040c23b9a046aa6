"""Inputs the fuzzers found (docs/fuzzing.md), kept as regression tests: every
file under tests/fuzz/crashes/<target>/ runs through that target of fuzz/
(without atheris), plus a test of each fix at the level where it was made."""
import json
import pathlib
import socket
import sys
import time

import pytest

from helpers.control_server import ServedDirector
from userlb.clock import ManualClock
from userlb.control import protocol as P
from userlb.control.config import Config
from userlb.control.server import ControlServer
from userlb.dataplane.engine import Engine

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRASHES = pathlib.Path(__file__).with_name("crashes")
CASES = sorted((d.name, f.name) for d in CRASHES.iterdir() for f in d.iterdir())


@pytest.mark.parametrize("target,name", CASES)
def test_crash_input_passes_its_target(target, name):
    sys.path.insert(0, str(ROOT / "fuzz"))
    try:
        mod = __import__(target)
    finally:
        sys.path.remove(str(ROOT / "fuzz"))
    mod.one_input((CRASHES / target / name).read_bytes())


def _served_line(path, line):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(line + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
    return json.loads(buf)


def test_capture_request_without_socket_is_refused_not_an_internal_error():
    """A capture request reaching handle() (its key spelt with a \\u escape
    slipped past the socket path's byte test) was an internal error
    (KeyError 'argv'); it is now a clear refusal."""
    logged = []
    clock = ManualClock(0.0)
    srv = ControlServer("/nonexistent/x.sock", Config(clock=clock), Engine(),
                        clock=clock.now, log=logged.append)
    r = srv.handle_line(b'{"\\u0063apture": {"count": 1, "seconds": 1}}')
    assert r["ok"] is False and r["status"] == P.STATUS_REFUSED
    assert r["error"] == "a capture is served only on the control socket"
    assert not logged
    srv.close()


def test_capture_paths_on_the_socket():
    """On the socket: an escaped capture key takes the capture path (this
    server has no packet path: its answer says so); a change request that
    merely mentions "capture" (in its id) is handled as a change -- applied
    and answered with its id (it used to bypass the request lock and the
    audit log)."""
    d = ServedDirector()
    try:
        r = _served_line(d.path, b'{"\\u0063apture": {"count": 1, "seconds": 1}}')
        assert r["ok"] is False and "cannot capture" in r["error"]
        r = _served_line(d.path, json.dumps({"argv": ["-A", "-t", "10.0.0.7:80", "-s", "rr"],
                                             "id": {"capture": 1}}).encode())
        assert r["ok"] is True and r["id"] == {"capture": 1}
        assert "10.0.0.7:80" in d.ok("-L", "-n")
    finally:
        d.close()


def test_megabyte_words_and_lines_are_refused_before_parsing():
    """A 10 MB word or -R line (the control-socket abuse of
    tests/e2e/test_faults.py) was split character by character and quoted
    whole in the answer and the log; now it is refused by its length."""
    from userlb.control import ipvsadm as ia
    from userlb.errors import ConfigError
    with pytest.raises(ConfigError) as ei:
        ia.parse_rules("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r " + "1" * 5000 + "\n")
    assert ei.value.line == 2 and "line too long (5021 characters; at most 4096)" in str(ei.value)
    with pytest.raises(ConfigError, match=r"argument too long \(2000 characters; at most 1024\)"):
        ia.parse_argv(["-A", "-t", "x" * 2000])
    ia.parse_argv(["-A", "-t", "10.0.0.1:80", "-s", "rr", "-p", "1" * 4])     # short: fine
    d = ServedDirector()
    logged = []
    d.server.log = logged.append
    try:
        for req in ({"rules": "-A -t " + "y" * (10 << 20)},
                    {"argv": ["-A", "-t", "x" * (10 << 20), "-s", "rr"]}):
            t = time.monotonic()
            r = _served_line(d.path, json.dumps(req).encode())
            assert time.monotonic() - t < 5
            assert r["ok"] is False and "too long" in r["error"] and len(r["error"]) < 400, \
                r["error"][:300]
        assert len(logged) == 2 and all(len(m) < 600 for m in logged), [m[:300] for m in logged]
        assert d.ok("-L", "-n")
    finally:
        d.close()
