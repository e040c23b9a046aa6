"""`LbLab` and its parts: the typed surface of userlb.testing (see its docstring).

Everything here drives the namespace lab of `userlb.lab` (`Lab`: topology,
processes, sessions); the only things added are the typed objects, a user's
own command as a real server (through `userlb.testing.supervise`), readiness
by listening port, the `ipvsadm` shim, parsing of `-L -n -c`, and the owner
file that lets a later run remove a lab whose test process was killed.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

from ..lab import ECHO, HTTP, UDP_ECHO, VIP4, VIP6, LabError, Streams, core, rules
from ..lab.base import server_addr4, server_addr6, short
from ..lab.processes import child_env
from ..lab.sessions import client_argv
from ..lab.topology import sysctls

__all__ = ["AdmError", "AdmResult", "Client", "Director", "Flow", "HttpReply", "LabError",
           "LbLab", "RealServer", "StreamState", "TcpStreams", "sweep_stale",
           "unavailable_reason"]

#: a command: one string (run by `sh -c`) or a list of words (run as is)
Command: TypeAlias = "str | Sequence[str]"
#: rules: ipvsadm -R lines, or a function of the lab (before it is up) giving them
RulesSpec: TypeAlias = "str | Callable[[LbLab], str]"
#: a real server's command: words (with {name} {index} {addr4} {addr6} {port}
#: replaced), or a function of the RealServer giving the words
ServerCommand: TypeAlias = "Sequence[str] | Callable[[RealServer], Sequence[str]]"

OWNER_FILE = "owner.json"
#: -b of the default rules per scheduler (the lab's own choice, userlb/lab/rules.py):
#: without them mh and sh hash the client address only, and a real server at
#: weight 0 refuses the connections that hash to it (as the kernel does)
DEFAULT_FLAGS = {"mh": "mh-fallback,mh-port", "sh": "sh-fallback,sh-port"}


def _untyped(obj: object) -> Any:
    """userlb.lab is not annotated: calls into it go through Any (so that
    this module type-checks the same under mypy --strict and the project's
    settings, without `type: ignore`)."""
    return obj


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (None: it can): root, /dev/net/tun and
    iproute2's `ip` are needed."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a TUN device)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (in a container: --device /dev/net/tun --cap-add NET_ADMIN)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


# ----------------------------------------------------------------- results
class AdmResult(NamedTuple):
    """What running `ipvsadm ARGS` printed and returned: 0 success, 2 a
    syntax error (or no director), 255 a command the director refused."""
    returncode: int
    stdout: str
    stderr: str


class AdmError(LabError):
    """`Director.adm` of a command the director refused or could not parse."""

    def __init__(self, argv: Sequence[str], status: int, message: str) -> None:
        super().__init__(f"ipvsadm {' '.join(argv)}: {message} (exit {status})")
        self.argv = list(argv)
        self.status = status
        self.message = message


class Flow(NamedTuple):
    """One connection entry of the director (`ipvsadm -L -n -c`)."""
    proto: str          # "TCP" or "UDP"
    client: str         # the client's address (IPv6 without brackets)
    cport: int
    vip: str
    vport: int
    rip: str            # the real server's address
    rport: int
    state: str          # ESTABLISHED, SYN_RECV, TIME_WAIT, ..., UDP
    expires: int        # seconds left
    server: str | None  # the real server's name ("s1"), None if not a lab server


@dataclass
class HttpReply:
    """One HTTP GET from the client namespace.  `error` is set (and status
    is 0) when no answer came."""
    status: int
    body: str
    headers: dict[str, str]
    client: str | None
    cport: int | None
    error: str | None = None
    tries: int = 1

    @property
    def ok(self) -> bool:
        """An answer with a 2xx status."""
        return self.error is None and 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def server(self) -> str | None:
        """The answering real server's name when it is one of the lab's own
        servers (their body is {"server": NAME, ...}); else None."""
        try:
            data = self.json()
        except ValueError:
            return None
        return data.get("server") if isinstance(data, dict) else None


@dataclass
class StreamState:
    """One long-lived connection of `Client.tcp_stream`."""
    client: str
    cport: int
    vip: str
    vport: int
    server: str
    rounds: int = 0
    bytes: int = 0
    error: str | None = None
    done: bool = False
    intact: bool = True
    max_gap: float = 0.0

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> StreamState:
        known = {k: rec[k] for k in cls.__dataclass_fields__ if k in rec}
        return cls(**known)


# ----------------------------------------------------------------- parts
class _LabBox:
    """What the parts share: the lab (`userlb.lab.Lab`) they drive."""

    def __init__(self, owner: LbLab) -> None:
        self._owner = owner

    @property
    def _lab(self) -> Any:
        return self._owner._require()


class Director(_LabBox):
    """The director: `userlb run` on a TUN device in its own namespace."""

    @property
    def namespace(self) -> str:
        return str(self._lab.director)

    @property
    def control_path(self) -> str:
        """Its control socket (`userlb adm --control PATH`)."""
        return str(self._lab.control_path)

    @property
    def bin_dir(self) -> str:
        """A directory holding an `ipvsadm` command that talks to this
        director: put it first on PATH for scripts under test (`run_in` does)."""
        return os.path.join(str(self._lab.dir), "bin")

    @property
    def ipvsadm_path(self) -> str:
        """The `ipvsadm` command of `bin_dir`."""
        return os.path.join(self.bin_dir, "ipvsadm")

    @property
    def pid(self) -> int | None:
        pid = self._lab.director_pid(1)
        return int(pid) if pid else None

    @property
    def running(self) -> bool:
        pid = self.pid
        return bool(pid and self._lab.ours(pid))

    def ipvsadm(self, *args: str, input: str | None = None) -> AdmResult:
        """Run an ipvsadm command against the director, as the `ipvsadm`
        program would: never raises for a refused command, returns its exit
        status and output.  `ipvsadm("-L -n")` (one string, split like a
        shell) and `ipvsadm("-L", "-n")` are the same; a leading word
        "ipvsadm" is dropped.  -R reads `input`."""
        argv = _words(args)
        from ..control import protocol
        req: dict[str, Any] = {"argv": argv}
        if input is not None:
            req["stdin"] = input
        try:
            resp = protocol.request(self.control_path, req)
        except protocol.NoDirector:
            return AdmResult(2, "", f"no director listening on {self.control_path}\n")
        out, err = str(resp.get("output", "")), str(resp.get("error", ""))
        return AdmResult(int(resp.get("status", 0 if resp.get("ok") else 255)), out,
                         err + ("\n" if err and not err.endswith("\n") else ""))

    def adm(self, *args: str, input: str | None = None) -> str:
        """`ipvsadm` that raises: the command's output, or AdmError."""
        argv = _words(args)
        r = self.ipvsadm(*argv, input=input)
        if r.returncode:
            raise AdmError(argv, r.returncode, r.stderr.strip())
        return r.stdout

    def rules(self) -> str:
        """The configuration in force, as `ipvsadm -S -n` prints it."""
        return self.adm("-S", "-n")

    def listing(self, *options: str) -> str:
        """`ipvsadm -L -n OPTIONS` (e.g. "--stats")."""
        return self.adm("-L", "-n", *options)

    def restore(self, text: str, flush: bool = True) -> None:
        """Replace (flush=True: `-C` first, as ipvsadm-restore) or extend the
        configuration with ipvsadm -R lines, all or nothing."""
        if flush:
            text = "-C\n" + text
        self.adm("-R", input=text)

    def stop(self, hard: bool = False) -> None:
        """Stop the director (SIGTERM; SIGKILL with hard=True).  Without a
        director the VIPs are unreachable (its routes go with it)."""
        if hard and self.pid and self._lab.ours(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self._lab.stop_director()

    def start(self) -> None:
        """Start the director again with the lab's rules file (the rules it
        started with: run-time `adm` changes are not kept)."""
        if self.running:
            raise LabError("the director is running")
        self._lab.start_director()

    def log(self) -> str:
        """What the director wrote to stderr."""
        with open(self._lab.director_log) as f:
            return f.read()


class RealServer(_LabBox):
    """Real server i: a namespace with addresses addr4 / addr6, running the
    lab's servers or the user's command."""

    def __init__(self, owner: LbLab, index: int) -> None:
        super().__init__(owner)
        self.index = index
        self.name = f"s{index}"
        self.addr4 = server_addr4(index)
        self.addr6 = server_addr6(index)

    def __repr__(self) -> str:
        return f"RealServer({self.name}, {self.addr4}, {self.addr6})"

    @property
    def namespace(self) -> str:
        return f"{self._lab.tag}-{self.name}"

    @property
    def pid(self) -> int | None:
        pid = self._lab.pids.get(self.name)
        return int(pid) if pid else None

    @property
    def running(self) -> bool:
        pid = self.pid
        return bool(pid and self._lab.ours(pid))

    def endpoint(self, port: int, v6: bool = False) -> str:
        """'addr:port' as ipvsadm writes it (IPv6 in brackets)."""
        return f"[{self.addr6}]:{port}" if v6 else f"{self.addr4}:{port}"

    def stop(self, hard: bool = False) -> None:
        """Stop its service (SIGTERM to the process group; SIGKILL with
        hard=True).  The namespace and addresses stay: connections to it are
        refused (RST), as with a crashed service."""
        self._lab.stop_server(self.namespace, hard=hard)

    def start(self) -> None:
        """Start its service again (and wait until it listens)."""
        if self.running:
            raise LabError(f"real server {self.name} is running")
        self._lab.start_server(self.namespace)

    def log(self) -> str:
        """What its service wrote (stdout and stderr)."""
        with open(os.path.join(str(self._lab.dir), f"{self.name}.log")) as f:
            return f.read()


class TcpStreams:
    """Long-lived TCP connections from the client, each sending random
    chunks to an echo service through the VIP and checking every byte that
    comes back (`Client.tcp_stream`).  A context manager; `finish()` ends
    them cleanly (half-close, wait for the echo's end), `close()` abruptly."""

    def __init__(self, streams: Any) -> None:
        self._s = streams
        self.flows = [StreamState.from_record(r) for r in streams.flows]

    def report(self) -> list[StreamState]:
        """The connections' state now (they keep going)."""
        return [StreamState.from_record(r) for r in self._s.report()]

    def finish(self) -> list[StreamState]:
        """Stop sending, half-close, wait for each echo to end: final state."""
        return [StreamState.from_record(r) for r in self._s.finish()]

    def close(self) -> None:
        self._s.close()

    def __enter__(self) -> TcpStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(_LabBox):
    """The client namespace: several source addresses (`sources4`,
    `sources6`), routes to the VIPs through the director."""

    @property
    def namespace(self) -> str:
        return str(self._lab.client)

    @property
    def sources4(self) -> list[str]:
        return list(self._lab.clients4)

    @property
    def sources6(self) -> list[str]:
        return list(self._lab.clients6)

    def http_get(self, vip: str = VIP4, port: int = HTTP, path: str = "/",
                 source: str | None = None, timeout: float = 5.0, tries: int = 1) -> HttpReply:
        """One HTTP/1.0 GET of http://vip:port/path from the client (source:
        one of `sources4`/`sources6`, default the first of the VIP's family;
        tries > 1: try again after a failure)."""
        return self.http_gets(1, vip, port, path, [source] if source else None,
                              timeout, tries)[0]

    def http_gets(self, count: int, vip: str = VIP4, port: int = HTTP, path: str = "/",
                  sources: Sequence[str] | None = None, timeout: float = 5.0,
                  tries: int = 1) -> list[HttpReply]:
        """count GETs in one go (one process in the client namespace), round
        robin over `sources` (default: every source of the VIP's family),
        each from a new kernel-chosen port."""
        if sources is None:
            sources = self.sources6 if ":" in vip else self.sources4
        kw = dict(vip=vip, port=port, path=path, count=count, sources=list(sources),
                  timeout=timeout, tries=tries)
        p = self._lab.exec(self.namespace, client_argv("get", kw),
                           timeout=timeout * tries * count + 30)
        recs = json.loads(p.stdout)
        return [HttpReply(status=int(r.get("status", 0)), body=str(r.get("body", "")),
                          headers=dict(r.get("headers", {})), client=r.get("client"),
                          cport=r.get("cport"), error=r.get("error"),
                          tries=int(r.get("tries", 1)))
                for r in recs]

    def tcp_stream(self, vip: str = VIP4, port: int = ECHO, count: int = 4,
                   chunk: int = 1024, interval: float = 0.05,
                   timeout: float = 20.0) -> TcpStreams:
        """count long-lived connections to vip:port streaming checked data.
        The service must be an echo that first sends one line "NAME ADDR
        PORT" (the lab's own servers on port 7 and 7001-7008 do)."""
        srcs = self.sources6 if ":" in vip else self.sources4
        streams = _untyped(Streams)(self._lab, [[vip, port]], count=count, chunk=chunk,
                                    interval=interval, timeout=timeout, sources=srcs)
        return TcpStreams(streams)


# ----------------------------------------------------------------- the lab
class _Lab(core.Lab):
    """userlb.lab's Lab with the two hooks LbLab fills in: the rules file and
    a user's command as the real servers."""

    def __init__(self, spec: LbLab, **kw: Any) -> None:
        _untyped(super()).__init__(**kw)
        self.spec = spec

    def ns_add(self, name: str) -> None:
        """A namespace whose links come up without IPv6 duplicate address
        detection: otherwise their link-local addresses stay tentative for
        about two seconds and the first IPv6 flow waits that long."""
        _untyped(super()).ns_add(name)
        _untyped(sysctls)(name, (("net.ipv6.conf.default.accept_dad", 0),
                                 ("net.ipv6.conf.all.accept_dad", 0)))

    def rules_text(self, servers: Any = None, weights: Any = None, extra: str = "") -> str:
        return self.spec._rules_text() + extra

    def start_server(self, ns: str) -> Any:
        spec = self.spec
        if spec.server_command is None:
            return _untyped(super()).start_server(ns)
        srv = spec.server(int(short(ns)[1:]))
        cmd = spec.server_command(srv) if callable(spec.server_command) else [
            str(w).format(name=srv.name, index=srv.index, addr4=srv.addr4, addr6=srv.addr6,
                          port=spec.server_port) for w in spec.server_command]
        argv = [sys.executable, "-m", "userlb.testing.supervise", "--lab", self.tag,
                "--name", srv.name, "--"] + [str(w) for w in cmd]
        p = _untyped(self).start(srv.name, ns, argv)
        if spec.server_port:
            _wait_listening(p, spec.server_port, spec.ready_timeout,
                            os.path.join(str(self.dir), f"{srv.name}.log"), srv.name)
        return p


def _wait_listening(p: subprocess.Popen[Any], port: int, timeout: float, log: str,
                    name: str) -> None:
    """Until a TCP socket listens on port in the namespace of process p."""
    deadline = time.monotonic() + timeout
    while True:
        if _listening(p.pid, port):
            return
        if p.poll() is not None or time.monotonic() > deadline:
            try:
                with open(log) as f:
                    text = f.read().strip()
            except OSError:
                text = ""
            why = (f"exited with {p.returncode}" if p.returncode is not None
                   else f"not listening on port {port} after {timeout}s")
            raise LabError(f"real server {name} {why}" + (f":\n{text}" if text else ""))
        time.sleep(0.02)


def _listening(pid: int, port: int) -> bool:
    """Does a TCP socket listen on port in pid's network namespace?"""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration):
            continue
    return False


