"""Health checkers for keepalived.conf's real servers: asyncio tasks in the
control plane, nothing on the packet path.

Theory of operation
-------------------
`HealthManager(config, conf)` holds one keepalived_apply.VsState per
virtual server and one asyncio task per checker (`start()`).  A task runs its
checker every `delay_loop` seconds (after a random wait of up to `warmup`);
a checker that is up and fails is tried again `retry` times, `delay_before_retry`
apart, before it is declared down; one success brings a checker that is down
back up (keepalived.conf(5)).  The attempts:

* TCP_CHECK: a TCP connection to connect_ip:connect_port (default: the real
  server), from `bindto[:bind_port]` if given, within `connect_timeout`;
* HTTP_GET / SSL_GET: for each `url` in turn, `GET path HTTP/1.0` with a Host
  header (`virtualhost`, else the address), the whole exchange within
  `connect_timeout`; the status must be in `status_code` (default: any 2xx)
  and, when `digest` is given, the MD5 of the body must equal it.  SSL_GET
  does not verify the certificate (keepalived does not either); SNI only with
  `enable_sni`;
* DNS_CHECK: one query (`type`, default A; `name`, default `.`) over UDP
  to connect_ip:connect_port, answered within `connect_timeout` with the
  query's id, no error code and at least one answer record;
* UDP_CHECK: one datagram (`payload`, hex) to connect_ip:connect_port; up
  unless an ICMP error comes back within `connect_timeout`, or, with
  `require_reply [HEX]`, only when an answer comes (starting with HEX, of
  `min_reply_length`..`max_reply_length` bytes);
* PING_CHECK: one ICMP or ICMPv6 echo request to connect_ip (raw socket as
  root, else a ping socket), the matching reply within `connect_timeout`;
* MISC_CHECK: `misc_path` run without a shell (words split as a shell
  would), killed with its process group after `misc_timeout` (default
  `delay_loop`): exit 0 = up, anything else = down; with `misc_dynamic`, exit
  1 = down and 2..255 = up with weight `code - 2`.

Checks go out from the director's own addresses (the routing table picks the
source, or `bindto`); userlb's steering never captures them, because the
director's own packets use the main table (dataplane/steering.py's `iif lo`
guard) and the answers are delivered locally before any policy rule.

A state change goes through `VsState` (keepalived_apply.py) and the commands
that follow are applied with `Config.apply_batch` -- atomic, the same change
path as `userlb adm` -- inside `sync.begin()` / `sync.end()`, so the engine
sees the new tables at once.  Each event and each command is logged on one
line.  `notify_up` / `notify_down` / `quorum_up` / `quorum_down` run in the
background (no shell, 30 s limit); with `omega`, `stop()` runs the down
scripts of what is still up.  `reload(conf)` keeps the checker state of the
real servers whose definition did not change (keepalived_apply.carry_over)
and restarts the tasks of the others.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shlex
import signal
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..model import (
    FWD_MASQ,
    FWD_TUNNEL,
    PROTO_SWITCH,
    Addr,
    Dest,
    Service,
    format_addr,
    format_endpoint,
)
from . import ipvsadm as ia
from .config import Config
from .engine_sync import EngineSync
from .keepalived import CheckerDef, KeepalivedConf
from .keepalived_apply import Event, VsState, carry_over, reconcile, start_states
from .logs import log

SCRIPT_TIMEOUT = 30.0
MAX_BODY = 4 * 1024 * 1024
USER_AGENT = "userlb-health"

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Result:
    ok: bool
    reason: str = ""
    weight: int | None = None        # misc_dynamic


# ----------------------------------------------------------------- attempts

def _host(addr: Addr) -> str:
    return format_addr(addr)


async def _connect(cd: CheckerDef, addr: Addr, port: int,
                   tls: ssl.SSLContext | None = None, sni: str | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = None
    if cd.bindto is not None:
        local = (_host(cd.bindto), cd.bind_port or 0)
    return await asyncio.open_connection(_host(addr), port, local_addr=local, ssl=tls,
                                         server_hostname=sni if tls is not None else None)


def _target(cd: CheckerDef, addr: Addr, port: int) -> tuple[Addr, int]:
    return (cd.connect_ip if cd.connect_ip is not None else addr,
            cd.connect_port if cd.connect_port is not None else port)


async def tcp_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    a, p = _target(cd, addr, port)
    try:
        _r, w = await asyncio.wait_for(_connect(cd, a, p), cd.connect_timeout)
    except TimeoutError:
        return Result(False, f"no connection to {format_endpoint(a, p)} within "
                             f"{cd.connect_timeout:g}s")
    except OSError as e:
        return Result(False, f"{format_endpoint(a, p)}: {_oserror(e)}")
    w.close()
    return Result(True)


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _http_once(cd: CheckerDef, a: Addr, p: int, path: str, vhost: str,
                     tls: bool) -> tuple[int, bytes]:
    r, w = await _connect(cd, a, p, _tls_context() if tls else None,
                          vhost if cd.enable_sni else None)
    try:
        w.write(f"GET {path} HTTP/1.0\r\nUser-Agent: {USER_AGENT}\r\nHost: {vhost}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1"))
        await w.drain()
        data = await r.read(MAX_BODY + 65536)
        while True:
            more = await r.read(65536)
            if not more or len(data) > MAX_BODY + 65536:
                break
            data += more
    finally:
        w.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    status = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise ValueError("not an HTTP response")
    return int(status[1]), body


async def http_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    a, p = _target(cd, addr, port)
    tls = cd.kind == "SSL_GET"
    for url in cd.urls:
        vhost = url.virtualhost or cd.virtualhost or _host(a)
        if ":" in vhost and not vhost.startswith("["):
            vhost = f"[{vhost}]"
        try:
            code, body = await asyncio.wait_for(_http_once(cd, a, p, url.path, vhost, tls),
                                                cd.connect_timeout)
        except TimeoutError:
            return Result(False, f"GET {url.path}: no answer within {cd.connect_timeout:g}s")
        except OSError as e:             # ssl.SSLError included
            return Result(False, f"GET {url.path}: {_oserror(e)}")
        except (ValueError, asyncio.IncompleteReadError) as e:
            return Result(False, f"GET {url.path}: {e}")
        ok = (code in url.status_codes) if url.status_codes is not None else 200 <= code < 300
        if not ok:
            return Result(False, f"GET {url.path}: status {code}")
        if url.digest is not None:
            got = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if got != url.digest:
                return Result(False, f"GET {url.path}: digest {got} != {url.digest}")
    return Result(True)


async def misc_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    argv = shlex.split(cd.misc_path or "")
    timeout = cd.misc_timeout if cd.misc_timeout is not None else cd.delay_loop
    try:
        become = _as_user(cd.user, cd.group)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=become)
    except (OSError, ValueError, KeyError) as e:
        return Result(False, f"cannot run {argv[0] if argv else '?'}: "
                             f"{getattr(e, 'strerror', None) or e}")
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return Result(False, f"{argv[0]}: no exit within {timeout:g}s (killed)")
    except asyncio.CancelledError:
        _kill_group(proc.pid)             # stopping: leave no checker process behind
        raise
    if code == 0:
        return Result(True)
    if cd.misc_dynamic and 2 <= code <= 255:
        return Result(True, weight=code - 2)
    return Result(False, f"{argv[0]}: exit {code}" if code > 0 else
                  f"{argv[0]}: killed by signal {-code}")


def _as_user(user: str | None, group: str | None) -> Callable[[], None] | None:
    """MISC_CHECK's `user USER [GROUP]` as a preexec_fn (uvloop's
    subprocess_exec has no user=/group=).  KeyError for an unknown name."""
    if user is None:
        return None
    import grp
    import pwd
    pw = pwd.getpwnam(user)
    uid, gid = pw.pw_uid, (grp.getgrnam(group).gr_gid if group else pw.pw_gid)

    def become() -> None:
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
    return become


def _oserror(e: OSError) -> str:
    """'Connection refused' rather than asyncio's 'Connect call failed (...)'."""
    if e.errno and not isinstance(e, ssl.SSLError):
        return os.strerror(e.errno)
    return str(e)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def dns_query(qid: int, name: str, qtype: int) -> bytes:
    """A DNS query (RD set) for `name`, type `qtype`, class IN."""
    labels = [p for p in name.rstrip(".").split(".") if p] if name != "." else []
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in labels) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


