"""`userlb lab up | demo | down | status`: the network-namespace lab.

    userlb lab up [--servers N] [--clients N] [--far-mtu MTU] [--sloppy-tcp] [--directors K]
    userlb lab demo [--requests N] [--udp-flows N] [--directors K]
    userlb lab kill-director N [--hard]
    userlb lab start-director N
    userlb lab experiment [--quick] [--seconds S] [--rate R] ...
    userlb lab status [--json]
    userlb lab down [--all]

`up` creates a client namespace (N client addresses, IPv4 and IPv6), a
director namespace running `userlb run` on a TUN device, and N real-server
namespaces running HTTP / TCP echo / TCP hash / UDP echo servers (see
userlb.lab).  Names carry a random suffix; the state (names, PIDs) is kept in
/run/userlb-lab/SUFFIX/state.json and /run/userlb-lab/current points to the
last lab.  `status` shows its namespaces, processes and control sockets
(`--json`: the saved state).  `demo` sends traffic and compares with
`userlb simulate` on the director's running configuration; `down`
kills the lab's processes and deletes its namespaces (idempotent; `--all`:
every lab found in /run/userlb-lab).  Root is needed.

`--directors K` (K >= 2): K director namespaces, all running `userlb run`
with the same rules, behind a router namespace that reaches the VIPs through
a kernel multipath route with L4 hashing; the real servers' replies go back
through the router and are hashed over the directors too (any director may
see the replies of a flow it never saw).  `kill-director N` takes director N
out of the router's routes and stops it; `start-director N` starts it again
and puts it back.  `demo --directors K` shows a failover: long-lived
connections, directors killed one after another, connections counted before
and after (on the current lab if it has K directors, else on a temporary
one).  `experiment`: the mhs experiment (docs/mhs-experiment.md);
`experiment flood`: the flood experiment (docs/flood-experiment.md).

`up --directors K --bgp`: the router's routes come from BGP instead (BIRD 2
on the router, ExaBGP + `userlb announce` on each director; see
docs/scale-out.md); `kill-director N` then stops only director N's `userlb
run` and BGP withdraws it; `demo --bgp` shows that failover with the
router's table before and after; `status` shows `birdc show route`.

`up --keepalived`: the classic LVS pair (userlb/lab/vrrp.py,
docs/keepalived.md): two directors on shared segments with real keepalived
(VRRP only) moving the VIP and the real servers' gateway, `userlb run
--keepalived` on both; `kill-director 1` stops director 1 as a crash would;
`demo --keepalived` shows the failover with 30 streaming connections.
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
    up.add_argument("--metrics", metavar="ADDR:PORT", default=None,
                    help="pass --metrics to the director(s) (in their namespace)")
    up.add_argument("--procfs", metavar="DIR", default=None,
                    help="pass --procfs DIR to the director(s)")
    up.add_argument("--directors", type=int, default=1, metavar="K",
                    help="K >= 2: K directors behind an ECMP router (default 1)")
    up.add_argument("--bgp", action="store_true",
                    help="with --directors K: the router's routes from BGP (BIRD on the "
                         "router, ExaBGP + `userlb announce` on each director)")
    up.add_argument("--keepalived", action="store_true",
                    help="two directors with real keepalived (VRRP) moving the VIP, "
                         "`userlb run --keepalived` on both (docs/keepalived.md)")
    d = sub.add_parser("demo", help="send traffic, compare with `userlb simulate`, print stats")
    d.add_argument("--requests", type=int, default=300)
    d.add_argument("--udp-flows", type=int, default=60)
    d.add_argument("--lab", help="lab suffix (default: the current one)")
    d.add_argument("--directors", type=int, default=None, metavar="K",
                   help="K >= 2: the failover demo with K directors")
    d.add_argument("--connections", type=int, default=30,
                   help="long-lived connections of the failover demo (default 30)")
    d.add_argument("--bgp", action="store_true",
                   help="with --directors K: the failover with BGP, the router's table "
                        "before and after")
    d.add_argument("--keepalived", action="store_true",
                   help="the VRRP failover: the master director stopped, the backup "
                        "takes the VIP and the streams over")
    kd = sub.add_parser("kill-director", help="take director N out of the routes and stop it")
    kd.add_argument("n", type=int)
    kd.add_argument("--hard", action="store_true", help="SIGKILL instead of SIGTERM")
    kd.add_argument("--lab", help="lab suffix (default: the current one)")
    sd = sub.add_parser("start-director", help="start director N again and put it back")
    sd.add_argument("n", type=int)
    sd.add_argument("--lab", help="lab suffix (default: the current one)")
    ex = sub.add_parser("experiment", help="the mhs experiment (docs/mhs-experiment.md)",
                        add_help=False)
    ex.add_argument("rest", nargs=argparse.REMAINDER)
    st = sub.add_parser("status", help="show the current lab")
    st.add_argument("--json", action="store_true", help="the raw state (state.json)")
    st.add_argument("--lab", help="lab suffix (default: the current one)")
    dn = sub.add_parser("down", help="remove the lab")
    dn.add_argument("--all", action="store_true")
    dn.add_argument("--lab", help="lab suffix (default: the current one)")
    return p


def status_text(lab):
    """`userlb lab status`: the lab for a human (`--json`: the raw state)."""
    from ..lab import VIP4, VIP6
    from ..lab.base import short

    def proc(key):
        pid = lab.pids.get(key)
        if not pid:
            return "not running"
        return f"pid {pid}, " + ("running" if lab.ours(pid) else "NOT running (gone)")

    if getattr(lab, "keepalived", False):
        from ..lab.vrrp import status_lines
        return "\n".join(status_lines(lab, proc))
    lines = [f"lab {lab.tag} (state {lab.dir}/state.json)",
             f"  client    {lab.client}: {' '.join(lab.clients4)}",
             f"            {' '.join(lab.clients6)}"]
    if lab.n_directors > 1:
        lines.append(f"  router    {lab.router}: ECMP over the directors in the routes "
                     f"({' '.join(map(str, lab.alive)) or 'none'})")
    for k in range(1, lab.n_directors + 1):
        name = "director" if lab.n_directors == 1 else f"director {k}"
        routes = ("" if lab.n_directors == 1 else
                  ", in the routes" if k in lab.alive else ", out of the routes")
        lines.append(f"  {name:<9} {lab.director_ns[k - 1]}: {proc(lab.director_key(k))}"
                     f"{routes}")
        lines.append(f"            userlb adm --control {lab.control_of(k)} -L -n")
    for ns, a4, a6 in lab.servers + ([lab.far] if lab.far else []):
        lines.append(f"  {short(ns):<9} {ns}: {a4} {a6}, {proc(short(ns))}")
    lines.append(f"  VIPs      {VIP4} {VIP6}; rules file {lab.rules_path}")
    lines.append(f"  director log {lab.log_of(1)}"
                 + ("" if lab.n_directors == 1 else " (director-K.log for director K)"))
    if getattr(lab, "bgp", False):
        lines.append(f"  BGP: BIRD on the router (ip netns exec {lab.router} birdc -s "
                     f"{lab.bird_ctl} show route), ExaBGP + userlb announce on each director "
                     f"({lab.dir}/exabgp-K.log)")
        lines.append("  the router's view (birdc show route):")
        lines += ["    " + x for x in lab.birdc("show route", check=False).splitlines()]
    return "\n".join(lines)


def _up_keepalived(args):
    """`userlb lab up --keepalived`: the VRRP pair (userlb/lab/vrrp.py)."""
    from ..lab.vrrp import VrrpLab
    if args.directors != 1 or args.bgp or args.far_mtu or args.metrics or args.procfs:
        print("userlb lab: --keepalived takes only --servers and --clients", file=sys.stderr)
        return 2
    lab = VrrpLab(n_servers=args.servers, n_clients=args.clients).up()
    print(f"lab {lab.tag} is up: client {lab.client}, switch {lab.switch}, directors "
          f"{' '.join(lab.director_ns)} (keepalived + userlb run --keepalived), "
          f"servers {' '.join(s[0] for s in lab.servers)}")
    print(f"  VRRP master: director {' '.join(map(str, lab.master()))}; "
          f"keepalived.conf {lab.conf_path(1)} (director 2: d2.conf)")
    print(f"    userlb adm --control {lab.control_of(1)} -L -n --health")
    print(f"  try: ip netns exec {lab.client} curl -s http://{lab.vip}/")
    print("  `userlb lab kill-director 1`, `userlb lab start-director 1`, "
          "`userlb lab demo --keepalived`, `userlb lab down`")
    return 0


def main(argv):
    if argv[:2] == ["experiment", "flood"]:
        from ..lab import flood_experiment
        return flood_experiment.main(argv[2:])
    if argv[:1] == ["experiment"]:
        from ..lab import experiment
        return experiment.main(argv[1:])
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("userlb lab: needs root (network namespaces, /dev/net/tun)", file=sys.stderr)
        return 1
    from ..lab import VIP4, VIP6, Lab, LabError
    from ..lab import demo as lab_demo
    try:
        if args.action == "up" and args.procfs and args.directors > 1:
            print("userlb lab: --procfs with --directors > 1: they would share one "
                  "directory", file=sys.stderr)
            return 2
        if args.action == "up" and args.keepalived:
            return _up_keepalived(args)
        if args.action == "up":
            lab = Lab(n_servers=args.servers, n_clients=args.clients, far_mtu=args.far_mtu,
                      sloppy=args.sloppy_tcp, directors=args.directors, bgp=args.bgp).up()
            if lab.n_directors > 1:
                print(f"lab {lab.tag} is up: client {lab.client}, router {lab.router}, "
                      f"directors {' '.join(lab.director_ns)}, "
                      f"servers {' '.join(s[0] for s in lab.servers)}")
                print(f"  VIPs {VIP4} and {VIP6}; rules {lab.rules_path}")
                print(f"  director K's control socket: {lab.dir}/control-K.sock, e.g.")
                print(f"    userlb adm --control {lab.control_of(1)} -L -n")
                print("  `userlb lab kill-director K`, `userlb lab start-director K`")
                if lab.bgp:
                    print(f"  routes from BGP: ip netns exec {lab.router} birdc -s "
                          f"{lab.bird_ctl} show route")
            else:
                print(f"lab {lab.tag} is up: client {lab.client}, director {lab.director}, "
                      f"servers {' '.join(s[0] for s in lab.servers)}")
                print(f"  VIPs {VIP4} and {VIP6}; rules {lab.rules_path}")
                print("  its director's control socket (plain `userlb adm` talks to "
                      "/run/userlb/control.sock, not this one):")
                print(f"    userlb adm --control {lab.control_path} -L -n")
            extra = ((["--metrics", args.metrics] if args.metrics else [])
                     + (["--procfs", args.procfs] if args.procfs else []))
            if extra:
                lab.director_extra = extra      # kept for start-director
                lab.save()
                lab.restart_director()
                for ns in lab.director_ns:
                    if args.metrics:
                        print(f"  metrics: ip netns exec {ns} curl -s "
                              f"http://{args.metrics}/metrics")
                if args.procfs:
                    print(f"  procfs: {args.procfs}/net/ip_vs, ip_vs_stats, ip_vs_conn")
            print(f"  try: ip netns exec {lab.client} curl -s http://{VIP4}/")
            print("  `userlb lab status`, `userlb lab demo`, `userlb lab down`")
            return 0
        if args.action == "demo":
            if args.keepalived:
                from ..lab import vrrp
                return 0 if vrrp.demo_main(args.lab, streams=args.connections) else 1
            if args.bgp:
                from ..lab import bgp as lab_bgp
                return lab_bgp.demo_main(args.directors or 3, suffix=args.lab,
                                          connections=args.connections)
            if args.directors is not None and args.directors >= 2:
                from ..lab import ecmp
                return ecmp.demo_main(args.directors, suffix=args.lab,
                                      connections=args.connections)
            lab = Lab.load(args.lab)
            res = lab_demo.run(lab, requests=args.requests, udp_flows=args.udp_flows)
            return 0 if res["ok"] else 1
        if args.action in ("kill-director", "start-director"):
            lab = Lab.load(args.lab)
            if args.action == "kill-director":
                pid = lab.kill_director(args.n, hard=args.hard)
                if getattr(lab, "keepalived", False):
                    print(f"director {args.n}: keepalived and userlb SIGKILLed, links down "
                          f"(a crash); VRRP master now: {lab.master() or 'none yet'}")
                    return 0
                if lab.bgp:
                    print(f"director {args.n}: userlb run stopped (pid {pid}); its "
                          f"userlb announce withdraws its routes (BGP)" if pid else
                          f"director {args.n} was not running")
                    return 0
                print(f"director {args.n} removed from the routes"
                      + (f" and stopped (pid {pid})" if pid else " (it was not running)")
                      + f"; directors in the routes: {' '.join(map(str, lab.alive)) or 'none'}")
            else:
                lab.revive_director(args.n)
                if getattr(lab, "keepalived", False):
                    print(f"director {args.n}: links up, keepalived and userlb started; "
                          f"VRRP master: {lab.master()}")
                    return 0
                if lab.bgp:
                    print(f"director {args.n} started (pid {lab.director_pid(args.n)}); "
                          f"its userlb announce announces it again (BGP)")
                    return 0
                print(f"director {args.n} started (pid {lab.director_pid(args.n)}); "
                      f"directors in the routes: {' '.join(map(str, lab.alive))}")
            return 0
        if args.action == "status":
            lab = Lab.load(args.lab)
            if args.json:
                print(open(lab.dir / "state.json").read())
            else:
                print(status_text(lab))
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
                for err in errors:
                    print(f"warning: {err}", file=sys.stderr)
                print(f"lab {lab.tag} removed")
            return 0
    except LabError as e:
        print(f"userlb lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # `up` removed what it had made; `demo` leaves the lab as it found it
        after = ("; the lab being set up was removed" if args.action == "up" else
                 "; the lab is still up (`userlb lab down` removes it)"
                 if args.action == "demo" and not args.directors else "")
        print(("\n" if sys.stderr.isatty() else "") + "userlb lab: interrupted" + after,
              file=sys.stderr)
        return 130
    return 2
