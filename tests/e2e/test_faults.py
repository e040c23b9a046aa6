"""Faults under a running director (docs/soak.md, "Faults"): a broken rules
file on SIGHUP, the TUN device deleted under it, and abuse of the control
socket while UDP traffic goes through.  (`kill -9` and a restart over the
left-overs: tests/e2e/test_crash_cleanup.py.)

Topology: tests/e2e/localvip_topo.py (client -- director -- real server in
namespaces of their own), plus a UDP echo server on the real server."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from localvip_topo import Topo, env, wait_for

from helpers.netns import needs_root

RULES = ("-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n"
         "-A -u 10.99.0.1:7 -s rr\n-a -u 10.99.0.1:7 -r 10.20.0.11:7 -m -w 1\n")

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

# UDP echoes through the VIP, one new flow (socket) every INTERVAL s for
# SECONDS s; prints {"sent", "ok", "max_rtt"} as JSON
UDP_PROBE = r"""
import json, socket, sys, time
vip, port, seconds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sent = ok = 0
worst = 0.0
end = time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    t = time.monotonic()
    msg = b"probe %d" % sent
    s.sendto(msg, (vip, port))
    sent += 1
    try:
        data = s.recv(2048)
        if data == msg:
            ok += 1
            worst = max(worst, time.monotonic() - t)
    except OSError:
        pass
    s.close()
    time.sleep(interval)
