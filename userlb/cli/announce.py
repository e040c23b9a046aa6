"""`userlb announce`: announce the running director's VIPs over BGP as an
ExaBGP API process, while the director is fit; withdraw them when it is not.

    userlb announce [--control PATH] [--tun NAME | --no-tun-check]
                    [--interval S] [--rise N] [--fall N] [--timeout S]
                    [--ignore-quorum] [--next-hop self|ADDR]
                    [--med [PREFIX=]N]... [--community [PREFIX=]A:B]...
                    [--also PREFIX]... [--ack auto|on|off] [--ack-timeout S] [--no-clear]
                    [--dry-run] [--once] [--exit-code]

In ExaBGP's configuration (ExaBGP 4.x):

    process userlb {
        run /usr/bin/userlb announce --control /run/userlb/control.sock;
        encoder text;
    }
    neighbor 192.0.2.1 { ...; api { processes [ userlb ]; } }

Every VIP of the director (`userlb adm -S -n`) is announced as a /32 or /128
with next hop self while the director is fit: `userlb run` answers on its
control socket and its TUN device is up and held (`rise` looks in a row
make it fit, `fall` unfit looks make it unfit).  A VIP one of whose services
is below its keepalived quorum (`userlb run --keepalived`), or that the
director's routing does not send into the TUN device (`ip route get`), is
withdrawn after `fall` looks and comes back after `rise`.  VIPs added or removed live
are announced or withdrawn at the next look.  `--also PREFIX` announces
more prefixes under the director's state (e.g. the client networks toward
the real servers' side).  Log lines go to stderr (ExaBGP's log).

--dry-run prints the API lines instead of talking to ExaBGP (with --once,
one look, the counters skipped).  --exit-code: one look; prints each
prefix's verdict and exits 0 when the director and all its VIPs are fit, 1
when the director is not, 3 when some VIP is not (for BIRD users, see
`userlb bird-config`).  docs/scale-out.md has the whole recipe.
"""
import argparse
import signal
import sys
import time


def build_parser():
    from ..control.protocol import DEFAULT_PATH
    p = argparse.ArgumentParser(prog="userlb announce", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control", default=DEFAULT_PATH, metavar="PATH",
                   help=f"the director's control socket (default {DEFAULT_PATH})")
    p.add_argument("--tun", default="userlb0", metavar="NAME",
                   help="the director's TUN device (default userlb0, as `userlb run`)")
    p.add_argument("--no-tun-check", action="store_true", help="do not look at the TUN device")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between looks (default 1)")
    p.add_argument("--rise", type=int, default=3, help="fit looks in a row to announce (3)")
    p.add_argument("--fall", type=int, default=2, help="unfit looks in a row to withdraw (2)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="a director that does not answer within S seconds is not fit "
                        "(default: the interval)")
    p.add_argument("--ignore-quorum", action="store_true",
                   help="keep announcing a VIP whose service lost its keepalived quorum "
                        "(e.g. one site with a sorry server)")
    p.add_argument("--next-hop", default="self", metavar="self|ADDR")
    p.add_argument("--med", action="append", default=[], metavar="[PREFIX=]N",
                   help="MED of every prefix, or of one (repeatable)")
    p.add_argument("--community", action="append", default=[], metavar="[PREFIX=]A:B",
                   help="a community on every prefix, or on one (repeatable)")
    p.add_argument("--also", action="append", default=[], metavar="PREFIX",
                   help="announce this prefix too while the director is fit (repeatable)")
    p.add_argument("--ack", choices=("auto", "on", "off"), default="auto",
                   help="ExaBGP's answers to each line (exabgp.api.ack); auto: on until "
                        "none comes")
    p.add_argument("--ack-timeout", type=float, default=2.0, metavar="S")
    p.add_argument("--no-clear", action="store_true",
                   help="do not send `clear adj-rib out` at start")
    p.add_argument("--dry-run", action="store_true",
                   help="print the API lines, do not read ExaBGP's answers")
    p.add_argument("--once", action="store_true", help="one look (no counters), then exit")
    p.add_argument("--exit-code", action="store_true",
                   help="one look; exit 0 fit, 1 director not fit, 3 a VIP not fit")
    return p


def _log(msg):
    print(f"{time.strftime('%H:%M:%S')} userlb announce: {msg}", file=sys.stderr, flush=True)


def main(argv):
    from ..announce import exabgp as X
    from ..announce import probe
    from ..announce.fitness import Announcer, Reading
    from ..announce.speaker import Speaker, reader
    p = build_parser()
    a = p.parse_args(argv)
    if a.interval <= 0 or a.ack_timeout <= 0 or (a.timeout is not None and a.timeout <= 0):
        p.error("--interval, --timeout and --ack-timeout must be above 0")
    if a.rise < 1 or a.fall < 1:
        p.error("--rise and --fall must be at least 1")
    try:
        common, table = X.attrs_table(a.med, a.community)
        also = tuple(X.prefix(x) for x in a.also)
    except (X.AttrError, ValueError) as e:
        p.error(str(e))
    if a.next_hop != "self":
        try:
            a.next_hop = X.host_prefix(a.next_hop).split("/")[0]
        except ValueError:
            p.error(f"--next-hop {a.next_hop!r}: 'self' or an address")
    tun = None if a.no_tun_check else a.tun
    timeout = a.timeout or a.interval

    def look():
        r = probe.look(a.control, tun, timeout)
        return Reading(down=r.down, vips=r.vips, unrouted=r.unrouted) if a.ignore_quorum else r

    if a.exit_code:
        return _exit_code(look(), also)
    dec = Announcer(a.rise, a.fall, also, immediate=a.once)
    answers = None if a.dry_run else reader(sys.stdin)
    sp = Speaker(look, sys.stdout, answers, dec, interval=a.interval, ack=a.ack,
                 ack_timeout=a.ack_timeout, attrs=common, attrs_of=table,
                 next_hop=a.next_hop, clear=not a.no_clear, log=_log)
    signal.signal(signal.SIGTERM, lambda *_: sp.stop())
    signal.signal(signal.SIGINT, lambda *_: sp.stop())
    _log(f"director {a.control}" + (f", TUN {tun}" if tun else "") +
         f"; every {a.interval:g}s, rise {a.rise}, fall {a.fall}" +
         (" (dry run)" if a.dry_run else ""))
    try:
        sp.run(count=1 if a.once else None)
    except BrokenPipeError:
        _log("ExaBGP closed our stdout")
        return 0
    return 0


def _exit_code(reading, also):
    if reading.down is not None:
        print(f"not fit: {reading.down}")
        return 1
    bad = 0
    for pfx in sorted(reading.vips) + [x for x in also if x not in reading.vips]:
        why = reading.why_not(pfx)
        print(f"{pfx} " + ("fit" if why is None else f"not fit: {why}"))
        bad += why is not None
    if not reading.vips:
        print("fit (the director has no VIPs)")
    return 3 if bad else 0
