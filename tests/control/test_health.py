"""Health checking (userlb/control/health.py, keepalived_apply.py):

* the state machine: alive/dead, inhibit_on_failure, quorum with hysteresis,
  the sorry server, misc_dynamic weights -- as ipvsadm configurations;
* the checker loop's retry / delay_before_retry with a fake sleep (no time
  passes);
* each attempt against real servers on the loopback: TCP refused and
  timeout, HTTP status and digest, SSL_GET, MISC exit codes and timeouts;
* the manager applying changes to a Config atomically and logging them;
  a reload keeping the state of unchanged real servers.
"""
import asyncio
import hashlib
import socket
import ssl
import subprocess
import textwrap

import pytest

from userlb.control import health
from userlb.control.config import Config
from userlb.control.health import HealthManager, Result, reload_director
from userlb.control.keepalived import load_text
from userlb.control.keepalived_apply import build_config, start_states


def conf_of(text):
    return load_text(textwrap.dedent(text), "k.conf")


def weights(cfg, vip="10.99.0.1", port=80):
    """{'a.b.c.d:port': weight} of one service."""
    from userlb.model import IPPROTO_TCP, format_endpoint, parse_addr
    svc = cfg.get_service(IPPROTO_TCP, parse_addr(vip)[1], port)
    return {format_endpoint(d.addr, d.port): d.weight for d in svc.dests}


QUORUM = """
    virtual_server 10.99.0.1 80 {
        quorum 3
        hysteresis 1
        sorry_server 10.20.0.99 80
        real_server 10.20.0.11 80 { weight 2
                                    TCP_CHECK { } }
        real_server 10.20.0.12 80 { weight 2
                                    inhibit_on_failure
                                    TCP_CHECK { } }
        real_server 10.20.0.13 80 { weight 1
                                    MISC_CHECK { misc_path /bin/true
                                                 misc_dynamic } }
    }
    """


def manager(text, **kw):
    conf = conf_of(text)
    cfg = Config()
    logs = []
    mgr = HealthManager(cfg, conf, log=logs.append, **kw)
    cfg.apply_batch(mgr.initial_commands())
    return cfg, mgr, logs


def test_down_up_inhibit_quorum_and_sorry_server():
    cfg, mgr, logs = manager(QUORUM)
    assert weights(cfg) == {"10.20.0.11:80": 2, "10.20.0.12:80": 2, "10.20.0.13:80": 1}
    # s1 down: removed; total 3 >= quorum - hysteresis = 2: quorum holds
    mgr.report(0, 0, 0, False, Result(False, "refused"))
    assert weights(cfg) == {"10.20.0.12:80": 2, "10.20.0.13:80": 1}
    assert any("real server 10.20.0.11:80 DOWN (TCP_CHECK: refused)" in x for x in logs)
    assert logs[-1] == "keepalived: TCP 10.99.0.1:80: -d -t 10.99.0.1:80 -r 10.20.0.11:80"
    # s2 down: inhibit -> weight 0; total 1 < 2: quorum lost, sorry server in,
    # the live s3 out
    mgr.report(0, 1, 0, False, Result(False, "refused"))
    assert weights(cfg) == {"10.20.0.12:80": 0, "10.20.0.99:80": 1}
    assert any("quorum lost" in x and "sorry server 10.20.0.99:80 in" in x for x in logs)
    # s1 back: total 3 < quorum + hysteresis = 4: still the sorry server
    mgr.report(0, 0, 0, True, Result(True))
    assert weights(cfg) == {"10.20.0.12:80": 0, "10.20.0.99:80": 1}
    # s3's misc_dynamic exit 5 -> weight 3: total 5 >= 4: quorum regained
    mgr.report(0, 2, 0, True, Result(True, weight=3))
    assert weights(cfg) == {"10.20.0.11:80": 2, "10.20.0.12:80": 0, "10.20.0.13:80": 3}
    assert mgr.states[0].quorum_up
    # a repeated verdict changes nothing and logs nothing
    n = len(logs)
    assert mgr.report(0, 0, 0, True, Result(True)) == [] and len(logs) == n


