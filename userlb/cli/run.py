"""`userlb run`: the director on a TUN device.

    userlb run [--config FILE] [--tun NAME] [--sloppy-tcp] [--sloppy-sctp] [--no-rst]
               [--no-routes] [--vip-rules auto|always] [--reply-from PREFIX]... [--table N]
               [--stats-file PATH] [--control PATH] [--no-offload]
               [--procfs DIR] [--metrics ADDR:PORT] [--pcap FILE]

FILE holds `ipvsadm -R` lines (what `ipvsadm -S -n` prints; `--set` too).
Unless --no-routes, routes for every VIP and policy rules for every real
server (and every --reply-from prefix) steer traffic into the device; exactly
those are removed on exit.

Signals:
  SIGINT / SIGTERM  stop cleanly (routes and rules removed, device closed).
  SIGHUP            re-read FILE and apply the difference to the running
                    configuration (services and destinations that did not
                    change are kept as they are; connection entries are never
                    flushed, so established connections keep their server;
                    those of a deleted destination stop, as in IPVS).  A bad
                    file is refused as a whole; the running config stays.
  SIGUSR1           write the listing (`-L -n --stats`) and the driver's
                    counters to --stats-file (default: stderr).

Offloads (default on; --no-offload turns them off): the device is opened
with the virtio-net header (IFF_VNET_HDR) and TUNSETOFFLOAD checksum + TSO4/6
(+ USO4/6 where the kernel has them), so the kernel hands over (and takes back)
64 KB TCP/UDP super-packets with partial checksums: one rewrite serves dozens
of segments.  Packets whose header asks for something userlb cannot handle
are counted (vnet_* in the driver counters) and dropped.

--control PATH: the control socket `userlb adm` talks to (default
/run/userlb/control.sock, mode 0600, only this user may use it; see
userlb/control/server.py).

--procfs DIR / --metrics ADDR:PORT: what node_exporter and Prometheus read
(userlb/exporters/): DIR/net/ip_vs and DIR/net/ip_vs_stats in the kernel's
formats, and /metrics, both refreshed from the counters once a second.
"""
import argparse
import asyncio
import os
import signal
import sys

from ..errors import ConfigError
from ..model import format_addr


