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
connection was lost.  Needs root.
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
    from ..lab import Lab, LabError
    from ..lab import demo as lab_demo
    lab = Lab(n_servers=args.servers, current=False)
    try:
        print(f"setting up lab {lab.tag} ({args.servers} real servers) ...", flush=True)
        lab.up()
        res = lab_demo.run(lab, requests=args.requests, udp_flows=args.udp_flows)
    except LabError as e:
        print(f"userlb demo: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"lab {lab.tag} left up; remove it with `userlb lab down`")
        else:
            lab.down()
            print(f"lab {lab.tag} removed")
    if not res["ok"]:
        return 1
    if args.directors < 2:
        return 0
    from ..lab import ecmp
    print(flush=True)
    try:
        return ecmp.demo_main(args.directors, connections=args.connections, temp=True)
    except LabError as e:
        print(f"userlb demo: {e}", file=sys.stderr)
        return 1
