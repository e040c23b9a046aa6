"""`userlb demo` (what `make demo` runs): lab up, demo, lab down.

    userlb demo [--requests N] [--servers N] [--keep]

Sets up the network-namespace lab (userlb.lab), sends traffic through the
director and compares each flow with `userlb simulate`, prints the
distribution and the director's stats, and removes the lab -- also when
something failed (`--keep` leaves it up for a look; `userlb lab down` then).
Exit status 0 when every flow went where predicted.  Needs root.
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
    return 0 if res["ok"] else 1