def _words(args: Sequence[str]) -> list[str]:
    """ipvsadm words from ("-a -t ...",) or ("-a", "-t", ...); "ipvsadm" dropped."""
    argv = shlex.split(args[0]) if len(args) == 1 else [str(a) for a in args]
    return argv[1:] if argv[:1] == ["ipvsadm"] else argv


def _proc_start(pid: int) -> str | None:
    """A process's start time (clock ticks after boot), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class LbLab:
    """A load-balancer lab in network namespaces: a client, a director
    running `userlb run` (IPVS NAT, `ipvsadm` semantics) and `servers` real
    servers.  Build it with `up()` (or `with LbLab(...) as lab:`), remove it
    with `close()`; everything is removed even when building fails.

    servers          number of real servers s1..sN (10.20.0.11.., fd00:20::b..)
    rules            the director's rules: ipvsadm -R lines (what `ipvsadm -S -n`
                     prints), or a function lab -> lines; default: every real
                     server behind both VIPs (VIP4, VIP6) with `scheduler` --
                     for the lab's own servers TCP 80 (HTTP), TCP 7 (echo) and
                     UDP 7 (echo), for `server_command` TCP `server_port`
    scheduler        -s of the default rules (mh, sh, rr, wlc, mhs, ...)
    scheduler_flags  -b of the default rules; None: DEFAULT_FLAGS (mh and sh spread
                     connections, not clients: mh-port/sh-port, and skip a
                     weight-0 server: mh-fallback/sh-fallback); "" for none
    server_command   run this instead of the lab's servers on each real server:
                     words with {name} {index} {addr4} {addr6} {port} replaced,
                     or a function RealServer -> words; it is stopped with
                     SIGTERM to its process group
    server_port      the port `server_command` listens on (TCP): start() waits
                     until it listens (0: do not wait)
    clients          client source addresses per family (10.10.0.2.., fd00:10::2..)
    sloppy_tcp       start the director with --sloppy-tcp
    """
    servers: int = 2
    rules: RulesSpec | None = None
    scheduler: str = "mh"
    scheduler_flags: str | None = None
    server_command: ServerCommand | None = None
    server_port: int = HTTP
    clients: int = 2
    sloppy_tcp: bool = False
    ready_timeout: float = 15.0
    _lab_obj: Any = field(default=None, init=False, repr=False)

    vip4 = VIP4
    vip6 = VIP6

    # ------------------------------------------------------------ life
    def up(self) -> LbLab:
        """Build the lab (namespaces, links, real servers, the director with
        its rules): self.  On failure everything made is removed and the
        error (LabError, naming the part that failed) raised."""
        if self._lab_obj is not None:
            raise LabError("this lab is already up")
        if self.servers < 1:
            raise LabError("servers: at least 1")
        reason = unavailable_reason()
        if reason:
            raise LabError(f"userlb lab: {reason}")
        lab = _Lab(self, n_servers=self.servers, n_clients=self.clients,
                   sloppy=self.sloppy_tcp, current=False)
        self._lab_obj = lab
        lab.dir.mkdir(parents=True, exist_ok=True)
        (lab.dir / OWNER_FILE).write_text(json.dumps(
            {"pid": os.getpid(), "start": _proc_start(os.getpid())}))
        self._write_shim()
        try:
            _untyped(lab).up()
        except BaseException:
            self._lab_obj = None
            raise
        return self

    def close(self) -> list[str]:
        """Stop every process the lab started and delete its namespaces and
        state (idempotent): the errors met, if any."""
        lab = self._lab_obj
        if lab is None:
            return []
        errors = list(lab.down())
        self._lab_obj = None
        return errors

    def __enter__(self) -> LbLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self) -> Any:
        if self._lab_obj is None:
            raise LabError("the lab is not up")
        return self._lab_obj

    # ------------------------------------------------------------ parts
    @property
    def tag(self) -> str:
        """ulb-SUFFIX: the prefix of every namespace of this lab."""
        return str(self._require().tag)

    @property
    def namespaces(self) -> list[str]:
        return list(self._require().namespaces)

    @property
    def director(self) -> Director:
        return Director(self)

    @property
    def client(self) -> Client:
        return Client(self)

    def server(self, i: int) -> RealServer:
        """Real server i (1-based, as named: s1, s2, ...)."""
        if not 1 <= i <= self.servers:
            raise LabError(f"no real server {i} (1..{self.servers})")
        return RealServer(self, i)

    @property
    def real_servers(self) -> list[RealServer]:
        return [self.server(i) for i in range(1, self.servers + 1)]

    # ------------------------------------------------------------ doing
    def run_in(self, where: Director | RealServer | Client | str, cmd: Command, *,
               input: str | None = None, check: bool = True,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run cmd inside a namespace of the lab (a part, or a namespace
        name): a string through `sh -c`, a list as is.  PATH starts with the
        director's `bin_dir` (so `ipvsadm` is this lab's) and PYTHONPATH
        finds userlb.  check=True: LabError on a non-zero exit."""
        ns = where if isinstance(where, str) else where.namespace
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(w) for w in cmd]
        env = child_env()
        env["PATH"] = self.director.bin_dir + os.pathsep + env.get("PATH", os.defpath)
        p = subprocess.run(["ip", "netns", "exec", ns] + argv, input=input, text=True,
                           capture_output=True, timeout=timeout, env=env)
        if check and p.returncode:
            raise LabError(f"in {ns}: {' '.join(argv)}: exit {p.returncode}\n"
                           f"{p.stdout}{p.stderr}".rstrip())
        return p

    def flows(self) -> list[Flow]:
        """The director's connection entries (`ipvsadm -L -n -c`)."""
        names = {}
        for s in self.real_servers:
            names[s.addr4] = s.name
            names[str(ipaddress.ip_address(s.addr6))] = s.name
        out = []
        for line in self.director.adm("-L", "-n", "-c").splitlines()[2:]:
            w = line.split()
            if len(w) < 6:
                continue
            mins, _, secs = w[1].partition(":")
            (c, cp), (v, vp), (r, rp) = (_endpoint(x) for x in w[3:6])
            out.append(Flow(w[0], c, cp, v, vp, r, rp, w[2], int(mins) * 60 + int(secs or 0),
                            names.get(r)))
        return out

    @contextmanager
    def stopped(self, *servers: RealServer) -> Iterator[None]:
        """Within the block the given real servers are stopped; started again after."""
        for s in servers:
            s.stop()
        try:
            yield
        finally:
            for s in servers:
                if not s.running:
                    s.start()

    # ------------------------------------------------------------ internals
    def _rules_text(self) -> str:
        if self.rules is not None:
            text = self.rules(self) if callable(self.rules) else self.rules
            return text if text.endswith("\n") else text + "\n"
        flags = self.scheduler_flags
        if flags is None:
            flags = DEFAULT_FLAGS.get(self.scheduler, "")
        opts = rules.sched_opts(self.scheduler, flags)
        addrs = [(f"s{i}", server_addr4(i), server_addr6(i)) for i in range(1, self.servers + 1)]
        services = ([("-t", self.server_port)] if self.server_command is not None
                    else [("-t", HTTP), ("-t", ECHO), ("-u", UDP_ECHO)])
        lines = []
        for vip, v6 in rules.VIPS:
            for proto, port in services:
                lines += rules.service_lines(proto, vip, port, opts, rules.rips(addrs, v6))
        return "\n".join(lines) + "\n"

    def _write_shim(self) -> None:
        lab = self._lab_obj
        os.makedirs(self.director.bin_dir, exist_ok=True)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(self.director.ipvsadm_path, "w") as f:
            f.write("#!/bin/sh\n# ipvsadm for userlb lab " + str(lab.tag) + "\n"
                    f"PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}} "
                    f"exec {shlex.quote(sys.executable)} -m userlb.cli.main adm "
                    f"--control {shlex.quote(str(lab.control_path))} \"$@\"\n")
        os.chmod(self.director.ipvsadm_path, 0o755)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def sweep_stale() -> list[str]:
    """Remove the labs of userlb.testing whose test process is gone (killed
    with SIGKILL, say): their suffixes.  Labs of `userlb lab up`, and of test
    processes that still run, are left alone."""
    removed = []
    for sfx in _untyped(core.Lab).all_suffixes():
        try:
            owner = json.loads((core.STATE_ROOT / sfx / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        pid = int(owner.get("pid", 0))
        if pid and _proc_start(pid) == owner.get("start"):
            continue
        try:
            _untyped(core.Lab).load(sfx).down()
        except LabError:
            continue
        removed.append(sfx)
    return removed

