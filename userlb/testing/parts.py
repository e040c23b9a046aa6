"""The parts of an `LbLab` -- `Director`, `RealServer`, `Client`,
`TcpStreams` -- and the results they hand back (`AdmResult`, `AdmError`,
`Flow`, `HttpReply`, `StreamState`).  Each part is a thin typed view on the
lab (`userlb.lab.Lab`) its LbLab holds; it keeps no state of its own.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..lab import ECHO, HTTP, VIP4, LabError, Streams
from ..lab.base import server_addr4, server_addr6
from ..lab.sessions import client_argv

if TYPE_CHECKING:
    from ._lab import LbLab

__all__ = ["AdmError", "AdmResult", "Client", "Director", "Flow", "HttpReply", "RealServer",
           "StreamState", "TcpStreams"]

def _untyped(obj: object) -> Any:
    """userlb.lab is not annotated: calls into it go through Any (so that
    this module type-checks the same under mypy --strict and the project's
    settings, without `type: ignore`)."""
    return obj


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
    director: int = 1   # the director that holds the entry


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
    """Director k (1, or 1..K with `directors=K`): `userlb run` on a TUN
    device in its own namespace.  With K >= 2 the directors sit behind a
    router that spreads flows over the running ones (ECMP, L4 hash); they
    share no state and have the same rules."""

    def __init__(self, owner: LbLab, k: int = 1) -> None:
        super().__init__(owner)
        self.k = k

    def __repr__(self) -> str:
        return f"Director({self.k})"

    @property
    def namespace(self) -> str:
        return str(self._lab.director_ns[self.k - 1])

    @property
    def control_path(self) -> str:
        """Its control socket (`userlb adm --control PATH`)."""
        return str(self._lab.control_of(self.k))

    @property
    def bin_dir(self) -> str:
        """A directory holding an `ipvsadm` command that talks to this
        director: put it first on PATH for scripts under test (`run_in` does)."""
        return os.path.join(str(self._lab.dir), "bin" if self.k == 1 else f"bin-{self.k}")

    @property
    def ipvsadm_path(self) -> str:
        """The `ipvsadm` command of `bin_dir`."""
        return os.path.join(self.bin_dir, "ipvsadm")

    @property
    def pid(self) -> int | None:
        pid = self._lab.director_pid(self.k)
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
        """Stop the director (SIGTERM; SIGKILL with hard=True).  With one
        director the VIPs are then unreachable (its routes go with it); with
        K >= 2 the router first takes it out of its routes, and the flows it
        carried are hashed onto the others."""
        if self._lab.n_directors > 1:
            self._lab.kill_director(self.k, hard=hard)
            return
        if hard and self.pid and self._lab.ours(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self._lab.stop_director()

    def start(self) -> None:
        """Start the director again with the lab's rules file (the rules it
        started with: run-time `adm` changes are not kept); with K >= 2 it
        goes back into the router's routes."""
        if self.running:
            raise LabError(f"director {self.k} is running")
        if self._lab.n_directors > 1:
            self._lab.revive_director(self.k)
        else:
            self._lab.start_director()

    def log(self) -> str:
        """What the director wrote to stderr."""
        with open(self._lab.log_of(self.k)) as f:
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


def _words(args: Sequence[str]) -> list[str]:
    """ipvsadm words from ("-a -t ...",) or ("-a", "-t", ...); "ipvsadm" dropped."""
    argv = shlex.split(args[0]) if len(args) == 1 else [str(a) for a in args]
    return argv[1:] if argv[:1] == ["ipvsadm"] else argv