def test_quorum_lost_at_zero_even_below_hysteresis_and_scripts_chosen():
    cfg, mgr, logs = manager("""
        virtual_server 10.99.0.1 80 {
            quorum 1
            hysteresis 5
            real_server 10.20.0.11 80 { TCP_CHECK { } }
        }
        """)
    mgr.report(0, 0, 0, False, Result(False, "x"))
    assert not mgr.states[0].quorum_up and weights(cfg) == {}


def test_alpha_starts_down_and_one_success_brings_it_in():
    cfg, mgr, _ = manager("""
        virtual_server 10.99.0.1 80 {
            alpha
            real_server 10.20.0.11 80 { TCP_CHECK { }
                                        HTTP_GET { url { path / } } }
        }
        """)
    assert weights(cfg) == {}
    mgr.report(0, 0, 0, True, Result(True))
    assert weights(cfg) == {}            # every checker must pass
    mgr.report(0, 0, 1, True, Result(True))
    assert weights(cfg) == {"10.20.0.11:80": 1}


def test_a_service_deleted_with_adm_is_left_alone():
    cfg, mgr, logs = manager(QUORUM)
    cfg.apply("-D -t 10.99.0.1:80")      # deleted with userlb adm
    mgr.report(0, 0, 0, False, Result(False, "x"))
    assert cfg.services == {}


# ------------------------------------------------------------- the loop

def run(coro):
    return asyncio.run(coro)


async def drive(mgr, verdicts, steps):
    """Run the manager's checker task with scripted verdicts and a fake
    sleep; returns the sleeps asked for."""
    sleeps = []
    it = iter(verdicts)

    async def attempt(cd, addr, port):
        try:
            return next(it)
        except StopIteration:
            raise asyncio.CancelledError() from None

    async def sleep(s):
        sleeps.append(s)
        await asyncio.sleep(0)

    mgr.attempt, mgr.sleep = attempt, sleep
    mgr.start()
    await asyncio.gather(*mgr.tasks.values(), return_exceptions=True)
    return sleeps


def test_retry_and_delay_before_retry_then_down_then_up():
    cfg, mgr, logs = manager("""
        virtual_server 10.99.0.1 80 {
            delay_loop 6
            real_server 10.20.0.11 80 { TCP_CHECK { retry 2
                                                    delay_before_retry 0.5 } }
        }
        """)
    ok, bad = Result(True), Result(False, "refused")
    seen = []
    orig = mgr.report

    def report(i, r, c, up, res):
        seen.append((up, dict(weights(cfg))))
        return orig(i, r, c, up, res)
    mgr.report = report
    sleeps = run(drive(mgr, [ok, bad, bad, ok, bad, bad, bad, bad, ok], 0))
    # ok; a failure is retried twice (0.5 s apart) -- a success in between
    # resets it; three failures in a row take it down; while down one failure
    # is one verdict; one success brings it back
    assert sleeps == [6, 0.5, 0.5, 6, 0.5, 0.5, 6, 6, 6]
    assert [u for u, _ in seen] == [True, True, False, False, True]
    assert weights(cfg) == {"10.20.0.11:80": 1}
    assert sum("DOWN" in x for x in logs) == 1 and sum("UP" in x for x in logs) == 1


def test_warmup_waits_a_random_time_first():
    import random
    cfg, mgr, _ = manager("""
        virtual_server 10.99.0.1 80 {
            real_server 10.20.0.11 80 { TCP_CHECK { warmup 10 } }
        }
        """, rng=random.Random(1))
    sleeps = run(drive(mgr, [Result(True)], 0))
    assert 0 <= sleeps[0] <= 10 and sleeps[0] == random.Random(1).uniform(0, 10)


# ------------------------------------------------------ real attempts (loopback)

def checker(text):
    return conf_of(f"""
        virtual_server 127.0.0.1 80 {{
            real_server 127.0.0.1 80 {{
                {text}
            }}
        }}
        """).virtual_servers[0].real_servers[0].checkers[0]