class _DnsProto(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 12 and struct.unpack_from("!H", data)[0] == self.qid \
                and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def dns_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    """One query over UDP: up when the answer has the query's id, no error
    code and at least one answer record."""
    from .keepalived import DNS_TYPES
    a, p = _target(cd, addr, port)
    qid = random.getrandbits(16)
    loop = asyncio.get_running_loop()
    local = (_host(cd.bindto), cd.bind_port or 0) if cd.bindto is not None else None
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _DnsProto(qid), remote_addr=(_host(a), p), local_addr=local)
    except OSError as e:
        return Result(False, f"{format_endpoint(a, p)}: {_oserror(e)}")
    try:
        transport.sendto(dns_query(qid, cd.dns_name, DNS_TYPES[cd.dns_type]))
        data = await asyncio.wait_for(proto.answer, cd.connect_timeout)
    except TimeoutError:
        return Result(False, f"no DNS answer within {cd.connect_timeout:g}s")
    except OSError as e:
        return Result(False, f"{format_endpoint(a, p)}: {_oserror(e)}")
    finally:
        transport.close()
    flags, _qd, ancount = struct.unpack_from("!HHH", data, 2)
    if not flags & 0x8000:
        return Result(False, "DNS: not a response")
    if flags & 0xF:
        return Result(False, f"DNS: rcode {flags & 0xF}")
    if ancount == 0:
        return Result(False, f"DNS: no answer for {cd.dns_type} {cd.dns_name}")
    return Result(True)