def build_parser():
    p = argparse.ArgumentParser(prog="userlb run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", metavar="FILE", help="rules in ipvsadm -R syntax")
    p.add_argument("--keepalived", metavar="FILE",
                   help="keepalived.conf: its virtual_server blocks, with their health checkers "
                        "(docs/keepalived.md); instead of --config")
    p.add_argument("--tun", metavar="NAME", default="userlb0",
                   help="TUN device name (default userlb0)")
    p.add_argument("--sloppy-tcp", action="store_true",
                   help="any TCP packet but RST may create a connection (IPVS sloppy_tcp)")
    p.add_argument("--sloppy-sctp", action="store_true",
                   help="any SCTP packet but ABORT may create a connection (IPVS sloppy_sctp)")
    p.add_argument("--no-rst", action="store_true",
                   help="drop (instead of answering with RST) a non-SYN TCP packet "
                        "without an entry")
    p.add_argument("--no-routes", action="store_true",
                   help="install no routes/rules (you steer traffic into the device yourself)")
    p.add_argument("--vip-rules", choices=("auto", "always"), default="auto",
                   help="the per-service rules that steer a VIP which is a local address: "
                        "only while it is local (auto), or for every service from the start "
                        "(always: a VIP that VRRP adds later is steered from its first packet; "
                        "docs/steering.md)")
    p.add_argument("--reply-from", metavar="PREFIX", action="append", default=[],
                   help="also steer packets from this prefix into the device (e.g. the real "
                        "servers' subnet, so that routers there can send ICMP errors); repeatable")
    p.add_argument("--table", type=int, default=None,
                   help="routing table for replies (default 20000 + device index)")
    p.add_argument("--mtu", type=int, default=None,
                   help="MTU of the TUN device (default: the kernel's, 1500); set it to the "
                        "smallest MTU towards the real servers if that is below the clients' side, "
                        "so that the kernel answers oversized packets before the rewrite")
    p.add_argument("--batch", type=int, default=256, help="packets read per wake-up (default 256)")
    p.add_argument("--no-offload", action="store_true",
                   help="open the TUN device without the virtio-net header and offloads "
                        "(checksum, TSO, USO): one MTU-sized packet per read")
    p.add_argument("--max-entries", type=int, default=None, metavar="N",
                   help="connection entry limit (default 1000000; `userlb adm --max-entries`"
                        " changes it live)")
    p.add_argument("--defense", metavar="NAME=MODE", action="append", default=[],
                   help="IPVS defense strategy drop_entry|drop_packet|secure_tcp = 0..3 "
                        "(docs/ipvs.md \u00a711; `userlb adm --defense` changes it live)")
    p.add_argument("--amemthresh", type=int, default=None, metavar="N",
                   help="free entry slots below which automatic defenses switch on "
                        "(default 1024)")
    p.add_argument("--syn-limit", metavar="TOTAL[,PER_PREFIX[/BITS4[/BITS6]]]",
                   help="first line in the kernel (nftables): new connections (TCP SYN, "
                        "SCTP INIT) into the TUN device per second, in total and per source "
                        "prefix (docs/flood-experiment.md)")
    p.add_argument("--syn-prio", action="store_true",
                   help="first line: a prio qdisc on the TUN device sends packets that open "
                        "a connection after all others (docs/flood-experiment.md)")
    p.add_argument("--notrack", action="store_true",
                   help="with the first line: VIP and TUN traffic skips conntrack")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="info", help="least important log lines shown (default info)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as `userlb run: MESSAGE` (default) or JSON lines")
    p.add_argument("--stats-file", metavar="PATH", help="where SIGUSR1 writes the listing")
    p.add_argument("--control", metavar="PATH",
                   help="control socket for `userlb adm` (default /run/userlb/control.sock)")
    p.add_argument("--procfs", metavar="DIR",
                   help="keep DIR/net/ip_vs and DIR/net/ip_vs_stats in the kernel's formats "
                        "(for node_exporter --path.procfs=DIR; e.g. /run/userlb/proc)")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics")
    p.add_argument("--pcap", metavar="FILE",
                   help="write the packets received and sent (before and after the rewrite) "
                        "to FILE, pcapng (Wireshark / tshark); with --workers N one file "
                        "per worker, FILE.w0 ... before the extension")
    p.add_argument("--pcap-max-mb", type=float, default=100.0, metavar="MB",
                   help="stop writing --pcap after this many megabytes (default 100)")
    p.add_argument("--workers", default="1", metavar="N|auto",
                   help="worker processes, one queue each of a multi-queue TUN device "
                        "(auto: one per CPU); N > 1 only for configurations that are safe "
                        "with several workers (userlb/cli/workers.py, docs/performance.md)")
    return p


def read_rules(path):
    """Parse a rules file into a fresh Config; ConfigError/OSError on failure."""
    from ..control.config import Config
    with open(path) as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    cfg = Config()
    cfg.load_rules(text)
    return cfg


def rule_sources(cfg, extra=()):
    """Addresses whose packets go into the device: every masquerading real
    server (the replies of direct routing and tunnel servers bypass the
    director)."""
    from ..model import FWD_MASQ
    out = []
    for s in cfg.services.values():
        for d in s.dests:
            if d.fwd == FWD_MASQ and d.addr not in out:
                out.append(d.addr)
    return out + list(extra)


def l2_targets(cfg):
    """The real servers reached by direct routing or a tunnel (l2out.py
    looks their paths up)."""
    from ..model import FWD_MASQ
    return list(dict.fromkeys(d.addr for s in cfg.services.values() for d in s.dests
                              if d.fwd != FWD_MASQ))


def open_pcap_writer(args, path):
    """A --pcap writer at `path`, bounded by --pcap-max-mb; a file that
    cannot be opened ends the start (logged, exit 1)."""
    from ..exporters.pcap import PcapWriter
    try:
        return PcapWriter(path, int(args.pcap_max_mb * (1 << 20)))
    except OSError as e:
        log(f"--pcap: {path}: {e.strerror}")
        raise SystemExit(1) from None


