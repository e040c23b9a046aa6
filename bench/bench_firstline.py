"""The first line's cost in normal operation (userlb/dataplane/firstline.py):
kernel forwarding of established-flow packets through a namespace with and
without the first line's nftables table bound to the egress device.

Three namespaces: sender -- fwd -- sink (veth pairs); the sender blasts UDP
datagrams (userlb.lab.flood, sendmmsg) at a discard address behind `fwd`;
the softirq forwarding runs on the sender's CPU, so the sender's rate
drops by whatever the rules cost.  Alternating runs with and without the
table; medians.  Root only (skipped otherwise).  Prints:

    firstline_fwd_pps_off / _on   packets/s forwarded (median of runs)
    firstline_cost_ns             (1/on - 1/off) per packet, ns
"""
import json
import os
import secrets
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import emit  # noqa: E402

from userlb.dataplane.firstline import ruleset  # noqa: E402

RUNS = 5
SECONDS = 1.5


def sh(*cmd, check=True, input=None):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input)


def main():
    if os.geteuid() != 0:
        print("bench_firstline: needs root (skipped)", file=sys.stderr)
        return 0
    sfx = secrets.token_hex(3)
    a, f, b = f"ulb-fb{sfx}-a", f"ulb-fb{sfx}-f", f"ulb-fb{sfx}-b"
    try:
        for ns in (a, f, b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "e0", "netns", a, "type", "veth", "peer", "name", "i0",
           "netns", f)
        sh("ip", "link", "add", "o0", "netns", f, "type", "veth", "peer", "name", "e0",
           "netns", b)
        for ns, dev, addr in ((a, "e0", "10.71.0.2/24"), (f, "i0", "10.71.0.1/24"),
                              (f, "o0", "10.72.0.1/24"), (b, "e0", "10.72.0.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", a, "route", "add", "default", "via", "10.71.0.1")
        sh("ip", "-n", b, "route", "add", "default", "via", "10.72.0.1")
        sh("ip", "netns", "exec", f, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # the sink drops what it gets (no socket: port unreachable is rate limited)
        sh("ip", "netns", "exec", b, "nft", "-f", "-",
           input="table ip sink {\n chain sink_in {\n type filter hook input priority 0;\n"
                 " udp dport 5000 drop\n }\n}\n")
        script = ruleset("o0", total=20000, per_prefix=20, notrack=False)
        res = {"off": [], "on": []}
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
        for _ in range(RUNS):
            for mode in ("off", "on"):
                if mode == "on":
                    sh("ip", "netns", "exec", f, "nft", "-f", "-", input=script)
                else:
                    sh("ip", "netns", "exec", f, "nft", "delete", "table", "inet",
                       "userlb_fl_o0", check=False)
                p = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-m",
                                    "userlb.lab.flood", "--dst", "10.72.0.2", "--port", "5000",
                                    "--flows", "8", "--seconds", str(SECONDS)],
                                   capture_output=True, text=True, env=env, check=True)
                res[mode].append(json.loads(p.stdout.strip().splitlines()[-1])["pps"])
        off, on = statistics.median(res["off"]), statistics.median(res["on"])
        load = open("/proc/loadavg").read().split()[0]
        emit("firstline_fwd_pps_off", round(off), "packets/s", load=load)
        emit("firstline_fwd_pps_on", round(on), "packets/s", load=load)
        emit("firstline_cost_ns", round(1e9 / on - 1e9 / off, 1), "ns/packet", load=load,
             runs_off=[round(x) for x in res["off"]], runs_on=[round(x) for x in res["on"]])
    finally:
        for ns in (a, f, b):
            sh("ip", "netns", "del", ns, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