print(json.dumps({"sent": sent, "ok": ok, "max_rtt": worst}))
"""


@pytest.fixture
def topo(tmp_path):
    t = Topo()
    try:
        t.up(str(tmp_path))
        p = subprocess.Popen(["ip", "netns", "exec", t.s, sys.executable, "-c", UDP_ECHO,
                              "10.20.0.11", "7"], stdout=subprocess.PIPE, text=True)
        t.procs.append(p)
        assert p.stdout.readline().strip() == "listening"
        yield t
    finally:
        t.down()


def _log_lines(topo, word):
    return [ln for ln in topo.log().splitlines() if word in ln]


def _udp_once(topo):
    p = subprocess.run(["ip", "netns", "exec", topo.c, sys.executable, "-c", UDP_PROBE,
                        "10.99.0.1", "7", "0.01", "0"], capture_output=True, text=True,
                       timeout=30)
    r = json.loads(p.stdout)
    return r["sent"] >= 1 and r["ok"] == r["sent"]


@needs_root
def test_sighup_with_a_broken_file_keeps_the_configuration(topo):
    p = topo.start(RULES)
    saved = topo.adm("-S", "-n").stdout
    path = topo.rules_file(RULES.replace("-a -t 10.99.0.1:80", "-a -t 10.99.0.1:80 -w x", 1)
                           .replace("-A -u 10.99.0.1:7 -s rr", "-A -u 10.99.0.2:7 -s rr"))
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _log_lines(topo, "SIGHUP"), 10)
    line = _log_lines(topo, "SIGHUP")[-1]
    assert f"{path}:2: " in line and "running configuration unchanged" in line, line
    assert topo.adm("-S", "-n").stdout == saved          # nothing of the new file applied
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    assert _udp_once(topo)
    # a file that cannot be read at all: named, nothing changed either
    os.chmod(path, 0)
    os.rename(path, path + ".gone")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(_log_lines(topo, "SIGHUP")) == 2, 10)
    line = _log_lines(topo, "SIGHUP")[-1]
    assert path in line and "No such file" in line and "unchanged" in line, line
    # fixed: applied
    topo.rules_file(RULES.replace("-w 1\n", "-w 3\n", 1))
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(_log_lines(topo, "SIGHUP")) == 3, 10)
    assert "applied 1 change(s)" in _log_lines(topo, "SIGHUP")[-1]
    rows = [ln.split() for ln in topo.adm("-L", "-n").stdout.splitlines()]
    assert ["->", "10.20.0.11:80", "Masq", "3"] in [r[:4] for r in rows], rows
    topo.stop(p)
    assert p.returncode == 0


@needs_root
def test_tun_device_deleted_under_a_running_director(topo):
    """The director notices, says so in one line, removes its rules and
    exits non-zero; nothing of it is left (a new start needs no cleanup)."""
    before = topo.state()
    p = topo.start(RULES)
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.ip("link", "del", topo.tun)
    try:
        rc = p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the director kept running without its device:\n" + topo.log())
    assert rc == 1, topo.log()
    gone = _log_lines(topo, "was deleted; stopping")
    assert gone and topo.tun in gone[0], topo.log()
    assert "Traceback" not in topo.log()
    after = topo.log().split("was deleted; stopping\n", 1)[1]
    assert after == "userlb run: stopped\n", after      # nothing tried on the gone device
    assert topo.state() == before
    p = topo.start(RULES)
    assert "left-over" not in topo.log().split("ready:")[-1]
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.stop(p)
    assert topo.state() == before


def _connect_unix(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)       # blocking: waits while the listen backlog is full
    s.settimeout(timeout)
    return s


def _answer(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return json.loads(buf)


@needs_root
def test_control_socket_abuse_never_stalls_forwarding(topo):
    """While UDP echoes go through the director (a new flow every 20 ms):
    1,000 idle clients, a 10 MB line, binary garbage, and clients that send
    requests but never read the answers.  Every echo is answered, `userlb
    adm` keeps working during the abuse, and the log has no error."""
    p = topo.start(RULES)
    assert _udp_once(topo)
    probe = subprocess.Popen(["ip", "netns", "exec", topo.c, sys.executable, "-c", UDP_PROBE,
                              "10.99.0.1", "7", "12", "0.02"], stdout=subprocess.PIPE,
                             text=True, env=env())
    socks = []
    try:
        time.sleep(0.5)
        for _ in range(1000):                               # idle clients
            socks.append(_connect_unix(topo.sock))
        assert topo.adm("-L", "-n").returncode == 0

        big = _connect_unix(topo.sock, timeout=30)           # a 10 MB line
        big.sendall(b"x" * (10 << 20) + b"\n")
        r = _answer(big)
        assert r["ok"] is False and r["error"].startswith("not a JSON line"), r
        big.close()
        big = _connect_unix(topo.sock, timeout=30)           # a 10 MB JSON request
        big.sendall(json.dumps({"rules": "-A -t " + "y" * (10 << 20)}).encode() + b"\n")
        r = _answer(big)
        assert r["ok"] is False and "line too long" in r["error"], r["error"][:300]
        big.close()

        for junk in (os.urandom(4096).replace(b"\n", b"\0") + b"\n", b"\x00" * 1000 + b"\n",
                     b"{" * 100000 + b"\n", b'{"argv": "not a list"}\n', b"[]\n"):
            g = _connect_unix(topo.sock)
            g.sendall(junk)
            r = _answer(g)
            assert r["ok"] is False and r["status"] == 2, r
            g.close()

        stop = threading.Event()

        def deaf(s):                 # requests, never reads the answers
            req = json.dumps({"argv": ["-L", "-n", "--stats"]}).encode() + b"\n"
            try:
                while not stop.is_set():
                    s.sendall(req * 100)
            except OSError:
                pass

        deafs = [_connect_unix(topo.sock, timeout=2) for _ in range(4)]
        threads = [threading.Thread(target=deaf, args=(s,), daemon=True) for s in deafs]
        for t in threads:
            t.start()
        socks += deafs
        time.sleep(3)
        t0 = time.monotonic()
        r = topo.adm("-L", "-n")
        assert r.returncode == 0 and "10.99.0.1:7" in r.stdout, r.stderr
        assert time.monotonic() - t0 < 5
        out, _ = probe.communicate(timeout=60)
        stop.set()
    finally:
        for s in socks:
            s.close()
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    res = json.loads(out)
    print("udp echo during the abuse:", res)
    assert res["sent"] >= 200 and res["ok"] == res["sent"], res
    assert res["max_rtt"] < 0.5, res
    assert topo.adm("-L", "-n").returncode == 0
    topo.stop(p)
    assert p.returncode == 0
    log = topo.log()
    assert "Traceback" not in log and "rror" not in log.replace("errors=0", ""), log