class Director:
    """Config + engine + TUN driver + routes, wired together."""

    def __init__(self, args, cfg):
        from ..dataplane.engine import Engine
        from ..dataplane.tun import TunDevice, TunDriver
        self.args = args
        self.cfg = cfg
        from ..control.engine_sync import EngineSync
        self.engine = Engine(sloppy_tcp=args.sloppy_tcp, rst_on_no_entry=not args.no_rst,
                             sloppy_sctp=args.sloppy_sctp)
        if args.max_entries is not None:
            self.engine.max_entries = args.max_entries
        if args.amemthresh is not None:
            self.engine.defense.set_amemthresh(args.amemthresh)
        for nm, mode in args.defense_modes:
            self.engine.defense.set_mode(nm, mode)
        self.firstline = None
        self.sync = EngineSync(cfg, self.engine)
        self.sync.push()
        self.dev = TunDevice(args.tun, mtu=args.mtu, offload=not args.no_offload)
        self.driver = TunDriver(self.dev.fd, self.engine, batch=args.batch, vnet=self.dev.vnet)
        from ..dataplane.l2out import L2Out
        self.l2 = self.driver.l2 = L2Out(self.engine, vnet=bool(self.dev.vnet))
        self.l2.want_many(l2_targets(cfg))     # direct routing / tunnel paths (l2out.py)
        self.routes = None
        self.loop = None
        self.stop_event = None

    @property
    def control_path(self):
        """--control PATH, or None for the default path."""
        return self.args.control

    def install_routes(self):
        from ..dataplane.steering import TunRoutes
        vips = [s.addr for s in self.cfg.services.values()]
        self.routes = TunRoutes(self.dev.name, self.dev.index, vips=vips,
                                sources=rule_sources(self.cfg, self.args.reply_from),
                                table=self.args.table, services=list(self.cfg.services),
                                log=log, all_vips=self.args.vip_rules == "always")
        self.routes.install()
        for what in self.routes.replaced:
            log(f"removed a left-over of a dead instance: {what}")
        for what in self.routes.sysctl_problems:
            log(f"warning: cannot set {what}")
        for what in self.routes.describe_local():
            log(f"local VIP: {what}")

    def update_routes(self):
        """After a change: add routes/rules for new VIPs / real servers first,
        then remove those no longer needed (no window without routes)."""
        self.l2.want_many([a for a in l2_targets(self.cfg) if a not in self.l2.paths])
        if self.routes is None:
            return
        vips = [s.addr for s in self.cfg.services.values()]
        self.routes.update(vips=vips, sources=rule_sources(self.cfg, self.args.reply_from),
                           services=list(self.cfg.services))

    # ------------------------------------------------------------- signals
    def reload(self):
        if getattr(self, "health", None) is not None:
            return self.reload_keepalived()
        path = self.args.config
        if not path:
            log("SIGHUP: no --config file to re-read")
            return
        from ..control.diff import diff_commands
        try:
            new = read_rules(path)
            cmds = diff_commands(self.cfg, new)
            self.cfg.apply_batch(cmds)
        except (ConfigError, OSError) as e:
            # FILE:LINE: message, as compilers (and the keepalived reload) say it
            where = (f"{path}:{e.line}: {e.message}"
                     if isinstance(e, ConfigError) and e.line is not None else f"{path}: {e}")
            log(f"SIGHUP: {where}; running configuration unchanged")
            return
        self.sync.flush()
        log(f"SIGHUP: {path}: applied {len(cmds)} change(s)")
        self.update_routes_soon()

    def reload_keepalived(self):
        from ..control.health import reload_director
        path = self.args.keepalived
        try:
            n = reload_director(self.health, path)
        except (ConfigError, OSError) as e:
            log(f"SIGHUP: {e}; running configuration unchanged")
            return
        self.args.reply_from = self.base_reply_from + [
            format_addr(a) for a in self.health.conf.all_addresses()]
        log(f"SIGHUP: {path}: applied {n} change(s)")
        self.update_routes_soon()

    def update_routes_soon(self):
        """update_routes from a signal handler: pyroute2 cannot run on the
        running event loop (uvloop refuses its netlink socket), so a worker
        thread does it; a failure is logged and the director keeps running."""
        fut = self.loop.run_in_executor(None, self.update_routes)
        fut.add_done_callback(lambda f: f.exception() and log(f"SIGHUP: routes: {f.exception()}"))

    def listing_text(self):
        from ..control import listing
        text = listing.list_all(self.cfg, numeric=True, stats=True)
        eng = self.engine
        st = eng.stats
        counters = dict(self.driver.counters())
        counters.update(entries=len(eng), conns=st.conns, inpkts=st.inpkts, outpkts=st.outpkts)
        extra = " ".join(f"{k}={v}" for k, v in counters.items())
        for name, counts in (("drops", eng.drops), ("replies", eng.replies)):
            if counts:
                extra += f"\nengine {name}: " + " ".join(f"{k}={v}"
                                                         for k, v in sorted(counts.items()))
        if getattr(self, "health", None) is not None:
            extra += "".join(f"\nkeepalived: {line}" for line in self.health.status())
        return text + f"driver: {extra}\n"

    def dump_stats(self):
        text = self.listing_text()
        path = self.args.stats_file
        if path:
            tmp = path + ".tmp"
            try:
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
            except OSError as e:
                log(f"SIGUSR1: cannot write {path}: {e.strerror}")
        else:
            sys.stderr.write(text)
            sys.stderr.flush()

    def _open_pcap(self):
        """--pcap FILE: the tap on the driver (exporters/pcap.py); -> the writer."""
        from ..exporters import pcap
        w = open_pcap_writer(self.args, self.args.pcap)
        pcap.attach(self.driver, w)
        log(f"pcap {self.args.pcap}")
        return w

    async def capture(self, count, seconds):
        """`userlb adm --capture FILE --count N` (the control socket's
        'capture' request): the next `count` packets, in memory."""
        from ..exporters import pcap
        return await pcap.capture(self.driver, count, seconds)

    # ---------------------------------------------------------------- run
    async def serve(self):
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.stop_event.set)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.loop.add_signal_handler(signal.SIGUSR1, self.dump_stats)
        self.driver.on_gone = self._device_gone
        self.driver.attach(self.loop)
        from ..control.table_watch import TableWatch
        self._watch = TableWatch(self.engine, log)
        self._watch_timer = self.loop.call_later(1.0, self._watch_tick)
        # the control socket for `userlb adm` (userlb/control/server.py)
        from ..control.server import start_for_director
        self.control = await start_for_director(self)
        if getattr(self, "health", None) is not None:
            self.health.sync = self.sync
            self.health.start()
        self.pcap = self._open_pcap() if self.args.pcap else None
        self.exporters = None
        if self.args.procfs or self.args.metrics:
            from ..exporters.task import Exporters
            self.exporters = Exporters(self, self.args.procfs, self.args.metrics)
            try:
                for line in self.exporters.start(self.loop):
                    log(line)
            except (OSError, ValueError) as e:
                log(f"exporters: {e}")
                self.exporters.close()
                if self.control is not None:
                    self.control.close()
                self.driver.detach()
                raise SystemExit(1) from None
        nsvc = len(self.cfg.services)
        ndest = sum(len(s.dests) for s in self.cfg.services.values())
        log(f"ready: {self.dev.name} pid {os.getpid()}, {nsvc} service(s), "
            f"{ndest} real server(s)"
            + ("" if self.routes else ", no routes")
            + (", sloppy TCP" if self.args.sloppy_tcp else "")
            + (", sloppy SCTP" if self.args.sloppy_sctp else "")
            + (", offloads " + ("+".join(self.dev.offload_names) or "none (vnet header only)")
               if self.dev.vnet else ", no offloads"))
        await self.stop_event.wait()
        self._watch_timer.cancel()
        if getattr(self, "health", None) is not None:
            await self.health.stop()
        if self.exporters is not None:
            self.exporters.close()
        if self.pcap is not None:
            from ..exporters import pcap
            self.pcap.close()
            log(pcap.summary(self.pcap))
        if self.control is not None:
            self.control.close()
        self.driver.detach()

    def _device_gone(self):
        """The TUN device was deleted under the director: stop (the rules and
        routes are removed on the way out), exit status 1."""
        log(f"the TUN device {self.dev.name} was deleted; stopping")
        self.exit_status = 1
        self.stop_event.set()

    def _watch_tick(self):
        try:
            self._watch.check(self.loop.time())
        finally:
            self._watch_timer = self.loop.call_later(1.0, self._watch_tick)

    def install_firstline(self):
        from ..dataplane.firstline import FirstLine
        if not (self.args.syn_limit or self.args.notrack or self.args.syn_prio):
            return
        total, per, b4, b6 = self.args.syn_limit_parsed or (0, 0, 24, 64)
        fl = FirstLine(self.dev.name, total, per, b4, b6, notrack=self.args.notrack,
                       vips=[format_addr(s.addr) for s in self.cfg.services.values()],
                       prio=self.args.syn_prio)
        fl.install()
        self.firstline = fl
        if fl.replaced:
            log(f"removed a left-over of a dead instance: nftables table inet {fl.table}")
        log(f"first line: nftables table inet {fl.table} (syn limit {total}/s total, "
            f"{per}/s per /{b4} and /{b6}{', notrack' if self.args.notrack else ''}"
            f"{', SYNs last' if self.args.syn_prio else ''})")

    def close(self):
        errors = []
        if self.firstline is not None:
            try:
                self.firstline.remove()
            except Exception as exc:   # noqa: BLE001
                log(f"cleanup: first line: {exc}")
            self.firstline = None
        if self.routes is not None:
            errors = self.routes.remove()
            self.routes = None
        self.dev.close()
        self.l2.close()
        for e in errors:
            log(f"cleanup: {e}")


