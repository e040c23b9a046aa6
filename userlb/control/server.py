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
      -> config change events -> EngineSync marks the engine's dispatch
         tables dirty; timeouts and -Z are pushed at once
      -> EngineSync.flush(): engine.set_services(...) swaps the VIP -> service
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
TUN driver calls every second); for an engine without them the server keeps
its own dataplane.stats.RateEstimators, stepped by a 1 s timer on the loop.
`-Z` resets the counters (config.zero), then engine.zero(svc) -- the global
totals and the estimators.  `-L -c` lists engine.entries(); for a service
whose scheduler has unstable_slots() (mhs) the `-L` service line also carries
` unstable N entries M` (M = its live connection entries).
"""
import asyncio
import os
import socket
import stat
import sys
import time

from ..errors import ConfigError
from ..model import Stats
from . import ipvsadm as ia
from . import listing
from . import protocol as P
from .protocol import DEFAULT_PATH

__all__ = ["ControlServer", "EngineSync", "serve_control", "DEFAULT_PATH", "ControlError"]

EST_TICK = 1.0
REFUSE_READ_TIMEOUT = 5.0


class ControlError(Exception):
    """The control socket cannot be served (message for humans)."""


def _zero_stats(st):
    st.conns = st.inpkts = st.outpkts = st.inbytes = st.outbytes = 0


class EngineSync:
    """Keeps an engine (and the rate estimators) in step with a Config through
    its change events.  Dispatch tables are rebuilt once per request
    (`flush()`), not once per command of a big -R batch; changes made outside
    a request (SIGHUP reload) are flushed by a call_soon on the loop."""

    def __init__(self, config, engine, estimators=None, loop=None):
        self.config = config
        self.engine = engine
        self.estimators = estimators
        self.loop = loop
        self.dirty = False
        self._in_request = False
        self._soon = None
        config.subscribe(self.on_event)
        self.track()

    def close(self):
        try:
            self.config.unsubscribe(self.on_event)
        except ValueError:
            pass
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None

    def on_event(self, event, svc, dest):
        if event == "timeouts":
            t = self.config.timeouts
            if self.engine is not None:
                self.engine.set_timeouts(tcp=t.tcp, tcpfin=t.tcpfin, udp=t.udp)
            return
        if event == "zero":
            self.zero(svc)
            return
        self.dirty = True
        if not self._in_request and self.loop is not None and self._soon is None:
            self._soon = self.loop.call_soon(self._flush_soon)

    def _flush_soon(self):
        self._soon = None
        self.flush()

    def flush(self):
        """Swap the engine's dispatch tables in (one step), track new stats."""
        if not self.dirty:
            return
        self.dirty = False
        if self.engine is not None:
            self.engine.set_services(list(self.config.services.values()))
        self.track()

    def track(self):
        if self.estimators is None:
            return
        objs = []
        if self.engine is not None and isinstance(getattr(self.engine, "stats", None), Stats):
            objs.append(self.engine.stats)
        for svc in self.config.services.values():
            objs.append(svc.stats)
            objs.extend(d.stats for d in svc.dests)
        self.estimators.retain(objs)

    def zero(self, svc):
        """-Z: config.zero already reset the service/destination counters;
        here the engine's global totals and the rate estimators."""
        eng = self.engine
        ezero = getattr(eng, "zero", None)
        if ezero is not None:
            ezero(svc)            # global totals (svc None) + the engine's estimators
        elif svc is None and isinstance(getattr(eng, "stats", None), Stats):
            _zero_stats(eng.stats)
        est = self.estimators     # the server's own estimators, if it keeps them
        if est is None:
            return
        if svc is None:
            est.reset()
            return
        est.reset(svc.stats)
        for d in svc.dests:
            est.reset(d.stats)

    # used by ControlServer around a request
    def begin(self):
        self._in_request = True

    def end(self):
        self._in_request = False
        self.flush()


