"""The control socket server: `userlb adm` talks to the running director here.

Theory of operation
-------------------
`userlb run` owns one asyncio (uvloop) loop; the TUN driver's reader and this
server's connections are callbacks on that same loop.  A request is handled
synchronously from start to end inside one callback:

    parse (ipvsadm.parse_argv / parse_rules)
      -> config.apply(cmd) / config.apply_batch(cmds)   (all or nothing;
         schedulers build their new tables aside and publish them by one
         assignment)
      -> config change events -> EngineSync (engine_sync.py) marks the
         engine's dispatch tables dirty; timeouts and -Z are pushed at once
      -> EngineSync.end(): engine.set_services(...) swaps the VIP -> service
         tables in one assignment
      -> if services/destinations changed: the director's routes and
         policy rules (new VIPs, new real servers) are updated in a worker
         thread (pyroute2 cannot run on the running loop) while further
         control requests wait; packets keep flowing
      -> the response is written

so the driver's next packet batch sees either the old or the new
configuration, never a half-built one.  `userlb run` starts the server with
`start_for_director(director)` from Director.serve (userlb/cli/run.py) and
closes it when it stops.  Connection entries are never
flushed: an entry keeps its (service, destination) translation; the entries
of a deleted destination are handled as IPVS handles them (the engine drops
their packets, 'dest_unavailable'; they expire; re-adding the destination
revives the same Dest object and they flow again).

Access rule (simplest honest one): only the user that owns the socket -- the
effective uid running the director -- may use it, for anything, listings
included; root is not an exception unless it is that user.  Two layers: the
socket file is created mode 0600 (under a umask, no window), and every
accepted connection's SO_PEERCRED uid is compared with the owner's.

The socket path (protocol.DEFAULT_PATH = /run/userlb/control.sock unless
`--control PATH`): its directory is created (0755) when missing.  A stale
socket file nobody answers on is replaced; a live one (another director) is
an error.  `close()` removes the file if it is still ours.

Statistics the listing needs beyond model.Stats: rates come from the
engine's own estimators (engine.rates, stepped by engine.expire(), which the
TUN driver calls every second); given `estimators=`, the server keeps those
instead, tracked by its EngineSync and stepped by a 1 s timer on the loop.
`-Z` resets the counters (config.zero), then engine.zero(svc) -- the global
totals and the estimators.  `-L -c` lists engine.entries(); for a service
whose scheduler has unstable_slots() (mhs) the `-L` service line also carries
` unstable N entries M` (M = its live connection entries).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..dataplane.verdict import R_CONN_LIMIT
from ..errors import ConfigError
from ..model import PROTO_NAMES, Service, format_endpoint
from . import ipvsadm as ia
from . import listing
from . import protocol as P
from .config import Config
from .engine_sync import EngineControl, EngineSync, Estimators
from .logs import log
from .protocol import DEFAULT_PATH

__all__ = ["ControlServer", "serve_control", "start_for_director", "DEFAULT_PATH", "ControlError"]

EST_TICK = 1.0
#: the largest entry limit `--max-entries` accepts
MAX_ENTRIES = 100_000_000
REFUSE_READ_TIMEOUT = 5.0
#: a request line longer than this is decoded in a worker thread
BIG_LINE = 1 << 20
#: the defense settings (dataplane/defense.py): amemthresh (entries), modes 0..3
_DEFENSE_KEYS = ("amemthresh", "drop_entry", "drop_packet", "secure_tcp")


class ControlError(Exception):
    """The control socket cannot be served (message for humans)."""


class ControlInUse(ControlError):
    """Another live director serves the path."""


class Director(Protocol):
    """What start_for_director needs of `userlb run`'s Director (cli/run.py)."""
    cfg: Config
    engine: EngineControl
    sync: EngineSync

    @property
    def control_path(self) -> str | None: ...

    def update_routes(self) -> None: ...


