"""`userlb run --workers N`: N worker processes on one multi-queue TUN device.

Design (small on purpose)
-------------------------
* The device is opened with IFF_MULTI_QUEUE, one file descriptor per queue
  (tun.TunDevice(queues=N)).  N workers are forked before anything else
  starts (no event loop, no thread yet); each keeps its own queue and runs
  its own Engine, EngineSync, Config copy and TunDriver on its own uvloop.
* The main process keeps everything else, unchanged: the Config, the control
  socket, routes, signals, exporters.  Its Director's `engine` is a `Pool`
  (the EngineControl of server.py / engine_sync.py) that forwards every
  change to all workers and aggregates what they report:

  - a change (`set_services`, `set_timeouts`: once per control request, after
    the main Config accepted it) is sent to every worker as the whole rule
    set (`ipvsadm -S` lines with --set); each worker applies the difference
    to its own Config (control/diff.py: unchanged services and destinations
    keep their objects, entries are never flushed) and answers; the request
    is acknowledged when all N have answered.  A worker that refuses a change
    the main process accepted, or dies, stops the director: the tables never
    diverge.
  - `-Z`, `--sloppy-tcp` / `--sloppy-sctp` / `--max-entries` settings: sent to
    every worker.
  - `-L --stats` / `--rate`, `-L -c`, `--show-settings`, metrics: at the start
    of every control request (and once a second for the rate estimators and
    the exporters) the main process asks every worker for its counters and
    writes their sums into its own Config's Stats objects and destination
    connection counts, which the listings read as usual; `-L -c` is the
    concatenation of the workers' entries; `max_entries` is per worker.

Which worker sees a packet (Linux tun.c, automq): the queue recorded for the
packet's *symmetric* flow hash (addresses and ports, direction-free) by the
last packet a reader wrote with that hash -- else the hash spread over the
queues.  So a client's flow lands on one worker (the hash of its tuple); the
worker writes the rewritten packet (client -> real server), which records
that tuple's hash for its queue, so the server's replies (the same tuple
reversed) reach the same worker -- while the record lives (3 s since the
last packet written in that flow).  After a longer one-way silence a reply
may land on another worker, and that worker's answer moves the client's
later packets too.

Hence what is safe with N > 1 (checked at start and on every change; the
rest is refused with a message naming the service):

* schedulers whose decision is a function of the packet and the
  configuration, identical in every worker: `mh`, `sh`, `mhs`;
* for TCP services with `mh` / `sh`: `--sloppy-tcp` (a worker that gets the
  middle of a connection creates the entry, with the same decision, instead
  of answering RST; mhs schedules every packet without an entry anyway);
  `--sloppy-tcp` cannot be turned off while such a service exists;
* for SCTP services with `mh` / `sh`, likewise `--sloppy-sctp` (a worker that
  gets the middle of an association creates the entry from any chunk but
  ABORT; the tun flow hash covers SCTP's ports as it does TCP's and UDP's);
* replies without an entry are translated from the configuration (a real
  server owned by one service), as with one worker.

Direct routing and tunnels (`-g`/`-i`): each worker has its own l2out.L2Out
(packet socket, raw sockets, path look-ups).  The client's packets of such a
flow are never written back into the TUN device, so no queue is recorded
for its hash and the kernel keeps choosing the queue from the hash alone:
one worker per flow.

Refused: persistence (`-p`: the template would exist in one worker only),
the stateful schedulers (`rr`, `wrr`, `lc`, `wlc`, ...: a flow that moves
would get another server), upper/lower connection thresholds (`-x`/`-y`:
counted per worker).  With
`--keepalived` the health checkers run in the main process and change its
configuration, which reaches every worker as any change does; the
keepalived.conf must then use only what is safe above.

`--pcap FILE` writes one file per worker, FILE with `.wN` before its
extension (`cap.pcapng` -> `cap.w0.pcapng`, `cap.w1.pcapng`, ...: each
worker's packets in the order it handled them; `mergecap` joins them by
time).  The main process opens them all before the workers start, so a
file that cannot be opened ends the start as with one worker; each worker
closes its own when it stops (SIGTERM or the main process going away) and
logs its count.  `userlb adm --capture` is not available with workers.
"""
import asyncio
import os
import signal
import socket
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection

from ..control import ipvsadm as ia
from ..control.config import Config
from ..control.diff import diff_commands
from ..control.engine_sync import EngineSync
from ..errors import ConfigError
from ..model import (
    IPPROTO_SCTP,
    IPPROTO_TCP,
    PROTO_NAMES,
    SVC_F_PERSISTENT,
    Stats,
    format_endpoint,
)
from .run import Director, l2_targets, log, open_pcap_writer

SAFE_SCHEDULERS = ("mh", "sh", "mhs")
NEEDS_SLOPPY = ("mh", "sh")


def refusal(proto, addr, port, sched, flags, sloppy, workers, sloppy_sctp=False):
    """Why a service cannot run with `workers` > 1 workers, or None
    (`sloppy`: sloppy TCP)."""
    what = f"{PROTO_NAMES.get(proto, proto)} {format_endpoint(addr, port)}"
    if flags & SVC_F_PERSISTENT:
        return (f"service {what}: persistence (-p) needs every connection of a client in "
                f"one worker; not available with --workers {workers}")
    if sched not in SAFE_SCHEDULERS:
        return (f"service {what}: scheduler {sched!r} decides per worker; with --workers "
                f"{workers} only {', '.join(SAFE_SCHEDULERS)} (the same decision in every "
                f"worker) are safe")
    if proto == IPPROTO_TCP and sched in NEEDS_SLOPPY and not sloppy:
        return (f"service {what}: TCP with {sched!r} and --workers {workers} needs "
                f"--sloppy-tcp (a connection whose packets reach another worker)")
    if proto == IPPROTO_SCTP and sched in NEEDS_SLOPPY and not sloppy_sctp:
        return (f"service {what}: SCTP with {sched!r} and --workers {workers} needs "
                f"--sloppy-sctp (an association whose packets reach another worker)")
    return None


class PoolConfig(Config):
    """The main process's Config: refuses (whole request, nothing changed)
    a command that is unsafe with several workers."""

    workers = 2
    sloppy = False
    sloppy_sctp = False

    def _check(self, c, view):
        super()._check(c, view)
        if self.workers <= 1:            # a worker's own copy: the main process checked
            return
        if c.cmd in (ia.ADD_SERVICE, ia.EDIT_SERVICE):
            why = refusal(c.protocol, c.addr, c.port, c.scheduler, c.flags, self.sloppy,
                          self.workers, self.sloppy_sctp)
            if why:
                raise ConfigError(why)
        elif c.cmd in (ia.ADD_SERVER, ia.EDIT_SERVER):
            why = dest_refusal(c.fwd, c.u_threshold, c.l_threshold, self.workers)
            if why:
                raise ConfigError(why)


def dest_refusal(fwd, u_threshold, l_threshold, workers):
    """Why a real server cannot be used with `workers` > 1 workers, or None
    (every forwarding method can: each worker sends direct-routing frames and
    tunnel packets itself)."""
    if u_threshold or l_threshold:
        return (f"connection thresholds (-x/-y) are counted per worker; not available "
                f"with --workers {workers}")
    return None


def check_config(cfg, sloppy, workers, sloppy_sctp=False):
    """The refusals of an already loaded Config (start): list of messages."""
    out = []
    for s in cfg.services.values():
        why = refusal(s.protocol, s.addr, s.port, s.sched_name, s.flags, sloppy, workers,
                      sloppy_sctp)
        if why:
            out.append(why)
        for d in s.dests:
            why = dest_refusal(d.fwd, d.u_threshold, d.l_threshold, workers)
            if why:
                out.append(f"service {format_endpoint(s.addr, s.port)}: {why}")
    return out