def log(msg):
    from ..control.logs import log as _log
    _log(msg)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def main(argv):
    args = build_parser().parse_args(argv)
    from ..control.logs import configure
    configure(args.log_level, args.log_format)
    # until the event loop takes over: end through `finally` (cleanup) on TERM
    signal.signal(signal.SIGTERM, _raise_exit)
    from ..control.config import Config
    health = None
    if args.keepalived and args.config:
        log("--config and --keepalived exclude each other")
        return 2
    if args.keepalived:
        from ..control.health import load_director
        try:
            cfg, health = load_director(args.keepalived, log=log)
        except ConfigError as e:
            log(str(e))
            return 1
    elif args.config:
        try:
            cfg = read_rules(args.config)
        except OSError as e:
            log(f"cannot read {args.config}: {e.strerror}")
            return 1
        except ConfigError as e:
            log(f"{args.config}: {e}")
            return 1
    else:
        cfg = Config()
    from ..control.server import MAX_ENTRIES
    if args.max_entries is not None and not 1 <= args.max_entries <= MAX_ENTRIES:
        log(f"--max-entries: {args.max_entries} is not in 1..{MAX_ENTRIES}")
        return 2
    args.defense_modes = []
    for d in args.defense:
        nm, _, mode = d.partition("=")
        if nm not in ("drop_entry", "drop_packet", "secure_tcp") or mode not in "0123" \
                or len(mode) != 1:
            log(f"--defense: expected drop_entry|drop_packet|secure_tcp=0..3, not {d!r}")
            return 2
        args.defense_modes.append((nm, int(mode)))
    if args.amemthresh is not None and not 1 <= args.amemthresh <= MAX_ENTRIES:
        log(f"--amemthresh: {args.amemthresh} is not in 1..{MAX_ENTRIES}")
        return 2
    args.syn_limit_parsed = None
    if args.syn_limit:
        from ..dataplane.firstline import parse_limit
        try:
            args.syn_limit_parsed = parse_limit(args.syn_limit)
        except ValueError as e:
            log(f"--syn-limit: {args.syn_limit!r}: {e}")
            return 2
    if args.mtu is not None and args.mtu != 0 and not 68 <= args.mtu <= 65535:
        log(f"--mtu: {args.mtu} is not a TUN device MTU (68..65535)")
        return 2
    for p in args.reply_from:
        try:
            import ipaddress
            ipaddress.ip_network(p, strict=False)
        except ValueError:
            log(f"--reply-from: not a prefix: {p!r}")
            return 2

    base_reply_from = list(args.reply_from)
    if health is not None:
        # every real and sorry server of keepalived.conf, healthy or not: the
        # replies of their connections must reach the device
        args.reply_from = base_reply_from + [format_addr(a) for a in health.conf.all_addresses()]
    from ..dataplane.tun import TunError
    from .workers import make_director, resolve
    try:
        nworkers = resolve(args.workers)
    except ValueError as e:
        log(str(e))
        return 2
    try:
        director = (Director(args, cfg) if nworkers == 1
                    else make_director(args, cfg, nworkers, health))
    except TunError as e:
        log(str(e))
        return 1
    if isinstance(director, str):
        log(director)
        return 2
    director.health, director.base_reply_from = health, base_reply_from
    try:
        if not args.no_routes:
            try:
                director.install_routes()
            except Exception as e:   # noqa: BLE001
                log(f"cannot install routes: {e}")
                return 1
        try:
            director.install_firstline()
        except Exception as e:   # noqa: BLE001
            log(f"cannot install the first line: {e}")
            return 1
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:   # pragma: no cover
            runner = asyncio.run
        runner(director.serve())
    finally:
        director.close()
    log("stopped")
    return getattr(director, "exit_status", 0)
