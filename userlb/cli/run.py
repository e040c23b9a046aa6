"""`userlb run`: the director on a TUN device.

    userlb run [--config FILE] [--tun NAME] [--sloppy-tcp] [--no-rst]
               [--no-routes] [--reply-from PREFIX]... [--table N]
               [--stats-file PATH] [--control PATH] [--no-offload]

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
"""
import argparse
import asyncio
import os
import signal
import sys

from ..errors import ConfigError


def build_parser():
    p = argparse.ArgumentParser(prog="userlb run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", metavar="FILE", help="rules in ipvsadm -R syntax")
    p.add_argument("--tun", metavar="NAME", default="userlb0",
                   help="TUN device name (default userlb0)")
    p.add_argument("--sloppy-tcp", action="store_true",
                   help="any TCP packet but RST may create a connection (IPVS sloppy_tcp)")
    p.add_argument("--no-rst", action="store_true",
                   help="drop (instead of answering with RST) a non-SYN TCP packet "
                        "without an entry")
    p.add_argument("--no-routes", action="store_true",
                   help="install no routes/rules (you steer traffic into the device yourself)")
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
    p.add_argument("--stats-file", metavar="PATH", help="where SIGUSR1 writes the listing")
    p.add_argument("--control", metavar="PATH",
                   help="control socket for `userlb adm` (default /run/userlb/control.sock)")
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
    """Addresses whose packets go into the device: every real server."""
    out = []
    for s in cfg.services.values():
        for d in s.dests:
            if d.addr not in out:
                out.append(d.addr)
    return out + list(extra)


class Director:
    """Config + engine + TUN driver + routes, wired together."""

    def __init__(self, args, cfg):
        from ..dataplane.engine import Engine
        from ..dataplane.tun import TunDevice, TunDriver
        self.args = args
        self.cfg = cfg
        from ..control.engine_sync import EngineSync
        self.engine = Engine(sloppy_tcp=args.sloppy_tcp, rst_on_no_entry=not args.no_rst)
        self.sync = EngineSync(cfg, self.engine)
        self.sync.push()
        self.dev = TunDevice(args.tun, mtu=args.mtu, offload=not args.no_offload)
        self.driver = TunDriver(self.dev.fd, self.engine, batch=args.batch, vnet=self.dev.vnet)
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
                                log=log)
        self.routes.install()
        for what in self.routes.replaced:
            log(f"removed a left-over of a dead instance: {what}")
        for what in self.routes.describe_local():
            log(f"local VIP: {what}")

    def update_routes(self):
        """After a change: add routes/rules for new VIPs / real servers first,
        then remove those no longer needed (no window without routes)."""
        if self.routes is None:
            return
        vips = [s.addr for s in self.cfg.services.values()]
        self.routes.update(vips=vips, sources=rule_sources(self.cfg, self.args.reply_from),
                           services=list(self.cfg.services))

    # ------------------------------------------------------------- signals
    def reload(self):
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
            log(f"SIGHUP: {path}: {e}; running configuration unchanged")
            return
        self.sync.flush()
        try:
            self.update_routes()
        except Exception as e:   # noqa: BLE001 - reported, keep running
            log(f"SIGHUP: routes: {e}")
        log(f"SIGHUP: {path}: applied {len(cmds)} change(s)")

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

    # ---------------------------------------------------------------- run
    async def serve(self):
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.stop_event.set)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.loop.add_signal_handler(signal.SIGUSR1, self.dump_stats)
        self.driver.attach(self.loop)
        # the control socket for `userlb adm` (userlb/control/server.py)
        from ..control.server import start_for_director
        self.control = await start_for_director(self)
        nsvc = len(self.cfg.services)
        ndest = sum(len(s.dests) for s in self.cfg.services.values())
        log(f"ready: {self.dev.name} pid {os.getpid()}, {nsvc} service(s), "
            f"{ndest} real server(s)"
            + ("" if self.routes else ", no routes")
            + (", sloppy TCP" if self.args.sloppy_tcp else "")
            + (", offloads " + ("+".join(self.dev.offload_names) or "none (vnet header only)")
               if self.dev.vnet else ", no offloads"))
        await self.stop_event.wait()
        if self.control is not None:
            self.control.close()
        self.driver.detach()

    def close(self):
        errors = []
        if self.routes is not None:
            errors = self.routes.remove()
            self.routes = None
        self.dev.close()
        for e in errors:
            log(f"cleanup: {e}")


def log(msg):
    print(f"userlb run: {msg}", file=sys.stderr, flush=True)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def main(argv):
    args = build_parser().parse_args(argv)
    # until the event loop takes over: end through `finally` (cleanup) on TERM
    signal.signal(signal.SIGTERM, _raise_exit)
    from ..control.config import Config
    if args.config:
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

    from ..dataplane.tun import TunError
    try:
        director = Director(args, cfg)
    except TunError as e:
        log(str(e))
        return 1
    try:
        if not args.no_routes:
            try:
                director.install_routes()
            except Exception as e:   # noqa: BLE001
                log(f"cannot install routes: {e}")
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
    return 0