async def http_server(answers):
    """A loopback HTTP server answering each request with the next answer."""
    it = iter(answers)
    seen = []

    async def handle(r, w):
        req = await r.readuntil(b"\r\n\r\n")
        seen.append(req)
        w.write(next(it))
        await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], seen


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_tcp_check_connects_and_reports_refused():
    async def go():
        srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        ok = await health.tcp_check(checker("TCP_CHECK { }"), 0x7F000001, port)
        bad = await health.tcp_check(checker("TCP_CHECK { }"), 0x7F000001, free_port())
        via = await health.tcp_check(checker(f"TCP_CHECK {{ connect_port {port}\n"
                                             "bindto 127.0.0.1 }"), 0x7F000001, 1)
        srv.close()
        return ok, bad, via
    ok, bad, via = run(go())
    assert ok.ok and via.ok
    assert not bad.ok and "refused" in bad.reason.lower()


def test_tcp_check_timeout():
    # a listening socket with a full backlog never completes the handshake
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    try:
        res = run(health.tcp_check(checker("TCP_CHECK { connect_timeout 0.3 }"),
                                   0x7F000001, port))
    finally:
        for f in fillers:
            f.close()
        ls.close()
    assert not res.ok and "within 0.3s" in res.reason


BODY = b"hello\n"
MD5 = hashlib.md5(BODY).hexdigest()


def test_http_get_status_digest_and_host_header():
    ok = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\n" + BODY

    async def go():
        srv, port, seen = await http_server([
            ok, ok, b"HTTP/1.1 503 Busy\r\n\r\n", ok, b"HTTP/1.0 301 Moved\r\n\r\n",
            b"garbage\r\n\r\n"])
        cd = checker(f"HTTP_GET {{ url {{ path /health\n digest {MD5} }}\n"
                     f" url {{ path /b\n virtualhost www.x }} }}")
        r1 = await health.http_check(cd, 0x7F000001, port)          # 2 requests
        r2 = await health.http_check(cd, 0x7F000001, port)          # 503 on /health
        cd2 = checker(f"HTTP_GET {{ url {{ path /\n digest {'0' * 32} }} }}")
        r3 = await health.http_check(cd2, 0x7F000001, port)         # digest mismatch
        cd3 = checker("HTTP_GET { url { path /\n status_code 301-302 } }")
        r4 = await health.http_check(cd3, 0x7F000001, port)         # 301 wanted
        r5 = await health.http_check(cd3, 0x7F000001, port)         # not HTTP
        r6 = await health.http_check(cd3, 0x7F000001, free_port())  # refused
        srv.close()
        return [r1, r2, r3, r4, r5, r6], seen
    (r1, r2, r3, r4, r5, r6), seen = run(go())
    assert r1.ok and r4.ok
    assert not r2.ok and r2.reason == "GET /health: status 503"
    assert not r3.ok and "digest" in r3.reason and MD5 in r3.reason
    assert not r5.ok and "not an HTTP response" in r5.reason
    assert not r6.ok
    assert seen[0].startswith(b"GET /health HTTP/1.0\r\n") and b"Host: 127.0.0.1\r\n" in seen[0]
    assert seen[1].startswith(b"GET /b HTTP/1.0\r\n") and b"Host: www.x\r\n" in seen[1]


def test_http_get_timeout_when_the_server_never_answers():
    async def go():
        async def hang(r, w):
            await asyncio.sleep(5)
        srv = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        res = await health.http_check(checker("HTTP_GET { url { path / }\n"
                                              "connect_timeout 0.2 }"), 0x7F000001, port)
        srv.close()
        return res
    res = run(go())
    assert not res.ok and "no answer within 0.2s" in res.reason


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "k.pem", d / "c.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=localhost"],
                       capture_output=True)
    assert p.returncode == 0, p.stderr      # openssl: the Makefile's DEBS
    return str(crt), str(key)


def test_ssl_get_with_a_self_signed_certificate(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)

    async def go():
        async def handle(r, w):
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.0 200 OK\r\n\r\n" + BODY)
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = srv.sockets[0].getsockname()[1]
        res = await health.http_check(checker(f"SSL_GET {{ url {{ path /\n digest {MD5} }}\n"
                                              "enable_sni }"), 0x7F000001, port)
        plain = await health.http_check(checker("HTTP_GET { url { path / }\n"
                                                "connect_timeout 1 }"), 0x7F000001, port)
        srv.close()
        return res, plain
    res, plain = run(go())
    assert res.ok, res.reason
    assert not plain.ok