async def udp_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    """One datagram (`payload`) to the target.  Without `require_reply`: up
    unless an ICMP error (port unreachable, ...) comes back within
    connect_timeout.  With it: up only when an answer comes within
    connect_timeout, starts with the given bytes and has a length within
    min/max_reply_length."""
    a, p = _target(cd, addr, port)
    loop = asyncio.get_running_loop()
    # a socket of its own: asyncio's datagram transport does not send an
    # empty payload (keepalived's default)
    sock = socket.socket(socket.AF_INET if isinstance(a, int) else socket.AF_INET6,
                         socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if cd.bindto is not None:
            sock.bind((_host(cd.bindto), cd.bind_port or 0))
        sock.connect((_host(a), p))
        sock.send(cd.payload)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), cd.connect_timeout)
    except TimeoutError:
        if cd.require_reply:
            return Result(False, f"no UDP answer from {format_endpoint(a, p)} within "
                                 f"{cd.connect_timeout:g}s")
        return Result(True)
    except OSError as e:
        return Result(False, f"{format_endpoint(a, p)}: {_oserror(e)}")
    finally:
        sock.close()
    if not cd.require_reply:
        return Result(True)
    if cd.reply_prefix is not None and not data.startswith(cd.reply_prefix):
        return Result(False, f"UDP answer {data[:16].hex()} does not start with "
                             f"{cd.reply_prefix[:16].hex()}")
    hi = cd.max_reply_length if cd.max_reply_length is not None else 65535
    if not cd.min_reply_length <= len(data) <= hi:
        return Result(False, f"UDP answer of {len(data)} bytes (not {cd.min_reply_length}..{hi})")
    return Result(True)