def resolve(value):
    """--workers N|auto -> N (auto: the CPUs this process may run on)."""
    if value == "auto":
        return len(os.sched_getaffinity(0))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise ValueError(f"--workers: {value!r} is not 1..64 or auto")
    return n


# ------------------------------------------------------------------ worker

def _stats_of(st):
    return st.as_tuple()


def pcap_path(path, idx):
    """--pcap FILE for worker `idx`: FILE with `.w<idx>` before its extension."""
    root, ext = os.path.splitext(path)
    return f"{root}.w{idx}{ext}"


def open_pcaps(args, n):
    """The n workers' --pcap writers (opened here, in the main process), or []."""
    if not args.pcap:
        return []
    out = [open_pcap_writer(args, pcap_path(args.pcap, i)) for i in range(n)]
    for w in out:
        w.flush()           # the header written once, before the fork
    return out


def worker_main(idx, fd, conn, cfg, args, pcap=None):
    """A forked worker: its queue `fd`, its copy of the Config; commands
    from the main process on `conn` (a Connection); `pcap` its --pcap
    writer or None."""
    from ..dataplane.engine import Engine
    from ..dataplane.tun import TunDriver
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the main process decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    cfg.workers = 1
    eng = Engine(sloppy_tcp=args.sloppy_tcp, rst_on_no_entry=not args.no_rst,
                 sloppy_sctp=getattr(args, "sloppy_sctp", False))
    if args.max_entries is not None:
        eng.max_entries = args.max_entries
    if getattr(args, "amemthresh", None) is not None:
        eng.defense.set_amemthresh(args.amemthresh)
    for nm, mode in getattr(args, "defense_modes", ()):
        eng.defense.set_mode(nm, mode)
    sync = EngineSync(cfg, eng)
    sync.push()
    drv = TunDriver(fd, eng, batch=args.batch, vnet=not args.no_offload)
    # direct routing and tunnels: each worker sends its own frames and outer
    # packets and looks the real servers' paths up itself (l2out.py)
    from ..dataplane.l2out import L2Out
    l2 = drv.l2 = L2Out(eng, vnet=drv.vnet is not None)
    l2.want_many(l2_targets(cfg))
    if pcap is not None:
        from ..exporters.pcap import attach
        attach(drv, pcap)

    def answer(req):
        kind = req[0]
        if kind == "rules":
            new = Config()
            new.load_rules(req[1])
            cmds = diff_commands(cfg, new)
            cfg.apply_batch(cmds)
            sync.flush()
            l2.want_many([a for a in l2_targets(cfg) if a not in l2.paths])
            return len(cmds)
        if kind == "zero":
            cfg.zero(req[1])
            return None
        if kind == "set":
            setattr(eng, req[1], req[2])
            return None
        if kind == "stats":
            svcs = {}
            for s in cfg.services.values():
                svcs[s.key] = (_stats_of(s.stats),
                               {d.key: (_stats_of(d.stats), d.activeconns, d.inactconns,
                                        d.persistconns) for d in s.dests})
            return {"g": _stats_of(eng.stats), "svc": svcs, "drops": dict(eng.drops),
                    "replies": dict(eng.replies), "n": len(eng), "drv": drv.counters(),
                    "pid": os.getpid()}
        if kind == "defense":
            getattr(eng.defense, req[1])(*req[2])
            return None
        if kind == "defense_settings":
            return list(eng.defense.settings())
        if kind == "entries":
            return list(eng.entries(req[1]))
        if kind == "counts":
            return eng.entry_counts(req[1])
        raise ValueError(f"unknown request {kind!r}")

    def on_request():
        try:
            req = conn.recv()
        except (EOFError, OSError):
            loop.stop()
            return
        try:
            conn.send(("ok", answer(req)))
        except (ConfigError, ValueError) as e:
            conn.send(("error", str(e)))

    import uvloop
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    drv.attach(loop)
    loop.add_reader(conn.fileno(), on_request)
    if pcap is not None:            # stopped by SIGTERM: the file is closed whole
        loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    drv.detach()
    l2.close()
    if pcap is not None:
        from ..exporters.pcap import summary
        pcap.close()
        log(f"worker {idx}: {summary(pcap)}")


