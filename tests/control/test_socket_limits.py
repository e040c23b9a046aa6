"""The control socket on bad input: binary garbage gets a readable answer (not
a "utf-16" JSON error), a line over the size limit gets an error line and the
client an explanation instead of a broken pipe."""
import json
import socket

import pytest

from helpers.control_server import ServedDirector
from userlb.control import protocol as P


def raw(path, data):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


@pytest.fixture
def d():
    srv = ServedDirector()
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("garbage", [b"\x00A\x00B\x00C\n", b"\xff\xfe\x00\x00\x80\n",
                                     bytes(range(1, 10)) + b"\xc3\x28\n"])
def test_binary_garbage_gets_a_readable_answer(d, garbage):
    r = raw(d.path, garbage)
    assert r["ok"] is False and r["status"] == P.STATUS_SYNTAX
    assert r["error"].startswith("not a JSON line")
    assert "utf-16" not in r["error"].lower() and "utf-32" not in r["error"].lower()
    if b"\xff" in garbage or b"\xc3\x28" in garbage:
        assert "not UTF-8 text" in r["error"]
    # the server is still serving
    assert d.adm("-L", "-n")[0] == 0


def test_a_line_over_the_limit_gets_an_error_line_not_a_broken_pipe(monkeypatch):
    monkeypatch.setattr(P, "MAX_LINE", 4096)
    srv = ServedDirector()
    try:
        r = raw(srv.path, b"x" * 100_000 + b"\n")
        assert r == {"ok": False, "output": "", "error": "request line too long",
                     "status": P.STATUS_SYNTAX}
        # the client refuses before sending, with the numbers
        with pytest.raises(P.ProtocolError, match=r"request too large: \d+ bytes, the control "
                                                  r"socket takes lines of at most 4096 bytes"):
            P.request(srv.path, {"rules": "-A -t 10.0.0.1:80 -s rr\n" * 1000})
        rc, out, err = srv.adm("-R", stdin="-A -t 10.0.0.1:80 -s rr\n" * 1000)
        assert rc != 0 and "request too large" in err and "Traceback" not in err
        assert srv.adm("-L", "-n")[0] == 0
    finally:
        srv.close()


@pytest.mark.parametrize("cap", [{"count": 0, "seconds": 1}, {"count": 5},
                                 {"count": 1, "seconds": -1}, {"count": True, "seconds": 1},
                                 {"count": 1, "seconds": 1, "file": "x"}, [1, 2]])
def test_a_malformed_capture_request_is_refused(d, cap):
    r = raw(d.path, json.dumps({"capture": cap}).encode() + b"\n")
    assert r["ok"] is False and r["status"] == P.STATUS_SYNTAX and "capture" in r["error"]
    assert d.adm("-L", "-n")[0] == 0


def test_capture_without_a_packet_path_is_refused(d):
    """A control server with no capture hook (no `userlb run` driver) says so."""
    r = raw(d.path, b'{"capture": {"count": 1, "seconds": 1}}\n')
    assert r["ok"] is False and r["status"] == P.STATUS_REFUSED
    assert "cannot capture" in r["error"]


def test_capture_runs_off_the_lock(d):
    """While a capture waits for packets, other requests are answered."""
    import asyncio
    import threading

    async def slow(count, seconds):
        await asyncio.sleep(1.0)
        return b"PCAP", 0
    d.server.capture = slow
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(
        "r", raw(d.path, b'{"capture": {"count": 1, "seconds": 1}}\n')))
    t.start()
    assert d.adm("-L", "-n")[0] == 0
    assert t.is_alive()                 # the listing did not wait for the capture
    t.join(10)
    assert got["r"]["ok"] is True and got["r"]["pcap"] == "UENBUA==" and got["r"]["packets"] == 0
