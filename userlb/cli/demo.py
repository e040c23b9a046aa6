"""`userlb demo` (what `make demo` runs): lab up, demo, lab down.

    userlb demo [--requests N] [--servers N] [--keep] [--directors K] [--connections N]

Sets up the network-namespace lab (userlb.lab), sends traffic through the
director and compares each flow with `userlb simulate`, prints the
distribution and the director's stats, and removes the lab -- also when
something failed (`--keep` leaves it up for a look; `userlb lab down` then).
Then, unless `--directors 1`, the failover demo (`userlb lab demo
--directors K`, default K = 3): K directors behind an ECMP router, long-lived
connections streaming checked data while directors are killed one after
another, connections counted before and after (on its own lab, removed at
the end).  Exit status 0 when every flow went where predicted and no
connection was lost.  Ctrl-C stops it: the lab is removed (a second Ctrl-C
does not cut that short), one line says so, exit status 130.  Needs root.
"""
import argparse
import os
import sys


def main(argv):
    p = argparse.ArgumentParser(prog="userlb demo", description=__doc__.split("\n\n")[1])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--udp-flows", type=int, default=60)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    p.add_argument("--directors", type=int, default=3,
                   help="directors of the failover demo (1: no failover demo)")
    p.add_argument("--connections", type=int, default=30,
                   help="long-lived connections of the failover demo")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("userlb demo: needs root and /dev/net/tun (network namespaces + a TUN device)",
              file=sys.stderr)
        return 1
    removed, kept = [], []
    try:
        return _demo(args, removed, kept)
    except KeyboardInterrupt:
        what = ([f"lab {', '.join(removed)} removed"] if removed else []) + \
               [f"lab {t} left up (`userlb lab down --lab {t[4:]}` removes it)" for t in kept]
        print(("\n" if sys.stderr.isatty() else "") + "userlb demo: interrupted"
              + (f"; {'; '.join(what)}" if what else ""), file=sys.stderr, flush=True)
        return 130


def _demo(args, removed, kept):
    from ..lab import Lab, LabError
    from ..lab import demo as lab_demo
    lab = Lab(n_servers=args.servers, current=False)
    interrupted = False
    try:
        print(f"setting up lab {lab.tag} ({args.servers} real servers) ...", flush=True)
        lab.up()
        res = lab_demo.run(lab, requests=args.requests, udp_flows=args.udp_flows)
    except LabError as e:
        print(f"userlb demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        with lab_demo.sigint_ignored():
            if args.keep:
                if interrupted:
                    kept.append(lab.tag)
                else:
                    print(f"lab {lab.tag} left up; remove it with "
                          f"`userlb lab down --lab {lab.sfx}`")
            else:
                lab.down()
                if interrupted:
                    removed.append(lab.tag)
                else:
                    print(f"lab {lab.tag} removed")
    if not res["ok"]:
        return 1
    if args.directors < 2:
        return 0
    from ..lab import ecmp
    print(flush=True)
    try:
        return ecmp.demo_main(args.directors, connections=args.connections, temp=True,
                              removed=removed)
    except LabError as e:
        print(f"userlb demo: {e}", file=sys.stderr)
        return 1
