#!/usr/bin/env python3
"""BGP failover in the lab (root; network namespaces; real BIRD 2 and ExaBGP;
not a timed test).

    .venv/bin/python bench/bench_bgp.py [--runs 6] [--connections 30]

One lab (`userlb lab up --directors 3 --bgp`: BIRD on the router, ExaBGP +
`userlb announce --interval 0.5 --rise 2 --fall 2` on each director).  Each
run streams checked data on `--connections` TCP connections and kill -9's
one director's `userlb run` (the victims rotate; odd runs `mh` + sloppy
TCP on port 7, even runs `mhs` + mh-port without sloppy TCP), then starts
it again.  Printed (JSON lines):

  bgp.kill9_withdraw.median_s / .max_s   kill -9 of `userlb run` -> its paths
                                          to both VIPs gone from BIRD's table
                                          (polled with birdc every 20 ms)
  bgp.kill9_connections_broken.count     connections that did not complete
                                          with their data intact, all runs
  bgp.kill9_connections.count            connections streamed, all runs
  bgp.restart_announce.median_s          `userlb run` ready -> announced again
  bgp.sigstop_withdraw_s                 SIGSTOP of `userlb run` (it stops
                                          answering) -> withdrawn
  bgp.exabgp_kill9_withdraw_s            kill -9 of ExaBGP -> withdrawn (its
                                          TCP session closes)
"""
import argparse
import os
import pathlib
import signal
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from userlb.lab import ECHO, VIP4, VIP6, Lab, ecmp  # noqa: E402
from userlb.lab import bgp as B  # noqa: E402

MHS_PORT = ecmp.PORT_OF[("mhs", "mh-port")]


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--connections", type=int, default=30)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_bgp: needs root (network namespaces)", file=sys.stderr)
        return 0
    lab = Lab(n_servers=3, n_clients=16, directors=3, bgp=True, current=False).up()
    try:
        lab.reload(lab.rules_text(extra=ecmp.service_rules(
            lab.servers, services=((MHS_PORT, "mhs", "mh-port"),))))
        withdraw, back, broken, total = [], [], 0, 0
        for i in range(a.runs):
            k = i % 3 + 1
            mhs = i % 2 == 1
            lab.adm_all("--sloppy-tcp", "off" if mhs else "on")
            port = MHS_PORT if mhs else ECHO
            r = B.failover(lab, [[VIP4, port], [VIP6, port]], k, count=a.connections)
            if len(r["withdrawn"]) == 2:
                withdraw.append(max(r["withdrawn"].values()))
            broken += sum(1 for f in r["final"] if not (f["done"] and f["intact"]))
            total += len(r["final"])
            lab.revive_director(k)
            back.append(B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2, 3}, 10))
            B.wait_routes(lab, lab.vip_prefixes()[1], {1, 2, 3}, 10)
        emit("bgp.kill9_withdraw.median_s", round(statistics.median(withdraw), 3), "s",
             runs=len(withdraw), of=a.runs)
        emit("bgp.kill9_withdraw.max_s", round(max(withdraw), 3), "s")
        emit("bgp.kill9_connections_broken.count", broken, "connections")
        emit("bgp.kill9_connections.count", total, "connections")
        emit("bgp.restart_announce.median_s", round(statistics.median(back), 3), "s")
        pid = lab.director_pid(2)
        os.kill(pid, signal.SIGSTOP)
        try:
            t = B.wait_routes(lab, lab.vip_prefixes()[0], {1, 3}, 10)
        finally:
            os.kill(pid, signal.SIGCONT)
        emit("bgp.sigstop_withdraw_s", round(t, 3), "s")
        B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2, 3}, 10)
        t0 = time.monotonic()
        os.kill(lab.pids["exabgp3"], signal.SIGKILL)
        B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2}, 10, poll=0.005)
        emit("bgp.exabgp_kill9_withdraw_s", round(time.monotonic() - t0, 3), "s")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