def spawn(dev, cfg, args, pcaps=()):
    """Fork one worker per queue of `dev`; -> list of (pid, Connection).
    The main process keeps none of the queues (nor of the `pcaps` writers,
    one per queue: worker i writes pcaps[i])."""
    out = []
    for i, fd in enumerate(dev.fds):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                  # the worker
            code = 0
            try:
                a.close()
                for _pid, c in out:
                    c.close()
                for other in dev.fds:
                    if other != fd:
                        os.close(other)
                for j, w in enumerate(pcaps):
                    if j != i:
                        w.close()           # (flushed before the fork: writes nothing)
                worker_main(i, fd, Connection(b.detach()), cfg, args,
                            pcaps[i] if pcaps else None)
            except BaseException as e:               # noqa: BLE001
                log(f"worker {i}: {type(e).__name__}: {e}")
                code = 1
            finally:
                os._exit(code)
        b.close()
        out.append((pid, Connection(a.detach())))
    for fd in dev.fds:
        os.close(fd)
    for w in pcaps:
        w.close()
    dev.fds = []
    dev._dev.fds = []
    return out


# ------------------------------------------------------------ main process

class WorkerFailed(Exception):
    pass


class _View:
    """An entry as the listings see it: its service (`e.xl.svc`)."""
    __slots__ = ("xl", "svc")

    def __init__(self, svc):
        self.xl = self
        self.svc = svc