class ControlServer:
    """The control socket.  `await start()`, `close()` (idempotent).

    `handle(request_dict) -> response_dict` is the whole protocol logic,
    synchronous and usable without a socket.  `clock()` is the engine's time
    base (for `-L -c` expiry and the rate estimator); `owner_uid` defaults to
    the effective uid.
    """

    def __init__(self, path, config, engine, clock=time.monotonic, owner_uid=None,
                 estimators=None, log=None):
        #: True when the server tracks and steps the estimators itself (given
        #: ones, or its own when the engine has none: engine.rates)
        self.own_estimators = estimators is not None
        if estimators is None:
            estimators = getattr(engine, "rates", None)
        if estimators is None:
            from ..dataplane.stats import RateEstimators
            estimators = RateEstimators()
            self.own_estimators = True
        self.path = path or DEFAULT_PATH
        self.config = config
        self.engine = engine
        self.clock = clock
        self.owner_uid = os.geteuid() if owner_uid is None else owner_uid
        self.estimators = estimators
        self.sync = EngineSync(config, engine, estimators if self.own_estimators else None)
        self.log = log or _log
        self._server = None
        self._ino = None
        self._timer = None
        self._loop = None
        #: called (no arguments, in a worker thread, before the answer is
        #: sent) after a request that changed services or destinations
        self.after_change = None
        self.changed = False
        self._lock = None
        self.requests = 0
        self.refused_peers = 0

    # ---------------------------------------------------------------- socket
    async def start(self):
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

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
            self._server = None
            self._unlink()
        self.sync.close()

    async def wait_closed(self):
        self.close()
        await asyncio.sleep(0)

    def _unlink(self):
        try:
            st = os.stat(self.path)
            if self._ino is None or st.st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass

    def _tick(self):
        try:
            self.estimators.tick(self.clock())
        finally:
            if self._loop is not None and self._server is not None:
                self._timer = self._loop.call_later(EST_TICK, self._tick)

    async def _client(self, reader, writer):
        try:
            sock = writer.get_extra_info("socket")
            try:
                uid = P.peer_uid(sock)
            except (OSError, AttributeError):
                uid = None
            if uid != self.owner_uid:
                self.refused_peers += 1
                # read (and ignore) the first request, so that the peer gets
                # its answer instead of a broken pipe; then hang up
                try:
                    await asyncio.wait_for(reader.readline(), REFUSE_READ_TIMEOUT)
                except (asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError):
                    pass
                writer.write(P.encode(P.response(
                    False, error=f"permission denied: only the director's user (uid "
                                 f"{self.owner_uid}) may use {self.path}",
                    status=P.STATUS_SYNTAX)))
                await writer.drain()
                return
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
                async with self._lock:          # one request at a time, routes included
                    resp = self.handle_line(line)
                    if self.changed and self.after_change is not None:
                        await self._after_change()
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

    async def _after_change(self):
        """The director's route update uses pyroute2, which cannot run on a
        loop that is already running: a worker thread does it while further
        requests wait (the packet path goes on)."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.after_change)
        except Exception as e:   # noqa: BLE001 - reported, keep serving
            self.log(f"control: after change: {e}")

    # -------------------------------------------------------------- requests
    def handle_line(self, line):
        self.changed = False
        try:
            req = P.decode(line)
        except P.ProtocolError as e:
            return P.response(False, error=str(e), status=P.STATUS_SYNTAX)
        return self.handle(req)

    def handle(self, req):
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
            else:
                out = self._argv(req["argv"], req.get("stdin"))
            return P.response(True, output=out, req_id=req_id)
        except P.ProtocolError as e:
            return P.response(False, error=str(e), status=P.STATUS_SYNTAX, req_id=req_id)
        except _Refused as e:
            return P.response(False, error=e.args[0], status=e.args[1], req_id=req_id)
        except ConfigError as e:
            return P.response(False, error=str(e), status=P.STATUS_REFUSED, req_id=req_id)
        except Exception as e:   # noqa: BLE001 - a bug must not stop the director
            self.log(f"control: internal error on {req!r}: {e!r}")
            return P.response(False, error=f"internal error: {e!r}", status=1, req_id=req_id)
        finally:
            self.changed = self.sync.dirty
            self.sync.end()

    def _argv(self, argv, stdin):
        try:
            cmd = ia.parse_argv(argv)
        except ConfigError as e:
            raise _Refused(e.message, P.STATUS_SYNTAX) from None
        c = cmd.cmd
        if c == ia.HELP:
            return "usage: userlb adm [--control PATH] ARGS... (ipvsadm syntax); see `userlb adm -h`\n"
        if c == ia.VERSION:
            return version_text()
        if c == ia.RESTORE:
            return self._restore(stdin or "")
        if c in (ia.LIST, ia.SAVE):
            return self.render(cmd)
        self.config.apply(cmd)
        return ""

    def _restore(self, text):
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

    def _settings(self, settings):
        eng = self.engine
        for k, v in settings.items():
            if k != "sloppy_tcp":
                raise P.ProtocolError(f"unknown setting {k!r} (settable: sloppy_tcp)")
            if not isinstance(v, bool):
                raise P.ProtocolError("sloppy_tcp must be true or false")
        if "sloppy_tcp" in settings:
            eng.sloppy_tcp = settings["sloppy_tcp"]
        return settings_text(eng)

    # --------------------------------------------------------------- listing
    def render(self, cmd):
        now = self.clock()
        data = {"stats_of": _stats_of, "rates_of": self._rates_of}
        if cmd.cmd == ia.LIST and cmd.connections:
            data["conn_entries"] = self.conn_entries(now)
        elif cmd.cmd == ia.LIST:
            data["mhs_entries"] = self._mhs_counter()
        return listing.render(self.config, cmd, **data)

    def _rates_of(self, obj):
        return self.estimators.rates(obj.stats)

    def conn_entries(self, now):
        eng = self.engine
        if eng is None:
            return []
        out = []
        for (p, ca, cp, va, vp, da, dp, state, expires) in eng.entries(now):
            out.append(listing.ConnEntry(p, ca, cp, va, vp, da, dp, state,
                                         max(0, int(expires - now))))
        return out

    def _mhs_counter(self):
        """mhs_entries(svc): live entries per service, counted once per listing."""
        counts = None

        def mhs_entries(svc):
            nonlocal counts
            if counts is None:
                counts = {}
                eng = self.engine
                objs = eng.entry_objects() if eng is not None and hasattr(eng, "entry_objects") else ()
                for e in objs:
                    k = id(e.xl.svc)
                    counts[k] = counts.get(k, 0) + 1
            return counts.get(id(svc), 0)
        return mhs_entries


class _Refused(Exception):
    """(message, status)"""


def _stats_of(obj):
    return obj.stats.as_tuple()


def _line_msg(e, lines):
    """'line 3: No such destination: -d -t ...' (the offending line named)."""
    if e.line is not None and 1 <= e.line <= len(lines):
        return f"line {e.line}: {e.message}: {lines[e.line - 1].strip()}"
    return str(e)


def settings_text(engine):
    """`userlb adm --show-settings` (sysctl-like, one `name = value` a line)."""
    sloppy = 1 if getattr(engine, "sloppy_tcp", False) else 0
    out = [f"sloppy_tcp = {sloppy}"]
    if engine is not None:
        try:
            out.append(f"conn_entries = {len(engine)}")
        except TypeError:
            pass
        me = getattr(engine, "max_entries", None)
        if me is not None:
            out.append(f"max_entries = {me}")
    return "\n".join(out) + "\n"


def version_text():
    return (f"userlb adm (ipvsadm v1.31 syntax, IP Virtual Server version "
            f"{listing.IPVS_VERSION})\n")


def _bind(path):
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
            raise ControlError(f"another director is already serving {path} "
                               f"(use `userlb run --control PATH` for a second one)")
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


async def serve_control(path, config, engine, **kw):
    """Start a ControlServer on the running loop; returns it (call close())."""
    return await ControlServer(path, config, engine, **kw).start()


async def start_for_director(director):
    """The hook `userlb run` calls on its loop (userlb/cli/run.py, Director.serve):
    serve director.args.control (default DEFAULT_PATH) for director.cfg /
    director.engine; after every change the director's routes are brought up
    to date (director.update_routes, if it has one).

    Returns the ControlServer, or None when the *default* path cannot be
    served (e.g. another director already serves it: logged, the director
    runs on without a control socket).  An explicit --control PATH that cannot
    be served stops the director (SystemExit 1)."""
    args = director.args
    explicit = getattr(args, "control", None)
    path = explicit or DEFAULT_PATH
    srv = ControlServer(path, director.cfg, director.engine)
    # new VIPs / real servers need routes and rules into the TUN device
    srv.after_change = getattr(director, "update_routes", None)
    try:
        await srv.start()
    except ControlError as e:
        srv.close()
        _log(f"control socket: {e}")
        if explicit:
            raise SystemExit(1) from None
        _log("running without a control socket (`userlb adm` cannot reach this director)")
        return None
    _log(f"control socket: {path} (userlb adm --control {path})")
    return srv


def _log(msg):
    print(f"userlb run: {msg}", file=sys.stderr, flush=True)