def _icmp_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping_socket(v6: bool) -> tuple[socket.socket, bool]:
    """A raw ICMP socket (root), else a ping socket (net.ipv4.ping_group_range);
    (socket, raw?)."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(fam, socket.SOCK_RAW, proto), True
    except PermissionError:
        return socket.socket(fam, socket.SOCK_DGRAM, proto), False


async def ping_check(cd: CheckerDef, addr: Addr, port: int) -> Result:
    """One ICMP (v6) echo request to connect_ip (default: the real server);
    up when the matching echo reply comes within connect_timeout."""
    a = cd.connect_ip if cd.connect_ip is not None else addr
    v6 = not isinstance(a, int)
    loop = asyncio.get_running_loop()
    ident, seq = random.getrandbits(16), random.getrandbits(16)
    payload = b"userlb PING_CHECK"
    try:
        sock, raw = _ping_socket(v6)
    except OSError as e:
        return Result(False, f"no ICMP socket: {_oserror(e)}")
    try:
        sock.setblocking(False)
        if cd.bindto is not None:
            sock.bind((_host(cd.bindto), 0))
        sock.connect((_host(a), 0))
        head = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq)
        if not v6:             # ICMPv6's checksum is the kernel's (pseudo-header)
            head = head[:2] + struct.pack("!H", _icmp_sum(head + payload)) + head[4:]
        await loop.sock_sendall(sock, head + payload)
        deadline = loop.time() + cd.connect_timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            if raw and not v6 and data:
                data = data[(data[0] & 0x0F) * 4:]          # the IPv4 header
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
            # a ping socket sets the id itself: match the sequence only
            if typ == (129 if v6 else 0) and rseq == seq and (rid == ident or not raw):
                return Result(True)
    except TimeoutError:
        return Result(False, f"no echo reply from {_host(a)} within {cd.connect_timeout:g}s")
    except OSError as e:
        return Result(False, f"ping {_host(a)}: {_oserror(e)}")
    finally:
        sock.close()


ATTEMPTS: dict[str, Callable[[CheckerDef, Addr, int], Awaitable[Result]]] = {
    "TCP_CHECK": tcp_check, "HTTP_GET": http_check, "SSL_GET": http_check,
    "MISC_CHECK": misc_check, "DNS_CHECK": dns_check, "UDP_CHECK": udp_check,
    "PING_CHECK": ping_check}


# ------------------------------------------------------------------ manager

Attempt = Callable[[CheckerDef, Addr, int], Awaitable[Result]]


class HealthManager:
    """See the module docstring.  `attempt` and `sleep` are injectable (tests
    give fakes); `sync` is the EngineSync of `config` and the engine when
    there is one."""

    def __init__(self, config: Config, conf: KeepalivedConf, sync: EngineSync | None = None,
                 log: Callable[[str], None] | None = None, attempt: Attempt | None = None,
                 sleep: Sleep | None = None, rng: random.Random | None = None) -> None:
        self.config, self.conf, self.sync = config, conf, sync
        self.log = log or _log
        self.attempt: Attempt = attempt or (lambda cd, a, p: ATTEMPTS[cd.kind](cd, a, p))
        self.sleep: Sleep = sleep or asyncio.sleep
        self.rng = rng or random.Random()
        self.states = start_states(conf)
        self.tasks: dict[tuple[int, int, int], asyncio.Task[None]] = {}
        self.scripts: set[asyncio.Task[None]] = set()
        self.changes = 0

    # ------------------------------------------------------------ commands
    def initial_commands(self) -> list[ia.Command]:
        from .keepalived_apply import initial_commands
        return initial_commands(self.states, self.conf.timeouts)

    def apply(self, cmds: list[ia.Command], why: str) -> bool:
        """All or nothing, as a `userlb adm -R` request; logged."""
        if not cmds:
            return True
        if self.sync is not None:
            self.sync.begin()
        try:
            self.config.apply_batch(cmds)
        except ConfigError as e:
            self.log(f"keepalived: {why}: refused: {e.message}; nothing changed")
            return False
        finally:
            if self.sync is not None:
                self.sync.end()
        self.changes += 1
        for c in cmds:
            self.log(f"keepalived: {why}: {' '.join(_argv_text(c))}")
        return True

    # --------------------------------------------------------------- tasks
    def start(self) -> None:
        for i, st in enumerate(self.states):
            self._start_vs(i, st)

    def _start_vs(self, i: int, st: VsState, only: set[int] | None = None) -> None:
        vport = st.vs.services[0][2]
        for r, s in enumerate(st.rs):
            if only is not None and r not in only:
                continue
            for c, cd in enumerate(s.rs.checkers):
                t = asyncio.get_running_loop().create_task(
                    self._loop(i, r, c, cd, s.rs.addr, s.rs.port_for(vport)))
                self.tasks[(i, r, c)] = t

    async def _loop(self, i: int, r: int, c: int, cd: CheckerDef, addr: Addr,
                    port: int) -> None:
        if cd.warmup > 0:
            await self.sleep(self.rng.uniform(0, cd.warmup))
        failures = 0
        while True:
            try:
                res = await self.attempt(cd, addr, port)
            except Exception as e:   # noqa: BLE001 - a checker bug is a failed check
                res = Result(False, f"checker error: {e!r}")
            up = self.states[i].rs[r].checker_up[c]
            if not res.ok:
                failures += 1
                if up and failures <= cd.retry:
                    await self.sleep(cd.delay_before_retry)
                    continue
            failures = 0
            try:
                self.report(i, r, c, res.ok, res)
            except Exception as e:   # noqa: BLE001 - a bug must not stop the checks
                self.log(f"keepalived: internal error on a checker verdict: {e!r}")
            await self.sleep(cd.delay_loop)

    def report(self, i: int, r: int, c: int, up: bool, res: Result) -> list[Event]:
        """A checker's verdict: state, events, commands, scripts."""
        st = self.states[i]
        events = st.set_checker(r, c, up, res.weight, res.reason)
        if not events:
            return events
        vport = st.vs.services[0][2]
        for ev in events:
            if ev.rs is not None:
                name = ev.rs.rs.name(vport)
                cd = ev.rs.rs.checkers[c]
                self.log(f"keepalived: {st.vs.name}: real server {name} {ev.what.upper()}"
                         f" ({cd.describe()}{': ' + ev.text if ev.text else ''})")
                script = ev.rs.rs.notify_up if ev.what == "up" else (
                    ev.rs.rs.notify_down if ev.what == "down" else None)
            else:
                self.log(f"keepalived: {st.vs.name}: quorum "
                         f"{'gained' if ev.what == 'quorum-up' else 'lost'} ({ev.text})"
                         + (", sorry server " + format_endpoint(*st.vs.sorry_server)
                            + (" out" if ev.what == "quorum-up" else " in")
                            if st.vs.sorry_server is not None else ""))
                script = st.vs.quorum_up if ev.what == "quorum-up" else st.vs.quorum_down
            if script:
                self.run_script(script)
        self.apply(reconcile(self.config, st), st.vs.name)
        return events

    def run_script(self, script: str) -> None:
        try:
            t = asyncio.get_running_loop().create_task(self._script(script))
        except RuntimeError:
            return
        self.scripts.add(t)
        t.add_done_callback(self.scripts.discard)

    async def _script(self, script: str) -> None:
        argv = shlex.split(script)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        except (OSError, ValueError) as e:
            self.log(f"keepalived: script {script!r}: {getattr(e, 'strerror', None) or e}")
            return
        try:
            code = await asyncio.wait_for(proc.wait(), SCRIPT_TIMEOUT)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            self.log(f"keepalived: script {script!r}: killed after {SCRIPT_TIMEOUT:g}s")
            return
        if code:
            self.log(f"keepalived: script {script!r}: exit {code}")

    # -------------------------------------------------------------- reload
    def reload(self, conf: KeepalivedConf, cmds_for: Callable[[list[VsState]], list[ia.Command]]
               ) -> int:
        """Switch to a re-read keepalived.conf.  `cmds_for(states)` returns the
        commands that turn the running Config into the one `states` stand for
        (the caller diffs); they are applied first, all or nothing (raises
        ConfigError, nothing changed).  Checkers of unchanged real servers go
        on; the others are restarted.  Returns the number of commands."""
        new_states = carry_over(self.states, conf)
        cmds = cmds_for(new_states)
        if self.sync is None:
            self.config.apply_batch(cmds)
        else:
            self._apply_synced(cmds)
        for c in cmds:
            self.log(f"keepalived: reload: {' '.join(_argv_text(c))}")
        # every checker starts again on the new indices; the states were carried
        for t in self.tasks.values():
            t.cancel()
        self.conf, self.states, self.tasks = conf, new_states, {}
        for i, st in enumerate(self.states):
            self._start_vs(i, st)
        return len(cmds)

    def _apply_synced(self, cmds: list[ia.Command]) -> None:
        assert self.sync is not None
        self.sync.begin()
        try:
            self.config.apply_batch(cmds)
        finally:
            self.sync.end()

    # ---------------------------------------------------------------- stop
    async def stop(self) -> None:
        """Cancel the checkers; with `omega`, run the down scripts of what is
        still up (and wait for them, up to SCRIPT_TIMEOUT)."""
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks = {}
        for st in self.states:
            if not st.vs.omega:
                continue
            for s in st.rs:
                if s.alive and s.rs.notify_down:
                    self.run_script(s.rs.notify_down)
            if st.quorum_up and st.vs.quorum_down:
                self.run_script(st.vs.quorum_down)
        if self.scripts:
            await asyncio.wait(list(self.scripts), timeout=SCRIPT_TIMEOUT)

    # -------------------------------------------------------------- status
    def quorum_of(self, svc: Service) -> bool | None:
        """Whether the quorum of svc's virtual server holds (None: svc is not
        one of keepalived.conf's); the control socket's `state` reply."""
        for st in self.states:
            if svc.key in st.vs.services:
                return st.quorum_up
        return None

    def state_of(self, svc: Service, d: Dest) -> str:
        """`-L --health`: 'up', 'down', 'sorry' (the sorry server), or '-'
        (a destination keepalived.conf does not check)."""
        for st in self.states:
            if svc.key not in st.vs.services:
                continue
            for s in st.rs:
                if (s.rs.addr, s.rs.port_for(svc.port)) == d.key:
                    if not s.rs.checkers:
                        return "-"
                    return "up" if s.alive else "down"
            if st.vs.sorry_server == d.key:
                return "sorry"
        return "-"

    def status(self) -> list[str]:
        """One line per real server: virtual server, real server, state."""
        out = []
        for st in self.states:
            vport = st.vs.services[0][2]
            q = "" if st.quorum_up else " (quorum lost)"
            for s in st.rs:
                state = "up" if s.alive else f"down: {s.reason}" if s.reason else "down"
                out.append(f"{st.vs.name}{q} {s.rs.name(vport)} weight {s.weight} {state}")
        return out