class Pool:
    """The EngineControl of the main process: every change goes to all
    workers, counters come back summed (module docstring)."""

    def __init__(self, cfg, workers, sloppy_tcp, max_entries, sloppy_sctp=False):
        from ..dataplane.stats import RateEstimators
        self.cfg = cfg
        self.workers = workers                        # [(pid, Connection)]
        self.stats = Stats()
        self.rates = RateEstimators()
        self.rates.track(self.stats)
        self.drops = Counter()
        self.replies = Counter()
        self._sloppy = sloppy_tcp
        self._sloppy_sctp = sloppy_sctp
        self._max_entries = max_entries
        self.count = 0
        self.driver_counters = {}
        self.per_worker = []
        self.on_failure = None
        self.defense = _PoolDefense(self)

    @property
    def ct(self):
        """(what the exporters read `max_entries` from; per worker)"""
        return self

    # -- talking to the workers
    def ask(self, req):
        """Send `req` to every worker, then collect every answer (in order)."""
        for _pid, c in self.workers:
            try:
                c.send(req)
            except OSError as e:
                self._failed(f"worker {_pid}: {e}")
        out = []
        for pid, c in self.workers:
            try:
                status, value = c.recv()
            except (EOFError, OSError):
                self._failed(f"worker {pid} is gone")
            if status != "ok":
                self._failed(f"worker {pid} refused {req[0]!r}: {value}")
            out.append(value)
        return out

    def _failed(self, why):
        log(f"workers: {why}; stopping")
        if self.on_failure is not None:
            self.on_failure()
        raise WorkerFailed(why)

    # -- EngineControl
    def set_services(self, services):
        services = tuple(services)
        self.ask(("rules", "\n".join(self.cfg.save(with_timeouts=True)) + "\n"))
        tracked = [self.stats]
        for svc in services:
            tracked.append(svc.stats)
            tracked.extend(d.stats for d in svc.dests)
        self.rates.retain(tracked)

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        # the timeouts travel with the rule set (--set line)
        if self.workers:
            self.ask(("rules", "\n".join(self.cfg.save(with_timeouts=True)) + "\n"))

    def zero(self, svc=None):
        from ..dataplane.engine import Engine
        self.ask(("zero", None if svc is None else svc.key))
        Engine.zero(self, svc)      # the pool's own totals and estimators, as an engine's

    def _check_sloppy(self, tcp, sctp):
        """Refuse a setting that would leave a configured service unsafe."""
        for s in self.cfg.services.values():
            why = refusal(s.protocol, s.addr, s.port, s.sched_name, s.flags, tcp,
                          len(self.workers), sctp)
            if why:
                from ..control.protocol import ProtocolError
                raise ProtocolError(why)

    @property
    def sloppy_tcp(self):
        return self._sloppy

    @sloppy_tcp.setter
    def sloppy_tcp(self, value):
        if not value:
            self._check_sloppy(False, self._sloppy_sctp)
        self.ask(("set", "sloppy_tcp", bool(value)))
        self._sloppy = self.cfg.sloppy = bool(value)

    @property
    def sloppy_sctp(self):
        return self._sloppy_sctp

    @sloppy_sctp.setter
    def sloppy_sctp(self, value):
        if not value:
            self._check_sloppy(self._sloppy, False)
        self.ask(("set", "sloppy_sctp", bool(value)))
        self._sloppy_sctp = self.cfg.sloppy_sctp = bool(value)

    @property
    def max_entries(self):
        return self._max_entries

    @max_entries.setter
    def max_entries(self, n):
        self.ask(("set", "max_entries", n))
        self._max_entries = n

    def entries(self, now=None):
        rows = []
        for part in self.ask(("entries", now)):
            rows.extend(part)
        return rows

    def entry_objects(self, now=None):
        counts = Counter()
        for part in self.ask(("counts", now)):
            counts.update(part)
        out = []
        for key, n in counts.items():
            svc = self.cfg.services.get(key)
            if svc is not None:
                out.extend([_View(svc)] * n)
        return out

    def __len__(self):
        self.refresh()
        return self.count

    # -- the sums
    def refresh(self):
        """Ask every worker for its counters; write the sums into the main
        Config's Stats objects and destinations (what the listings read)."""
        snaps = self.ask(("stats",))
        self.per_worker = snaps
        _set(self.stats, [s["g"] for s in snaps])
        for svc in self.cfg.services.values():
            parts = [s["svc"].get(svc.key) for s in snaps]
            _set(svc.stats, [p[0] for p in parts if p])
            for d in svc.dests:
                dp = [p[1].get(d.key) for p in parts if p]
                dp = [x for x in dp if x]
                _set(d.stats, [x[0] for x in dp])
                d.activeconns = sum(x[1] for x in dp)
                d.inactconns = sum(x[2] for x in dp)
                d.persistconns = sum(x[3] for x in dp)
        self.drops = sum((Counter(s["drops"]) for s in snaps), Counter())
        self.replies = sum((Counter(s["replies"]) for s in snaps), Counter())
        self.count = sum(s["n"] for s in snaps)
        drv = Counter()
        for s in snaps:
            drv.update(s["drv"])
        self.driver_counters = dict(drv)

    def stop(self):
        for pid, c in self.workers:
            c.close()
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for pid, _c in self.workers:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done or time.monotonic() > deadline:
                    if not done:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    break
                time.sleep(0.02)
        self.workers = []


class _PoolDefense:
    """The engines' defenses (dataplane/defense.py) as the control server
    sets and shows them: set in every worker (each applies them to its own
    table: amemthresh counts per worker), shown as worker 0 has them."""

    def __init__(self, pool):
        self.pool = pool

    def set_amemthresh(self, n):
        self.pool.ask(("defense", "set_amemthresh", (n,)))

    def set_mode(self, name, mode):
        self.pool.ask(("defense", "set_mode", (name, mode)))

    def settings(self):
        return self.pool.ask(("defense_settings",))[0]


def _set(stats, tuples):
    vals = [sum(t[i] for t in tuples) for i in range(5)]
    stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes = vals