class ControlServer:
    """The control socket.  `await start()`, `close()` (idempotent).

    `handle(request_dict) -> response_dict` is the whole protocol logic,
    synchronous and usable without a socket.  `clock()` is the engine's time
    base (for `-L -c` expiry and the rate estimator); `owner_uid` defaults to
    the effective uid.  `sync`: the EngineSync of this config and engine if
    the caller has one (`userlb run`), else the server makes its own.
    """

    def __init__(self, path: str | None, config: Config, engine: EngineControl,
                 clock: Callable[[], float] = time.monotonic, owner_uid: int | None = None,
                 estimators: Estimators | None = None,
                 log: Callable[[str], None] | None = None,
                 sync: EngineSync | None = None) -> None:
        #: True when the server tracks and steps the estimators itself (given
        #: ones); else the engine's own are read
        self.own_estimators = estimators is not None
        self.estimators: Estimators = estimators if estimators is not None else engine.rates
        self.path = path or DEFAULT_PATH
        self.config, self.engine, self.clock = config, engine, clock
        self.owner_uid = os.geteuid() if owner_uid is None else owner_uid
        self._own_sync = sync is None
        if sync is None:
            sync = EngineSync(config, engine)
        if estimators is not None:
            sync.estimators = estimators
            sync.track()
        self.sync = sync
        self.log = log or _log
        self._server: asyncio.AbstractServer | None = None
        self._ino: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: called (no arguments, in a worker thread, before the answer is
        #: sent) after a request that changed services or destinations
        self.after_change: Callable[[], None] | None = None
        self.changed = False
        #: `-L --health`: health_of(service, destination) -> the checker
        #: state (userlb run --keepalived sets it; else every state is "-")
        self.health_of: listing.HealthOf | None = None
        #: the `state` reply's "quorum": quorum_of(service) -> whether its
        #: keepalived quorum holds (None: not checked); for `userlb announce`
        self.quorum_of: Callable[[Service], bool | None] | None = None
        self._lock: asyncio.Lock | None = None
        self.requests = self.refused_peers = 0
        #: `userlb adm --capture`: capture(count, seconds) -> (pcapng bytes,
        #: packets); userlb run sets it (exporters/pcap.py), else refused
        self.capture: Callable[[int, float], Awaitable[tuple[bytes, int]]] | None = None

    # ---------------------------------------------------------------- socket
    async def start(self) -> ControlServer:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lock = asyncio.Lock()
        self.sync.loop = loop
        sock = _bind(self.path)
        try:
            self._ino = os.stat(self.path).st_ino
            self._server = await asyncio.start_unix_server(self._client, sock=sock,
                                                           limit=P.MAX_LINE)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        if self.own_estimators:
            self._timer = loop.call_later(EST_TICK, self._tick)
        return self

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
            self._server = None
            self._unlink()
        if self._own_sync:
            self.sync.close()

    async def wait_closed(self) -> None:
        self.close()
        await asyncio.sleep(0)

    def _unlink(self) -> None:
        try:
            st = os.stat(self.path)
            if self._ino is None or st.st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass

    def _tick(self) -> None:
        try:
            self.estimators.tick(self.clock())
        finally:
            if self._loop is not None and self._server is not None:
                self._timer = self._loop.call_later(EST_TICK, self._tick)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            if not await self._admitted(reader, writer):
                return
            peer = _peer(writer)
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(P.encode(P.response(False, error="request line too long",
                                                     status=P.STATUS_SYNTAX)))
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                req = await self._decode(line)
                if isinstance(req, dict) and "capture" in req:
                    # off the lock: a capture lasts seconds, changes nothing
                    writer.write(P.encode(await self._capture(req)))
                    await writer.drain()
                    continue
                assert self._lock is not None      # set by start()
                async with self._lock:          # one request at a time, routes included
                    resp = self.handle_decoded(req)
                    self._audit(peer, req, resp)
                    if self.changed and self.after_change is not None:
                        await self._after_change(self.after_change)
                writer.write(P.encode(resp))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # the director is stopping with this client connected; ending
            # quietly keeps Python 3.11's stream callback from reporting the
            # cancelled handler as an "Exception in callback"
            pass
        finally:
            try:
                writer.close()
            except Exception:   # noqa: BLE001 - already gone
                pass

    async def _decode(self, line: bytes) -> dict[str, Any] | P.ProtocolError:
        """The request of a line, or the ProtocolError saying why not.  A
        line of megabytes is decoded in a worker thread: the packet path
        shares this loop and goes on meanwhile."""
        try:
            if len(line) > BIG_LINE:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, P.decode, line)
            return P.decode(line)
        except P.ProtocolError as e:
            return e

    async def _capture(self, req: dict[str, Any]) -> dict[str, Any]:
        """A capture request (protocol.py) -> its response."""
        try:
            P.check_request(req)
            count, seconds = P.capture_args(req["capture"])
        except P.ProtocolError as e:
            return P.response(False, error=str(e), status=P.STATUS_SYNTAX, req_id=req.get("id"))
        if self.capture is None:
            return P.response(False, error="this director cannot capture (no packet path)",
                              status=P.STATUS_REFUSED, req_id=req.get("id"))
        try:
            data, packets = await self.capture(count, seconds)
        except Exception as e:   # noqa: BLE001 - CaptureBusy and the like: reported
            return P.response(False, error=str(e), status=P.STATUS_REFUSED,
                              req_id=req.get("id"))
        resp = P.response(True, req_id=req.get("id"))
        resp["pcap"] = base64.b64encode(data).decode("ascii")
        resp["packets"] = packets
        return resp

    def _audit(self, peer: str, req: dict[str, Any] | P.ProtocolError,
               resp: dict[str, Any]) -> None:
        """One log line per change made (or refused) over the socket: who and
        what.  Listings and other read-only requests are not logged."""
        if not isinstance(req, dict):
            return
        if "settings" in req:
            if not req["settings"]:
                return                  # --show-settings
            what = "settings " + " ".join(f"{k}={v}" for k, v in req["settings"].items())
        elif "rules" in req:
            what = f"-R ({len(str(req['rules']).splitlines())} line(s))"
        elif "argv" in req and isinstance(req["argv"], list):
            words = [str(w) for w in req["argv"]]
            if not any(w in _CHANGE_WORDS or (w.startswith("--") and w[2:] in _CHANGE_LONG)
                       for w in words):
                return
            what = " ".join(words)
        else:
            return
        result = "ok" if resp.get("ok") else f"refused: {_clip(str(resp.get('error', '')))}"
        self.log(f"control: {peer}: {_clip(what)}: {result}")

    async def _admitted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        """The access rule: only the owner's uid.  A refused peer gets its
        answer (its first request is read and ignored) instead of a broken
        pipe."""
        sock = writer.get_extra_info("socket")
        try:
            uid = P.peer_uid(sock)
        except (OSError, AttributeError):
            uid = None
        if uid == self.owner_uid:
            return True
        self.refused_peers += 1
        try:
            await asyncio.wait_for(reader.readline(), REFUSE_READ_TIMEOUT)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            pass
        writer.write(P.encode(P.response(
            False, error=f"permission denied: only the director's user (uid "
                         f"{self.owner_uid}) may use {self.path}",
            status=P.STATUS_SYNTAX)))
        await writer.drain()
        return False

    async def _after_change(self, hook: Callable[[], None]) -> None:
        """The director's route update uses pyroute2, which cannot run on a
        loop that is already running: a worker thread does it while further
        requests wait (the packet path goes on)."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, hook)
        except Exception as e:   # noqa: BLE001 - reported, keep serving
            self.log(f"control: after change: {e}")

    # -------------------------------------------------------------- requests
    def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            req: dict[str, Any] | P.ProtocolError = P.decode(line)
        except P.ProtocolError as e:
            req = e
        return self.handle_decoded(req)

    def handle_decoded(self, req: dict[str, Any] | P.ProtocolError) -> dict[str, Any]:
        """handle_line after the decoding (a request, or why the line is none)."""
        self.changed = False
        if not isinstance(req, dict):
            return P.response(False, error=str(req), status=P.STATUS_SYNTAX)
        return self.handle(req)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request dict -> one response dict.  Never raises."""
        req_id = req.get("id")
        self.requests += 1
        self.sync.begin()
        try:
            kind = P.check_request(req)
            if kind == "settings":
                out = self._settings(req["settings"])
            elif kind == "rules":
                out = self._restore(req["rules"])
            elif kind == "state":
                out = state_text(self.config, self.quorum_of)
            elif kind == "capture":
                # answered by the socket path (_capture), which has the packets
                raise _Refused("a capture is served only on the control socket",
                               P.STATUS_REFUSED)
            else:
                out = self._argv(req["argv"], req.get("stdin"))
            return P.response(True, output=out, req_id=req_id)
        except P.ProtocolError as e:
            return P.response(False, error=str(e), status=P.STATUS_SYNTAX, req_id=req_id)
        except _Refused as e:
            return P.response(False, error=e.message, status=e.status, req_id=req_id)
        except ConfigError as e:
            return P.response(False, error=str(e), status=P.STATUS_REFUSED, req_id=req_id)
        except Exception as e:   # noqa: BLE001 - a bug must not stop the director
            self.log(f"control: internal error on {req!r}: {e!r}")
            return P.response(False, error=f"internal error: {e!r}", status=1, req_id=req_id)
        finally:
            self.changed = self.sync.dirty
            self.sync.end()

    def _argv(self, argv: list[str], stdin: str | None) -> str:
        try:
            cmd = ia.parse_argv(argv)
        except ConfigError as e:
            raise _Refused(e.message, P.STATUS_SYNTAX) from None
        c = cmd.cmd
        if c == ia.HELP:
            return ("usage: userlb adm [--control PATH] ARGS... (ipvsadm syntax); "
                    "see `userlb adm -h`\n")
        if c == ia.VERSION:
            return version_text()
        if c == ia.RESTORE:
            return self._restore(stdin or "")
        if c in (ia.LIST, ia.SAVE):
            return self.render(cmd)
        self.config.apply(cmd)
        return ""

    def _restore(self, text: str) -> str:
        lines = text.splitlines()
        try:
            cmds = ia.parse_rules(text)
        except ConfigError as e:
            raise _Refused(_line_msg(e, lines), P.STATUS_SYNTAX) from None
        try:
            self.config.apply_batch(cmds)
        except ConfigError as e:
            raise _Refused(_line_msg(e, lines), P.STATUS_REFUSED) from None
        return ""

    def _settings(self, settings: dict[str, Any]) -> str:
        for k, v in settings.items():
            if k == "sloppy_tcp" or k == "sloppy_sctp":
                if not isinstance(v, bool):
                    raise P.ProtocolError(f"{k} must be true or false")
            elif k == "max_entries":
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_ENTRIES:
                    raise P.ProtocolError(f"max_entries must be an integer 1..{MAX_ENTRIES}")
            elif k in _DEFENSE_KEYS:
                if isinstance(v, bool) or not isinstance(v, int) or not (
                        0 <= v <= 3 if k != "amemthresh" else 1 <= v <= MAX_ENTRIES):
                    raise P.ProtocolError(f"{k} must be an integer "
                                          f"{'0..3' if k != 'amemthresh' else '1..'}")
            else:
                raise P.ProtocolError(f"unknown setting {k!r} (settable: sloppy_tcp, sloppy_sctp, "
                                      f"max_entries, amemthresh, drop_entry, drop_packet, "
                                      f"secure_tcp)")
        if "sloppy_tcp" in settings:
            self.engine.sloppy_tcp = settings["sloppy_tcp"]
        if "sloppy_sctp" in settings:
            self.engine.sloppy_sctp = settings["sloppy_sctp"]
        if "max_entries" in settings:
            self.engine.max_entries = settings["max_entries"]
            self.log(f"control: max_entries set to {settings['max_entries']}")
        defense = getattr(self.engine, "defense", None)
        for k in _DEFENSE_KEYS:
            if k in settings and defense is not None:
                if k == "amemthresh":
                    defense.set_amemthresh(settings[k])
                else:
                    defense.set_mode(k, settings[k])
                self.log(f"control: {k} set to {settings[k]}")
        return settings_text(self.engine)

    # --------------------------------------------------------------- listing
    def render(self, cmd: ia.Command) -> str:
        now = self.clock()
        data: dict[str, Any] = {"stats_of": _stats_of, "rates_of": self._rates_of,
                                "health_of": self.health_of}
        if cmd.cmd == ia.LIST and cmd.connections:
            data["conn_entries"] = self.conn_entries(now)
        elif cmd.cmd == ia.LIST:
            data["mhs_entries"] = self._mhs_counter()
        return listing.render(self.config, cmd, **data)

    def _rates_of(self, obj: listing.HasStats) -> tuple[int, int, int, int, int]:
        return self.estimators.rates(obj.stats)

    def conn_entries(self, now: float) -> list[listing.ConnEntry]:
        return [listing.ConnEntry(p, ca, cp, va, vp, da, dp, state, max(0, int(expires - now)))
                for (p, ca, cp, va, vp, da, dp, state, expires) in self.engine.entries(now)]

    def _mhs_counter(self) -> Callable[[Service], int]:
        """mhs_entries(svc): live entries per service, counted once per listing."""
        counts: dict[int, int] | None = None

        def mhs_entries(svc: Service) -> int:
            nonlocal counts
            if counts is None:
                counts = {}
                for e in self.engine.entry_objects():
                    k = id(e.xl.svc)
                    counts[k] = counts.get(k, 0) + 1
            return counts.get(id(svc), 0)
        return mhs_entries


