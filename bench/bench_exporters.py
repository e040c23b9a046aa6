#!/usr/bin/env python3
"""Cost of the exporters on the packet path (root; network namespaces).

    .venv/bin/python bench/bench_exporters.py [--seconds 3] [--runs 3]

bench_tun.py's small-UDP measurement (`tun.userlb.pps`: packets per second
delivered to the real server through `userlb run`), with the exporters off
and with `--procfs DIR --metrics 127.0.0.1:PORT` on, alternated run by run
in the same lab (the machine is shared and noisy); /metrics is scraped once
per "on" run to check the endpoint is live.  Prints:

  tun.userlb.pps                the exporters off
  tun.userlb_exporters.pps      --procfs and --metrics on
  tun.userlb_exporters_vs_off.ratio   target: >= 0.95
"""
import argparse
import os
import subprocess
import sys

import bench_tun as bt
from common import emit


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("bench_exporters: needs root and /dev/net/tun; skipped", file=sys.stderr)
        return 0
    from userlb.lab import Lab
    res = {"off": [], "on": []}
    lab = Lab(n_servers=1, n_clients=1, director=False, current=False)
    try:
        lab.up()
        lab.write_rules(bt.rules())
        procfs = str(lab.dir / "proc")
        for run in range(args.runs):
            for mode in ("off", "on"):
                extra = [] if mode == "off" else ["--procfs", procfs,
                                                   "--metrics", "127.0.0.1:9783"]
                proc = bt.forwarder(lab, "userlb", extra)
                try:
                    pps, offered, _us = bt.measure_pps(lab, args.seconds, pid=proc.pid)
                    if mode == "on":
                        p = subprocess.run(["ip", "netns", "exec", lab.director, "curl", "-sf",
                                            "http://127.0.0.1:9783/metrics"],
                                           capture_output=True, text=True, timeout=30)
                        assert "node_ipvs_incoming_packets_total" in p.stdout, p.stderr
                finally:
                    lab.stop("director")
                res[mode].append(pps)
                print(f"run {run}: exporters {mode}: {pps:,.0f} pps delivered "
                      f"(offered {offered:,.0f})", file=sys.stderr, flush=True)
    finally:
        lab.down()
    off, on = bt.median(res["off"]), bt.median(res["on"])
    emit("tun.userlb.pps", round(off), "pps", runs=[round(x) for x in res["off"]])
    emit("tun.userlb_exporters.pps", round(on), "pps", runs=[round(x) for x in res["on"]])
    if off:
        paired = [b / a for a, b in zip(res["off"], res["on"], strict=False) if a]
        emit("tun.userlb_exporters_vs_off.ratio", round(on / off, 3), "ratio",
             paired_median=round(bt.median(paired), 3), runs=[round(x, 3) for x in paired])
    return 0


if __name__ == "__main__":
    sys.exit(main())
