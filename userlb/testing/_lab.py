"""`LbLab`: a load-balancer lab for tests (see userlb.testing's docstring).

Everything here drives the namespace lab of `userlb.lab` (`Lab`: topology,
processes, sessions); what is added is the typed surface (the parts in
parts.py), a user's own command as a real server (through
`userlb.testing.supervise`), readiness by listening port, the `ipvsadm`
shim, parsing of `-L -n -c`, and the owner file that lets a later run remove
a lab whose test process was killed (`sweep_stale`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..lab import ECHO, HTTP, UDP_ECHO, VIP4, VIP6, LabError, core, rules
from ..lab.base import server_addr4, server_addr6, short
from ..lab.processes import child_env
from ..lab.topology import sysctls
from .parts import Client, Director, Flow, RealServer, _untyped

__all__ = ["LbLab", "sweep_stale", "unavailable_reason"]

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


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (None: it can): root, /dev/net/tun and
    iproute2's `ip` are needed."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a TUN device)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (in a container: run it --privileged)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


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
    sloppy_tcp       start the director(s) with --sloppy-tcp
    directors        K >= 2: K directors with the same rules behind a router that
                     spreads the flows over the running ones (kernel multipath, L4
                     hash) and sends the real servers' replies back the same way;
                     no state is shared (mh/sh pick the same real server on every
                     director; sloppy_tcp lets one take over mid-stream flows)
    """
    servers: int = 2
    rules: RulesSpec | None = None
    scheduler: str = "mh"
    scheduler_flags: str | None = None
    server_command: ServerCommand | None = None
    server_port: int = HTTP
    clients: int = 2
    sloppy_tcp: bool = False
    directors: int = 1
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
        self._rules_text()              # a bad kind of rules text fails before anything is built
        reason = unavailable_reason()
        if reason:
            raise LabError(f"userlb lab: {reason}")
        if not 1 <= self.directors <= 16:
            raise LabError("directors: 1 to 16")
        lab = _Lab(self, n_servers=self.servers, n_clients=self.clients,
                   sloppy=self.sloppy_tcp, current=False, directors=self.directors)
        self._lab_obj = lab
        lab.dir.mkdir(parents=True, exist_ok=True)
        (lab.dir / OWNER_FILE).write_text(json.dumps(
            {"pid": os.getpid(), "start": _proc_start(os.getpid())}))
        self._write_shims()
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
        """Director 1 (the director, with one)."""
        return Director(self, 1)

    @property
    def all_directors(self) -> list[Director]:
        """Directors 1..K (`directors`)."""
        return [Director(self, k) for k in range(1, self.directors + 1)]

    @property
    def router(self) -> str | None:
        """The ECMP router's namespace (K >= 2), for `run_in`; else None."""
        r = self._require().router
        return str(r) if self.directors > 1 and r else None

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
        director's `bin_dir` (that director's when `where` is one, else
        director 1's: `ipvsadm` is this lab's) and PYTHONPATH finds userlb.
        check=True: LabError on a non-zero exit."""
        ns = where if isinstance(where, str) else where.namespace
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(w) for w in cmd]
        env = child_env()
        bin_dir = (where if isinstance(where, Director) else self.director).bin_dir
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
        p = subprocess.run(["ip", "netns", "exec", ns] + argv, input=input, text=True,
                           capture_output=True, timeout=timeout, env=env)
        if check and p.returncode:
            raise LabError(f"in {ns}: {' '.join(argv)}: exit {p.returncode}\n"
                           f"{p.stdout}{p.stderr}".rstrip())
        return p

    def flows(self) -> list[Flow]:
        """The connection entries (`ipvsadm -L -n -c`) of every running
        director, each with its director's number."""
        names = {}
        for s in self.real_servers:
            names[s.addr4] = s.name
            names[str(ipaddress.ip_address(s.addr6))] = s.name
        out = []
        for d in self.all_directors:
            if not d.running:
                continue
            for line in d.adm("-L", "-n", "-c").splitlines()[2:]:
                w = line.split()
                if len(w) < 6:
                    continue
                mins, _, secs = w[1].partition(":")
                (c, cp), (v, vp), (r, rp) = (_endpoint(x) for x in w[3:6])
                out.append(Flow(w[0], c, cp, v, vp, r, rp, w[2],
                                int(mins) * 60 + int(secs or 0), names.get(r), d.k))
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
            if re.search(r"^\s*virtual_server\b", text, flags=re.M):
                raise LabError("rules: keepalived.conf text is not read yet (it comes with "
                               "userlb's keepalived.conf parser); give the ipvsadm -R lines "
                               "keepalived would install")
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

    def _write_shims(self) -> None:
        """An `ipvsadm` command per director (its `bin_dir`)."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for d in self.all_directors:
            os.makedirs(d.bin_dir, exist_ok=True)
            with open(d.ipvsadm_path, "w") as f:
                f.write(f"#!/bin/sh\n# ipvsadm for director {d.k} of userlb lab {self.tag}\n"
                        f"PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}} "
                        f"exec {shlex.quote(sys.executable)} -m userlb.cli.main adm "
                        f"--control {shlex.quote(d.control_path)} \"$@\"\n")
            os.chmod(d.ipvsadm_path, 0o755)


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