def _argv_text(c: ia.Command) -> list[str]:
    """The ipvsadm words of a destination command, for the log."""
    words = [{ia.ADD_SERVER: "-a", ia.EDIT_SERVER: "-e", ia.DEL_SERVER: "-d",
              ia.ADD_SERVICE: "-A", ia.EDIT_SERVICE: "-E", ia.DEL_SERVICE: "-D"}.get(c.cmd, c.cmd)]
    if c.has_service and c.addr is not None and c.port is not None:
        words += [PROTO_SWITCH.get(c.protocol or 0, "-u"), format_endpoint(c.addr, c.port)]
    if c.has_dest and c.daddr is not None and c.dport is not None:
        words += ["-r", format_endpoint(c.daddr, c.dport)]
        if c.cmd != ia.DEL_SERVER:
            words += [{FWD_MASQ: "-m", FWD_TUNNEL: "-i"}.get(c.fwd, "-g"), "-w", str(c.weight)]
    elif c.cmd in (ia.ADD_SERVICE, ia.EDIT_SERVICE):
        words += ["-s", c.scheduler]
    return words


def _log(msg: str) -> None:
    log(msg)


# ------------------------------------------------- `userlb run --keepalived`

def load_director(path: str, log: Callable[[str], None] | None = None
                  ) -> tuple[Config, HealthManager]:
    """keepalived.conf `path` -> the Config to start with and its manager
    (start() it on the running loop; set `.sync` first).  Raises
    KeepalivedError / ConfigError."""
    from .keepalived import load
    conf = load(path)
    cfg = Config()
    mgr = HealthManager(cfg, conf, log=log)
    cfg.apply_batch(mgr.initial_commands())
    for note in conf.notes:
        mgr.log(f"keepalived: {note}")
    if conf.skipped:
        mgr.log("keepalived: left to keepalived: " + ", ".join(conf.skipped))
    return cfg, mgr


def reload_director(mgr: HealthManager, path: str) -> int:
    """SIGHUP: re-read `path`, apply the difference (services and
    destinations that did not change are kept; connection entries too).
    Returns the number of commands applied.  Raises KeepalivedError /
    ConfigError: the running configuration and checkers are then unchanged."""
    from .diff import diff_commands
    from .keepalived import load
    from .keepalived_apply import build_config
    conf = load(path)

    def cmds_for(states: list[VsState]) -> list[ia.Command]:
        new = build_config(states, conf.timeouts)
        if conf.timeouts is None:                # no lvs_timeouts: --set is left alone
            new.timeouts = mgr.config.timeouts
        return diff_commands(mgr.config, new)
    return mgr.reload(conf, cmds_for)