@pytest.mark.parametrize("script,dynamic,ok,weight,words", [
    ("exit 0", False, True, None, ""),
    ("exit 1", False, False, None, "exit 1"),
    ("exit 7", False, False, None, "exit 7"),
    ("exit 1", True, False, None, "exit 1"),
    ("exit 2", True, True, 0, ""),
    ("exit 9", True, True, 7, ""),
    ("exec sleep 30", False, False, None, "no exit within 0.3s"),
    ("kill -TERM $$", False, False, None, "killed by signal 15"),
])
def test_misc_check_exit_codes_dynamic_weights_and_timeout(tmp_path, script, dynamic, ok,
                                                           weight, words):
    sh = tmp_path / "check.sh"
    sh.write_text(f"#!/bin/sh\n{script}\n")
    sh.chmod(0o755)
    cd = checker(f'MISC_CHECK {{ misc_path "{sh} arg"\n misc_timeout 0.3'
                 + ("\n misc_dynamic }" if dynamic else " }"))
    import uvloop  # what `userlb run` uses: its subprocess support
    res = uvloop.run(health.misc_check(cd, 0, 0))
    assert (res.ok, res.weight) == (ok, weight) and words in res.reason


def test_misc_check_as_another_user():
    import os
    import pwd

    import uvloop
    if os.geteuid() != 0:
        pytest.skip("needs root to change user")
    nobody = pwd.getpwnam("nobody")
    # /bin/sh itself: a script under pytest's 0700 directories is out of nobody's reach
    cd = checker(f"MISC_CHECK {{ misc_path \"/bin/sh -c '[ $(id -u) = {nobody.pw_uid} ] "
                 "&& exit 4; exit 1'\"\n user nobody\n misc_dynamic }")
    res = uvloop.run(health.misc_check(cd, 0, 0))
    assert (res.ok, res.weight) == (True, 2), res
    bad = checker("MISC_CHECK { misc_path /bin/true\n user no-such-user-here }")
    res = uvloop.run(health.misc_check(bad, 0, 0))
    assert not res.ok and "no-such-user-here" in res.reason


def test_misc_check_missing_program():
    res = run(health.misc_check(checker("MISC_CHECK { misc_path /nonexistent/x }"), 0, 0))
    assert not res.ok and "cannot run /nonexistent/x" in res.reason


def test_notify_scripts_run(tmp_path):
    mark = tmp_path / "mark"
    cfg, mgr, logs = manager(f"""
        virtual_server 10.99.0.1 80 {{
            quorum_down "/bin/sh -c 'echo qdown >> {mark}'"
            omega
            real_server 10.20.0.11 80 {{ notify_down "/bin/sh -c 'echo down >> {mark}'"
                                         notify_up "/bin/sh -c 'echo up >> {mark}'"
                                         TCP_CHECK {{ }} }}
            real_server 10.20.0.12 80 {{ notify_down "/bin/sh -c 'echo down2 >> {mark}'" }}
        }}
        """)

    async def go():
        mgr.report(0, 0, 0, False, Result(False, "x"))
        await asyncio.wait(list(mgr.scripts), timeout=10)
        mgr.report(0, 0, 0, True, Result(True))
        await asyncio.wait(list(mgr.scripts), timeout=10)
        await mgr.stop()         # omega: the down scripts of what is up
    run(go())
    lines = mark.read_text().split()
    assert lines[:2] == ["down", "up"] and sorted(lines[2:]) == ["down", "down2", "qdown"]


# --------------------------------------------------------------- reload