class _Refused(Exception):
    """A request refused with a message and an exit status for `userlb adm`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status)
        self.message, self.status = message, status


def _stats_of(obj: listing.HasStats) -> tuple[int, int, int, int, int]:
    return obj.stats.as_tuple()


def _line_msg(e: ConfigError, lines: list[str]) -> str:
    """'line 3: No such destination: -d -t ...' (the offending line named)."""
    if e.line is not None and 1 <= e.line <= len(lines):
        return f"line {e.line}: {e.message}: {_clip(lines[e.line - 1].strip())}"
    return str(e)


def _clip(text: str, n: int = 200) -> str:
    """text, cut to n characters (with a note) for a log line or a message."""
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def state_text(config: Config,
               quorum_of: Callable[[Service], bool | None] | None = None) -> str:
    """What `-S -n` cannot carry, for `userlb simulate --control`, as JSON:

    * "dests": [[proto, vip:vport, rip:rport, last_weight], ...] -- every
      destination's last weight (kept by -e -w 0; mh builds its table from it);
    * "timeouts": [tcp, tcpfin, udp] (`--set`; mhs's T is read from them);
    * "mhs": [[proto, vip:vport, forwarded, [[slot, rip:rport or null,
      seconds left], ...]], ...] -- per mhs service, its unstable slots
      (docs/mhs-spec.md): where the old table sends the non-SYN packets of a
      slot, and until when;
    * with health checks (`userlb run --keepalived`), "quorum": [[proto,
      vip:vport, true|false], ...] -- whether each checked service's
      keepalived quorum holds (for `userlb announce`)."""
    rows = [[PROTO_NAMES[svc.protocol], format_endpoint(svc.addr, svc.port),
             format_endpoint(d.addr, d.port), d.last_weight]
            for svc in config.services.values() for d in svc.dests]
    mhs = []
    for svc in config.services.values():
        sched = svc.sched
        unstable = getattr(sched, "unstable", None)     # mhs only
        if sched is None or unstable is None or sched.clock is None:
            continue
        now = sched.clock.now()
        slots = [[i, None if old is None else format_endpoint(old.addr, old.port),
                  round(at - now, 3)]
                 for i, old, _cand, _since, at in unstable(now)]
        mhs.append([PROTO_NAMES[svc.protocol], format_endpoint(svc.addr, svc.port),
                    bool(svc.forwarded), slots])
    out: dict[str, Any] = {"dests": rows, "timeouts": list(config.timeouts.as_tuple()),
                           "mhs": mhs}
    if quorum_of is not None:
        q = [(svc, quorum_of(svc)) for svc in config.services.values()]
        out["quorum"] = [[PROTO_NAMES[svc.protocol], format_endpoint(svc.addr, svc.port), up]
                         for svc, up in q if up is not None]
    return json.dumps(out) + "\n"


def settings_text(engine: EngineControl) -> str:
    """`userlb adm --show-settings` (sysctl-like, one `name = value` a line)."""
    out = [f"sloppy_tcp = {1 if engine.sloppy_tcp else 0}",
           f"sloppy_sctp = {1 if engine.sloppy_sctp else 0}",
           f"conn_entries = {len(engine)}",
           f"max_entries = {engine.max_entries}",
           f"conn_limit_drops = {engine.drops.get(R_CONN_LIMIT, 0)}"]
    defense = getattr(engine, "defense", None)
    if defense is not None:         # docs/ipvs.md §11 (dataplane/defense.py)
        out += [f"{k} = {v}" for k, v in defense.settings()]
    return "\n".join(out) + "\n"


def version_text() -> str:
    return (f"userlb adm (ipvsadm v1.31 syntax, IP Virtual Server version "
            f"{listing.IPVS_VERSION})\n")


def _bind(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600 from the start."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        try:
            os.makedirs(d, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ControlError(f"cannot create {d}: {e.strerror}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            live = False
        else:
            live = True
        finally:
            probe.close()
        if live:
            raise ControlInUse(f"another director is already serving {path} (perhaps in "
                               f"another network namespace: the socket lives in the file "
                               f"system, which namespaces share); give this one its own "
                               f"`userlb run --control PATH`")
        os.unlink(path)            # stale: nobody answers there
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise ControlError(f"cannot bind {path}: {e.strerror}") from None
    finally:
        os.umask(old)
    try:
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_control(path: str | None, config: Config, engine: EngineControl,
                        **kw: Any) -> ControlServer:
    """Start a ControlServer on the running loop; returns it (call close())."""
    return await ControlServer(path, config, engine, **kw).start()


async def start_for_director(director: Director) -> ControlServer | None:
    """The hook `userlb run` calls on its loop (userlb/cli/run.py, Director.serve):
    serve director.control_path (default DEFAULT_PATH) for director.cfg /
    director.engine (through director.sync); after every change the
    director's routes are brought up to date (director.update_routes).

    Returns the ControlServer, or None when the *default* path cannot be
    served for another reason than a live director there (e.g. its directory
    cannot be created: logged, the director runs on without a control
    socket).  Another director serving the default path, or an explicit
    --control PATH that cannot be served, stops the director (SystemExit 1)."""
    explicit = director.control_path
    path = explicit or DEFAULT_PATH
    srv = ControlServer(path, director.cfg, director.engine, sync=director.sync)
    # new VIPs / real servers need routes and rules into the TUN device
    srv.after_change = director.update_routes
    srv.capture = getattr(director, "capture", None)   # userlb adm --capture
    health = getattr(director, "health", None)       # userlb run --keepalived
    if health is not None:
        srv.health_of = health.state_of
        srv.quorum_of = health.quorum_of
    try:
        await srv.start()
    except ControlError as e:
        srv.close()
        _log(f"control socket: {e}")
        if explicit or isinstance(e, ControlInUse):
            # a second director that `userlb adm` cannot reach (the default
            # socket answers for the first one) is refused rather than left
            # running unadministrable
            raise SystemExit(1) from None
        _log("running without a control socket (`userlb adm` cannot reach this director)")
        return None
    _log(f"control socket: {path} (userlb adm --control {path})")
    return srv


#: ipvsadm words that change the configuration (-R, -Z and --set included)
_CHANGE_WORDS = {"-A", "-E", "-D", "-C", "-a", "-e", "-d", "-R", "-Z"}
_CHANGE_LONG = {"add-service", "edit-service", "delete-service", "clear", "add-server",
                "edit-server", "delete-server", "restore", "zero", "set"}


def _peer(writer: asyncio.StreamWriter) -> str:
    """'uid U pid P (COMM)' of the client (SO_PEERCRED), for the log."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid = P.peer_cred(sock)
    except (OSError, AttributeError):
        return "unknown peer"
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return f"uid {uid} pid {pid} ({comm})"


def _log(msg: str) -> None:
    log(msg)
