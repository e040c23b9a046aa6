#!/usr/bin/env python3
"""Cost of keepalived's health checkers on the packet path (root; network
namespaces; not a timed test).

    .venv/bin/python bench/bench_checked.py [--seconds 3] [--runs 3]
                                            [--servers 200] [--check tcp|http]

bench_tun.py's small-UDP measurement (packets per second delivered to the
real server through `userlb run`, the forwarder pinned to CPU 1, the
generator to CPU 0) with `userlb run --keepalived FILE`: the UDP service
that is measured, plus a TCP service with --servers real servers
(10.20.0.11:11000, :11001, ...), each with its own checker run every second
(`delay_loop 1`; TCP_CHECK to the real server's echo port 7, or with
--check http an HTTP_GET of / on port 80).  The same file without the
checker blocks (same services, same destinations) is the reference;
the two alternate run by run in the same lab (the machine is shared and
noisy).  The checks really run: the real server's passive TCP opens
(/proc/net/snmp in its namespace) are counted during each checked run.
Prints:

  tun.userlb_unchecked200.pps      the file without checkers
  tun.userlb_checked200.pps        every real server checked every second
  tun.userlb_checked200_vs_unchecked.ratio   target: >= 0.95
  tun.userlb_checked200.checks_per_s         connections the checkers made
  tun.userlb_{unchecked,checked}200.cpu_us_per_pkt   the forwarder's CPU time
                                   per delivered packet (checks included)

(200: the number of real servers; another --servers changes the names.)
"""
import argparse
import os
import sys
import textwrap
import time

import bench_tun as bt
from common import emit

CHECK_BASE = 11000


def conf(n, checked, check):
    """keepalived.conf text: the measured UDP service and a TCP service with
    n real servers, each with a checker every second if checked."""
    if check == "http":
        chk = ("HTTP_GET {\n    url {\n        path /\n        status_code 200\n    }\n"
               "    connect_port 80\n    connect_timeout 1\n}\n")
    else:
        chk = "TCP_CHECK {\n    connect_port 7\n    connect_timeout 1\n}\n"
    reals = []
    for i in range(n):
        body = "    weight 1\n" + (textwrap.indent(chk, "    ") if checked else "")
        reals.append(f"real_server {bt.RIP} {CHECK_BASE + i} {{\n{body}}}\n")
    return (f"! bench_checked.py: {n} real servers, "
            f"{'checked every second (' + check + ')' if checked else 'no checkers'}\n"
            f"virtual_server {bt.VIP} {bt.UDP_PORT} {{\n"
            f"    protocol UDP\n    lb_algo sh\n    sh-port\n    lb_kind NAT\n"
            f"    real_server {bt.RIP} {bt.UDP_PORT} {{\n        weight 1\n    }}\n}}\n"
            f"virtual_server {bt.VIP} {bt.TCP_PORT} {{\n"
            f"    protocol TCP\n    lb_algo mh\n    lb_kind NAT\n    delay_loop 1\n"
            + textwrap.indent("".join(reals), "    ") + "}\n")


def passive_opens(lab):
    """The real server namespace's TCP PassiveOpens (connections accepted)."""
    text = lab.exec(lab.servers[0][0], ["cat", "/proc/net/snmp"]).stdout
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


def forwarder(lab, path):
    argv = lab.director_argv()
    i = argv.index("--config")
    argv[i:i + 2] = ["--keepalived", path]
    pin = ["taskset", "-c", bt.FWD_CPU] if bt.FWD_CPU != "none" else []
    return lab.start("director", lab.director, pin + argv, ready="ready",
                     log=lab.director_log, timeout=60)


def wait_up(lab, n, timeout=30):
    """Wait until the n checked real servers are all listed as up."""
    deadline = time.monotonic() + timeout
    while True:
        p = lab.adm("-L", "-n", "--health")
        up = sum(1 for ln in p.stdout.splitlines() if "Masq" in ln and ln.split()[-1] == "up")
        if up >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {up} of {n} real servers up:\n{p.stdout}{p.stderr}")
        time.sleep(0.5)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--check", choices=("tcp", "http"), default="tcp")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("bench_checked: needs root and /dev/net/tun; skipped", file=sys.stderr)
        return 0
    from userlb.lab import Lab
    n = args.servers
    res = {"unchecked": [], "checked": [], "checks": [], "unchecked_us": [], "checked_us": []}
    lab = Lab(n_servers=1, n_clients=1, director=False, current=False)
    try:
        lab.up()
        paths = {}
        for mode in ("unchecked", "checked"):
            paths[mode] = str(lab.dir / f"keepalived-{mode}.conf")
            with open(paths[mode], "w") as f:
                f.write(conf(n, mode == "checked", args.check))
        for run in range(args.runs):
            for mode in ("unchecked", "checked"):
                proc = forwarder(lab, paths[mode])
                try:
                    if mode == "checked":
                        time.sleep(1.5)           # the first round of checks
                        wait_up(lab, n)
                    o0, t0 = passive_opens(lab), time.monotonic()
                    pps, offered, us = bt.measure_pps(lab, args.seconds, pid=proc.pid)
                    o1, t1 = passive_opens(lab), time.monotonic()
                finally:
                    lab.stop("director")
                res[mode].append(pps)
                if us:
                    res[mode + "_us"].append(us)
                rate = (o1 - o0) / (t1 - t0)
                if mode == "checked":
                    res["checks"].append(rate)
                print(f"run {run}: {mode}: {pps:,.0f} pps delivered (offered {offered:,.0f}), "
                      f"forwarder CPU {us or 0:.2f} us/packet, {rate:.0f} connections/s "
                      "to the real server", file=sys.stderr, flush=True)
    finally:
        lab.down()
    off, on = bt.median(res["unchecked"]), bt.median(res["checked"])
    emit(f"tun.userlb_unchecked{n}.pps", round(off), "pps",
         runs=[round(x) for x in res["unchecked"]])
    emit(f"tun.userlb_checked{n}.pps", round(on), "pps",
         runs=[round(x) for x in res["checked"]], check=args.check)
    if off:
        paired = [b / a for a, b in zip(res["unchecked"], res["checked"], strict=False) if a]
        emit(f"tun.userlb_checked{n}_vs_unchecked.ratio", round(on / off, 3), "ratio",
             paired_median=round(bt.median(paired), 3), runs=[round(x, 3) for x in paired])
    for mode in ("unchecked", "checked"):
        if res[mode + "_us"]:
            emit(f"tun.userlb_{mode}{n}.cpu_us_per_pkt", round(bt.median(res[mode + "_us"]), 3),
                 "us", runs=[round(x, 3) for x in res[mode + "_us"]])
    emit(f"tun.userlb_checked{n}.checks_per_s", round(bt.median(res["checks"]), 1), "1/s",
         runs=[round(x, 1) for x in res["checks"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