def test_reload_keeps_the_state_of_unchanged_real_servers(tmp_path):
    path = tmp_path / "k.conf"
    path.write_text(textwrap.dedent(QUORUM))
    cfg, mgr = health.load_director(str(path), log=lambda m: None)
    mgr.report(0, 0, 0, False, Result(False, "x"))          # s1 down
    mgr.report(0, 2, 0, True, Result(True, weight=4))       # s3 dynamic weight 4
    before = {d.key: d for d in cfg.get_service(6, 0x0A630001, 80).dests}
    # s2's checker changes; a new s4; s1 and s3 are the same
    text = textwrap.dedent(QUORUM)
    new = text.replace("inhibit_on_failure\n", "inhibit_on_failure\n connect_timeout 2\n")
    new = new.rstrip().removesuffix("}") + "real_server 10.20.0.14 80 { }\n}\n"
    assert new != text
    path.write_text(new)

    async def never(*a):
        await asyncio.Event().wait()
    mgr.attempt = never

    async def go():
        n = reload_director(mgr, str(path))
        assert len(mgr.tasks) == 3        # one task per checker, all started again
        await mgr.stop()
        return n
    n = asyncio.run(go())
    assert n == 1        # s4 added; s3 keeps its dynamic weight, s2 its state
    assert weights(cfg) == {"10.20.0.12:80": 2, "10.20.0.13:80": 4, "10.20.0.14:80": 1}
    after = {d.key: d for d in cfg.get_service(6, 0x0A630001, 80).dests}
    assert after[(0x0A14000C, 80)] is before[(0x0A14000C, 80)]   # same Dest object
    assert not mgr.states[0].rs[0].alive
    # a bad file: refused, nothing changed
    path.write_text("virtual_server 10.99.0.1 80 {\n lb_kind XYZ\n}\n")
    with pytest.raises(Exception, match="k.conf:2"):
        reload_director(mgr, str(path))
    assert weights(cfg)["10.20.0.13:80"] == 4


def test_build_config_matches_the_manager_start():
    conf = conf_of(QUORUM)
    cfg, mgr, _ = manager(QUORUM)
    assert build_config(start_states(conf)).save() == cfg.save()


def test_dns_check_against_a_loopback_responder():
    import struct

    from userlb.control.health import dns_query
    q = dns_query(0x1234, "www.example.org", 28)
    assert q == (bytes.fromhex("123401000001000000000000") + b"\x03www\x07example\x03org\x00"
                 + struct.pack("!HH", 28, 1))
    assert dns_query(1, ".", 2).endswith(b"\x00\x00\x02\x00\x01")

    class Responder(asyncio.DatagramProtocol):
        """Answers: 1 record, then NXDOMAIN, then no records, then nothing."""
        def __init__(self):
            self.n, self.seen = 0, []

        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            self.seen.append(data)
            self.n += 1
            qid = data[:2]
            if self.n == 1:
                self.t.sendto(b"\x00\x00" + qid, addr)            # wrong id: ignored
                self.t.sendto(qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0), addr)
            elif self.n == 2:
                self.t.sendto(qid + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0), addr)
            elif self.n == 3:
                self.t.sendto(qid + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0), addr)

    async def go():
        loop = asyncio.get_running_loop()
        t, proto = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        cd = checker("DNS_CHECK { type AAAA\n name www.example.org\n connect_timeout 0.3 }")
        out = [await health.dns_check(cd, 0x7F000001, port) for _ in range(4)]
        t.close()
        return out, proto.seen
    (r1, r2, r3, r4), seen = run(go())
    assert r1.ok
    assert not r2.ok and r2.reason == "DNS: rcode 3"
    assert not r3.ok and r3.reason == "DNS: no answer for AAAA www.example.org"
    assert not r4.ok and "no DNS answer within 0.3s" in r4.reason
    assert seen[0][12:] == q[12:]


def test_listing_with_the_health_column():
    from userlb.control import ipvsadm as ia
    from userlb.control import listing
    cfg, mgr, _ = manager(QUORUM)
    mgr.report(0, 0, 0, False, Result(False, "x"))          # s1 down (removed)
    mgr.report(0, 1, 0, False, Result(False, "x"))          # s2 down: quorum lost
    cfg.apply("-a -t 10.99.0.1:80 -r 10.20.0.50:80 -m")     # added by hand
    out = listing.render(cfg, ia.parse_argv(["-L", "-n", "--health"]),
                         health_of=mgr.state_of).splitlines()
    assert out[2].endswith("InActConn Health")
    states = {line.split()[1]: line.split()[-1] for line in out[4:]}
    assert states == {"10.20.0.12:80": "down", "10.20.0.99:80": "sorry", "10.20.0.50:80": "-"}
    # without a manager (plain `userlb run --config`): every state is "-"
    out = listing.render(cfg, ia.parse_argv(["-L", "-n", "--health", "-t", "10.99.0.1:80"]))
    assert [line.split()[-1] for line in out.splitlines()[3:]] == ["-", "-", "-"]
    assert "Health" not in listing.render(cfg, ia.parse_argv(["-L", "-n"]))