class PoolSync(EngineSync):
    """EngineSync whose requests start with fresh sums from the workers."""

    def begin(self):
        self.engine.refresh()
        super().begin()


class PoolDriver:
    """Stands in for the TUN driver in the main process: a 1 s timer that
    refreshes the sums and steps the rate estimators; the workers' driver
    counters, summed."""

    def __init__(self, pool):
        self.pool = pool
        self.loop = self._timer = None

    def attach(self, loop):
        self.loop = loop
        self._timer = loop.call_later(1.0, self._tick)

    def detach(self):
        if self._timer is not None:
            self._timer.cancel()
        self.loop = self._timer = None

    def _tick(self):
        try:
            self.pool.refresh()
            self.pool.rates.tick(time.monotonic())
        except WorkerFailed:
            return
        if self.loop is not None:
            self._timer = self.loop.call_later(1.0, self._tick)

    def counters(self):
        out = dict(self.pool.driver_counters)
        out["workers"] = len(self.pool.workers)
        return out


class _NoL2:
    """Direct routing and tunnels (l2out.py) are refused with workers: the
    main process has no layer-2 output to keep."""
    paths: dict = {}

    def want_many(self, addrs):
        pass

    def close(self):
        pass


class PoolDirector(Director):
    """Director (run.py) whose engine is a Pool of forked workers."""

    def __init__(self, args, cfg, n):
        from ..dataplane.tun import TunDevice
        self.args = args
        self.cfg = cfg
        pcaps = open_pcaps(args, n)
        self.dev = TunDevice(args.tun, mtu=args.mtu, offload=not args.no_offload, queues=n)
        self.pool = Pool(cfg, spawn(self.dev, cfg, args, pcaps), args.sloppy_tcp,
                         args.max_entries if args.max_entries is not None else 1_000_000,
                         bool(getattr(args, "sloppy_sctp", False)))
        self.engine = self.pool
        self.sync = PoolSync(cfg, self.pool)
        self.driver = PoolDriver(self.pool)
        self.routes = None
        self.firstline = None
        self.l2 = _NoL2()
        self.loop = None
        self.stop_event = None
        self.pool.on_failure = self._on_failure

    def _on_failure(self):
        if self.stop_event is not None:
            self.stop_event.set()

    def _open_pcap(self):
        """The workers write --pcap (opened in __init__); nothing here."""
        n = len(self.pool.workers)
        log(f"pcap {', '.join(pcap_path(self.args.pcap, i) for i in range(n))} (one per worker)")
        return None

    async def capture(self, count, seconds):
        raise ConfigError(f"capture is not available with --workers {len(self.pool.workers)}")

    def listing_text(self):
        self.pool.refresh()
        text = super().listing_text()
        for i, s in enumerate(self.pool.per_worker):
            text += (f"worker {i} pid {s['pid']}: entries={s['n']} "
                     + " ".join(f"{k}={v}" for k, v in s["drv"].items()) + "\n")
        return text

    def close(self):
        super().close()             # routes first, while the device still exists
        self.pool.stop()


def make_director(args, cfg, n, health=None):
    """The PoolDirector for `userlb run --workers n` (n > 1), or an error
    message (str) when the configuration or options are not safe.  `health`:
    the keepalived HealthManager of `cfg` (--keepalived); its checkers then
    change the main process's PoolConfig, which sends every change to all
    workers like any other."""
    sctp = bool(getattr(args, "sloppy_sctp", False))
    problems = check_config(cfg, args.sloppy_tcp, n, sctp)
    if problems:
        return "; ".join(problems)
    pcfg = PoolConfig()
    pcfg.workers, pcfg.sloppy, pcfg.sloppy_sctp = n, args.sloppy_tcp, sctp
    pcfg.load_rules("\n".join(cfg.save(with_timeouts=True)) + "\n")
    if health is not None:
        health.config = pcfg
    return PoolDirector(args, pcfg, n)
