#!/usr/bin/env python3
"""Forwarding throughput with 200 health-checked real servers (root; not a timed test).

    .venv/bin/python bench/bench_health.py [--seconds 3] [--runs 3] [--servers 200]

The packet-rate measurement of bench_tun.py (small UDP datagrams, 16 flows,
a sendmmsg generator pinned to CPU 0, `userlb run` pinned to CPU 1, packets
delivered counted at the real server's interface) with `userlb run
--keepalived FILE`: one UDP service (sh, sh-port) whose 200 real servers
are 200 addresses of the lab's real-server namespace (10.20.0.21..; its
never-read UDP sink takes the flood, its TCP echo port 7 answers the checks).
In the same lab, alternating run by run (and which goes first):

  tun.userlb_checked200.pps     every real server has a TCP_CHECK every
                                second (delay_loop 1, connect_port 7):
                                200 TCP connections a second from the
                                director while it forwards
  tun.userlb_unchecked.pps      the same file without the checkers
  tun.userlb_checked200_vs_unchecked.ratio   target: >= 0.95

plus the checked run's state (every real server up) and host.loadavg1.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_tun  # noqa: E402
from common import emit  # noqa: E402

VIP = bench_tun.VIP
PORT = bench_tun.UDP_PORT
CHECK_PORT = 7          # the lab server's TCP echo (userlb.lab.servers)


def addrs(n):
    if not 1 <= n <= 230:
        raise SystemExit("--servers: 1..230")
    return [f"10.20.0.{21 + i}" for i in range(n)]


def conf(servers, checked):
    out = [f"virtual_server {VIP} {PORT} {{", "    delay_loop 1", "    lb_algo sh",
           "    sh-port", "    lb_kind NAT", "    protocol UDP"]
    for a in servers:
        out.append(f"    real_server {a} {PORT} {{")
        if checked:
            out += ["        TCP_CHECK {", f"            connect_port {CHECK_PORT}",
                    "            connect_timeout 1", "        }"]
        out.append("    }")
    return "\n".join(out + ["}"]) + "\n"


def start(lab, path):
    argv = lab.director_argv()
    i = argv.index("--config")
    argv[i:i + 2] = ["--keepalived", path]
    pin = ["taskset", "-c", bench_tun.FWD_CPU] if bench_tun.FWD_CPU != "none" else []
    return lab.start("director", lab.director, pin + argv, ready="ready",
                     log=lab.director_log, timeout=60)


def health_up(lab):
    """How many real servers `adm -L -n --health` shows up."""
    p = lab.adm("-L", "-n", "--health")
    return sum(1 for line in p.stdout.splitlines()
               if line.strip().startswith("->") and line.split()[-1] == "up")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--servers", type=int, default=200)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("bench_health: needs root and /dev/net/tun; skipped", file=sys.stderr)
        return 0
    from userlb.lab import Lab
    servers = addrs(args.servers)
    res = {"checked": [], "unchecked": [], "up": [], "load": [os.getloadavg()[0]]}
    lab = Lab(n_servers=1, n_clients=1, director=False, current=False)
    try:
        lab.up()
        ns = lab.servers[0][0]
        lab.exec(ns, ["ip", "-batch", "-"],
                 input="".join(f"addr add {a}/24 dev eth0\n" for a in servers))
        paths = {}
        for kind in ("checked", "unchecked"):
            paths[kind] = str(lab.dir / f"{kind}.conf")
            with open(paths[kind], "w") as f:
                f.write(conf(servers, kind == "checked"))
        for run in range(args.runs):
            # which goes first alternates too
            for kind in ("checked", "unchecked")[::1 if run % 2 == 0 else -1]:
                proc = start(lab, paths[kind])
                try:
                    if kind == "checked":
                        # the first round of checks done (random start within delay_loop)
                        deadline = time.monotonic() + 10
                        while health_up(lab) < len(servers) and time.monotonic() < deadline:
                            time.sleep(0.2)
                        res["up"].append(health_up(lab))
                    else:
                        time.sleep(1.0)
                    pps, offered, _us = bench_tun.measure_pps(lab, args.seconds, pid=proc.pid)
                finally:
                    lab.stop("director")
                res[kind].append(pps)
                print(f"run {run}: {kind}: {pps:,.0f} pps delivered (offered {offered:,.0f})",
                      file=sys.stderr, flush=True)
    finally:
        lab.down()
    res["load"].append(os.getloadavg()[0])
    med = {k: statistics.median(res[k]) for k in ("checked", "unchecked")}
    emit(f"tun.userlb_checked{args.servers}.pps", round(med["checked"]), "pps",
         runs=[round(x) for x in res["checked"]], servers_up=res["up"])
    emit("tun.userlb_unchecked.pps", round(med["unchecked"]), "pps",
         runs=[round(x) for x in res["unchecked"]], servers=args.servers)
    paired = [c / u for c, u in zip(res["checked"], res["unchecked"], strict=True) if u]
    emit(f"tun.userlb_checked{args.servers}_vs_unchecked.ratio",
         round(med["checked"] / med["unchecked"], 3) if med["unchecked"] else 0.0, "ratio",
         paired_median=round(statistics.median(paired), 3) if paired else None,
         runs=[round(x, 3) for x in paired])
    emit("host.loadavg1", round(statistics.median(res["load"]), 2), "load",
         runs=[round(x, 2) for x in res["load"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
