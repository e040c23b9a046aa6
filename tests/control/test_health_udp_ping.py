"""UDP_CHECK and PING_CHECK (userlb/control/health.py): the parser's
keywords and errors, and each attempt against real sockets -- UDP on the
loopback (an answering server, a closed port's ICMP error, require_reply
with a prefix and lengths), ICMP echo in a network namespace of the test's
own (`unshare -n`: the loopback answers, an address nobody has behind a
veth pair does not)."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from userlb.control import health
from userlb.control.keepalived import KeepalivedError, load_text


def checker(text):
    return load_text(textwrap.dedent(f"""
        virtual_server 127.0.0.1 53 {{
            protocol UDP
            real_server 127.0.0.1 53 {{
                {text}
            }}
        }}
        """), "k.conf").virtual_servers[0].real_servers[0].checkers[0]


def test_parser_reads_udp_and_ping_keywords():
    cd = checker("UDP_CHECK { payload 0x0102ff\n require_reply 01\n min_reply_length 2\n"
                 " max_reply_length 9\n connect_port 5353\n connect_timeout 0.5 }")
    assert cd.kind == "UDP_CHECK" and cd.payload == b"\x01\x02\xff"
    assert cd.require_reply and cd.reply_prefix == b"\x01"
    assert (cd.min_reply_length, cd.max_reply_length, cd.connect_port) == (2, 9, 5353)
    cd = checker("UDP_CHECK { require_reply }")
    assert cd.require_reply and cd.reply_prefix is None and cd.payload == b""
    cd = checker("PING_CHECK { connect_ip 10.0.0.9\n retry 2 }")
    assert cd.kind == "PING_CHECK" and cd.retry == 2 and cd.connect_ip == 0x0A000009


@pytest.mark.parametrize("body,line,msg", [
    ("UDP_CHECK {\n payload 0g\n }", 6, "payload: '0g' is not hexadecimal data"),
    ("UDP_CHECK {\n payload 123\n }", 6, "not hexadecimal data"),
    ("UDP_CHECK {\n min_reply_length 9\n max_reply_length 2\n }", 5,
     "min_reply_length is above max_reply_length"),
    ("PING_CHECK {\n connect_port 80\n }", 6, "connect_port in PING_CHECK"),
    ("PING_CHECK {\n payload 00\n }", 6, "unknown keyword 'payload' in PING_CHECK"),
    ("FILE_CHECK {\n }", 5, "FILE_CHECK is not implemented"),
])
def test_parser_errors_name_the_line(body, line, msg):
    with pytest.raises(KeepalivedError) as e:
        checker(body)
    assert f"k.conf:{line}:" in str(e.value) and msg in str(e.value), str(e.value)


def run(coro):
    return asyncio.run(coro)


def test_udp_check_against_loopback_sockets():
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t, self.seen = t, []

        def datagram_received(self, data, addr):
            self.seen.append(data)
            self.t.sendto(b"\x01" + data, addr)

    async def go():
        loop = asyncio.get_running_loop()
        t, proto = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        closed = socket_port()
        out = {
            "plain": await health.udp_check(checker(
                "UDP_CHECK { payload abcd\n connect_timeout 0.2 }"), 0x7F000001, port),
            "closed": await health.udp_check(checker(
                "UDP_CHECK { connect_timeout 1 }"), 0x7F000001, closed),
            "reply": await health.udp_check(checker(
                "UDP_CHECK { payload 02\n require_reply 0102\n max_reply_length 2\n"
                " connect_timeout 1 }"), 0x7F000001, port),
            "prefix": await health.udp_check(checker(
                "UDP_CHECK { payload 02\n require_reply 09\n connect_timeout 1 }"),
                0x7F000001, port),
            "long": await health.udp_check(checker(
                "UDP_CHECK { payload 0203\n require_reply\n max_reply_length 2\n"
                " connect_timeout 1 }"), 0x7F000001, port),
        }
        t.close()
        return out, proto.seen
    out, seen = run(go())
    assert out["plain"].ok and seen[0] == b"\xab\xcd"
    assert not out["closed"].ok and "refused" in out["closed"].reason.lower()
    assert out["reply"].ok
    assert not out["prefix"].ok and "does not start with 09" in out["prefix"].reason
    assert not out["long"].ok and "3 bytes" in out["long"].reason


def test_udp_check_require_reply_times_out_on_a_silent_server():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))         # bound, never read: no ICMP error, no answer
    try:
        port = s.getsockname()[1]
        silent = run(health.udp_check(checker("UDP_CHECK { connect_timeout 0.2 }"),
                                      0x7F000001, port))
        needs = run(health.udp_check(checker("UDP_CHECK { require_reply\n"
                                             " connect_timeout 0.2 }"), 0x7F000001, port))
    finally:
        s.close()
    assert silent.ok
    assert not needs.ok and "no UDP answer" in needs.reason


def socket_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


PING = """
import asyncio, json, sys
from userlb.control import health
from userlb.control.keepalived import load_text
def cd(text):
    conf = load_text("virtual_server 127.0.0.1 80 {\\n real_server 127.0.0.1 80 {\\n"
                     + text + "\\n }\\n}\\n", "k.conf")
    return conf.virtual_servers[0].real_servers[0].checkers[0]
async def go():
    out = []
    for ip, addr in (("127.0.0.1", 0x7F000001), ("::1", bytes(15) + b"\\1"),
                     ("192.0.2.2", 0xC0000202)):
        r = await health.ping_check(cd("PING_CHECK { connect_timeout 0.5 }"), addr, 80)
        out.append([ip, r.ok, r.reason])
    r = await health.ping_check(cd("PING_CHECK { connect_ip 127.0.0.1 }"), 0xC0000202, 80)
    out.append(["connect_ip", r.ok, r.reason])
    print(json.dumps(out))
asyncio.run(go())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root (a network namespace of its own, raw ICMP)")
def test_ping_check_in_a_namespace_of_its_own():
    setup = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
             "ip addr add 192.0.2.1/24 dev v0 && ip link set v0 up && ip link set v1 up && "
             "exec \"$0\" -c \"$1\"")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.run(["unshare", "-n", "sh", "-c", setup, sys.executable, PING],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    out = {ip: (ok, reason) for ip, ok, reason in json.loads(p.stdout)}
    assert out["127.0.0.1"] == (True, ""), out
    assert out["::1"] == (True, ""), out
    assert out["connect_ip"] == (True, ""), out
    ok, reason = out["192.0.2.2"]          # nobody has it behind v0: no reply
    assert not ok and reason == "no echo reply from 192.0.2.2 within 0.5s", out
