"""`userlb lab up | demo | down | status`: the network-namespace lab.

    userlb lab up [--servers N] [--clients N] [--far-mtu MTU] [--sloppy-tcp]
    userlb lab demo [--requests N] [--udp-flows N]
    userlb lab status
    userlb lab down [--all]

`up` creates a client namespace (N client addresses, IPv4 and IPv6), a
director namespace running `userlb run` on a TUN device, and N real-server
namespaces running HTTP / TCP echo / TCP hash / UDP echo servers (see
userlb.lab).  Names carry a random suffix; the state (names, PIDs) is kept in
/run/userlb-lab/SUFFIX/state.json and /run/userlb-lab/current points to the
last lab.  `demo` sends traffic and compares with `userlb simulate`; `down`
kills the lab's processes and deletes its namespaces (idempotent; `--all`:
every lab found in /run/userlb-lab).  Root is needed.
"""
import argparse
import os
import sys


def build_parser():
    p = argparse.ArgumentParser(prog="userlb lab", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="create the lab")
    up.add_argument("--servers", type=int, default=3)
    up.add_argument("--clients", type=int, default=8)
    up.add_argument("--far-mtu", type=int, default=None,
                    help="add a real server behind a router whose server-side link has this MTU")
    up.add_argument("--sloppy-tcp", action="store_true")
    d = sub.add_parser("demo", help="send traffic, compare with `userlb simulate`, print stats")
    d.add_argument("--requests", type=int, default=300)
    d.add_argument("--udp-flows", type=int, default=60)
    d.add_argument("--lab", help="lab suffix (default: the current one)")
    sub.add_parser("status", help="show the current lab")
    dn = sub.add_parser("down", help="remove the lab")
    dn.add_argument("--all", action="store_true")
    dn.add_argument("--lab", help="lab suffix (default: the current one)")
    return p


def main(argv):
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("userlb lab: needs root (network namespaces, /dev/net/tun)", file=sys.stderr)
        return 1
    from ..lab import Lab, LabError
    from ..lab import demo as lab_demo
    try:
        if args.action == "up":
            lab = Lab(n_servers=args.servers, n_clients=args.clients, far_mtu=args.far_mtu,
                      sloppy=args.sloppy_tcp).up()
            print(f"lab {lab.tag} is up: client {lab.client}, director {lab.director}, "
                  f"servers {' '.join(s[0] for s in lab.servers)}")
            print(f"  VIPs 10.99.0.1 and fd00:99::1; rules {lab.rules_path}")
            print(f"  try: ip netns exec {lab.client} curl -s http://10.99.0.1/")
            return 0
        if args.action == "demo":
            lab = Lab.load(args.lab)
            res = lab_demo.run(lab, requests=args.requests, udp_flows=args.udp_flows)
            return 0 if res["ok"] else 1
        if args.action == "status":
            lab = Lab.load()
            print(open(lab.dir / "state.json").read())
            return 0
        if args.action == "down":
            sfxs = Lab.all_suffixes() if args.all else [args.lab]
            if args.all and not sfxs:
                print("no lab")
                return 0
            for s in sfxs:
                try:
                    lab = Lab.load(s)
                except LabError as e:
                    if not args.all:
                        print(f"nothing to do: {e}")
                        return 0
                    continue
                errors = lab.down()
                for e in errors:
                    print(f"warning: {e}", file=sys.stderr)
                print(f"lab {lab.tag} removed")
            return 0
    except LabError as e:
        print(f"userlb lab: {e}", file=sys.stderr)
        return 1
    return 2
