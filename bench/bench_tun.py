#!/usr/bin/env python3
"""Throughput through the lab (root; network namespaces; not a timed test).

    .venv/bin/python bench/bench_tun.py [--seconds 3] [--runs 3] [--only a,b,c]

Small UDP datagrams (18-byte payload, 16 flows) from a sendmmsg generator in
the client namespace to a VIP, packets per second delivered to the real
server (its interface's rx counter), for:

  tun.bare_loop.pps  a bare Python loop on the same TUN driver (uvloop,
                     add_reader, readv into one buffer, os.write) that only
                     patches the destination address (the VIP and real-server
                     addresses are chosen with equal 16-bit sums, so no
                     checksum changes): the ceiling for Python
  tun.userlb.pps     `userlb run` with the real engine, established flows
  tun.userlb_nooffload.pps  the same with `--no-offload` (`--only d`; not in
                     the default): the cost of the virtio-net header path
  tun.userlb_w2.pps  `userlb run --workers 2 --sloppy-tcp` (`--only w`, in the
                     default), not pinned (both CPUs: the generator shares one);
                     tun.userlb_w2.cpu_us_per_pkt counts the main process and
                     both workers, tun.userlb_w2.worker_cpu_util each worker's
                     CPU seconds per second
  tun.bare_loop_vnet.pps  the bare loop opened like `userlb run` (`--only e`, in
                     the default): offloads on, the virtio-net header read and
                     written back unchanged; tun.userlb_vs_bare_vnet.cpu_ratio
                     compares userlb with it (like for like)
  tun.nft_dnat.pps   the kernel: nftables DNAT in a fresh lab of its own
                     (conntrack there only), no TUN

and one iperf3 TCP stream (client -> server) through userlb and through the
kernel (tcp.userlb.gbps, tcp.nft_dnat.gbps).  Medians of --runs runs.

TUN offloads (`--only offload`, part of the default): iperf3 TCP,
one stream and 4 parallel streams, in the same lab and the same run,
alternating run by run:

  tcp.kernel_route.gbps       the kernel routing client -> real server
                              (no userlb, no conntrack: the upper bound)
  tcp.userlb_offload.gbps     `userlb run` (default: virtio-net header, TSO/USO)
  tcp.userlb_nooffload.gbps   `userlb run --no-offload`
  tcp4.*.gbps                 the same with 4 parallel streams (iperf3 -P 4)
  udp_gso.*.gbps              bulk UDP sent with UDP_SEGMENT (63000-byte sends of
                              1400-byte segments; USO on the TUN where the kernel
                              has it) to a never-read sink: Gbit/s arriving at the
                              real server's interface
  tcp*.userlb_*.cpu_util      the forwarder's CPU time per second of the run
  tcp.userlb_offload_vs_kernel.ratio   target: >= 0.75
  tcp*.userlb_offload_w2.*    the same with `--workers 2 --sloppy-tcp` (with `w`),
                              and tcp*.userlb_offload_w2_vs_kernel.ratio

plus host.loadavg1 before and after (the machine is shared).  On 2 cores the
single-stream userlb figure depends on where the unpinned iperf3 server lands
(next to the forwarder: ~6 Gbit/s with the forwarder ~50% busy; next to the
client: ~10 Gbit/s); --pin-server puts it on the generator's CPU, so that the
forwarder has CPU 1 to itself (the kernel's forwarding then shares CPU 0 with
both endpoints).  The
forwarder (bare loop or userlb) is pinned to CPU 1 and the generator to
CPU 0 with taskset; the kernel's softirq work lands where it lands.
Also printed: tun.userlb_vs_bare.ratio (target: >= 0.70), and
the forwarder's CPU time per delivered packet (tun.*.cpu_us_per_pkt, from
/proc/PID/stat; includes the kernel work done in its write() calls) with
tun.userlb_vs_bare.cpu_ratio = bare us / userlb us -- the same comparison,
less sensitive to other load on a shared machine.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import emit  # noqa: E402

VIP = "10.21.0.10"      # 0x0a15 + 0x000a == 0x0a14 + 0x000b: same sum as the RIP
RIP = "10.20.0.11"
UDP_PORT = 5000
TCP_PORT = 5201
FWD_CPU, GEN_CPU = "1", "0"
FWD_NICE = 0
SERVER_ON_GEN_CPU = False
WORKER_UTIL = []
#: `userlb run --workers 2` (the bench's TCP service is mh: sloppy TCP is required)
W2 = ["--workers", "2", "--sloppy-tcp"]


# ------------------------------------------------------------- child: bare loop

class BarePatch:
    """An 'engine' that only writes the real server's address over the VIP
    (IPv4 packets to the VIP; everything else is dropped)."""

    def __init__(self, vip, rip):
        import socket

        from userlb.dataplane.tun import V_DROP, V_FORWARD
        self.vip = int.from_bytes(socket.inet_aton(vip), "big")
        self.rip = socket.inet_aton(rip)
        self.out_len = 0
        self.out = b""
        self.V_DROP, self.V_FORWARD = V_DROP, V_FORWARD
        import struct
        self._dst = struct.Struct("!I").unpack_from

    def process(self, buf, n, now):
        if self._dst(buf, 16)[0] == self.vip:
            buf[16:20] = self.rip
            self.out_len = n
            return self.V_FORWARD
        return self.V_DROP

    def expire(self, now):
        pass


class PassHeader:
    """The bare loop behind a virtio-net header: the header goes back unchanged."""

    #: what TunDriver reads of a VnetPath (no header is ever sent to the
    #: engine's fast path directly)
    fast = (b"", 0, False, None)
    offloaded = None

    def __init__(self, engine):
        self.engine = engine

    def process(self, hdr, buf, n, now):
        return self.engine.process(buf, n, now)

    def counters(self):
        return {}


def child_bare(args):
    import asyncio
    import signal

    import uvloop

    from userlb.dataplane.steering import TunRoutes
    from userlb.dataplane.tun import TunDevice, TunDriver
    from userlb.model import parse_addr
    dev = TunDevice(args.tun, offload=args.vnet)
    routes = TunRoutes(dev.name, dev.index, vips=[parse_addr(args.vip)[1]])
    routes.install()
    drv = TunDriver(dev.fd, BarePatch(args.vip, args.rip), vnet=args.vnet)
    if args.vnet:
        # like `userlb run`: offloads, the virtio-net header read and written
        # back as it came (the VIP and the RIP have the same 16-bit sum, so
        # the partial checksum stays right)
        drv.vnet = PassHeader(drv.engine)

    async def run():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        drv.attach(loop)
        print("bare loop ready", file=sys.stderr, flush=True)
        await stop.wait()
        drv.detach()
    try:
        uvloop.run(run())
    finally:
        routes.remove()
        dev.close()
        print(json.dumps(drv.counters()), file=sys.stderr, flush=True)
    return 0


# ------------------------------------------------------------------ measuring

def rx_packets(lab, ns):
    p = lab.exec(ns, ["cat", "/sys/class/net/eth0/statistics/rx_packets"])
    return int(p.stdout)


def cpu_seconds(pid):
    """utime + stime of a process and its live children (`--workers`), seconds."""
    if not pid:
        return 0.0
    return sum(_cpu1(p) for p in [pid] + children(pid))


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _cpu1(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_pps(lab, seconds, pid=None):
    """Flood for seconds+1 s; count what the server received in the middle.
    Returns (delivered pps, offered pps, forwarder CPU microseconds per
    delivered packet or None)."""
    server = lab.servers[0][0]
    gen = subprocess.Popen(["ip", "netns", "exec", lab.client, "taskset", "-c", GEN_CPU,
                            sys.executable, "-m", "userlb.lab.flood", "--dst", VIP,
                            "--port", str(UDP_PORT), "--flows", "16", "--size", "18",
                            "--seconds", str(seconds + 1.5)],
                           stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    time.sleep(0.75)
    kids = children(pid) if pid else []
    w0 = [_cpu1(k) for k in kids]
    r0, t0, c0 = rx_packets(lab, server), time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    r1, t1, c1 = rx_packets(lab, server), time.monotonic(), cpu_seconds(pid)
    if kids:
        # each worker's CPU time per second of the measurement (--workers)
        WORKER_UTIL.append([round((_cpu1(k) - a) / (t1 - t0), 3)
                            for k, a in zip(kids, w0, strict=True)])
    out = gen.communicate(timeout=seconds + 30)[0]
    offered = json.loads(out.strip().splitlines()[-1])["pps"] if out.strip() else 0
    us = (c1 - c0) / (r1 - r0) * 1e6 if pid and r1 > r0 else None
    return (r1 - r0) / (t1 - t0), offered, us


def measure_tcp(lab, seconds, dst=VIP, parallel=1):
    server = lab.servers[0][0]
    pin = ["taskset", "-c", GEN_CPU] if SERVER_ON_GEN_CPU else []
    srv = subprocess.Popen(["ip", "netns", "exec", server] + pin +
                           ["iperf3", "-s", "-1", "-p", str(TCP_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        p = lab.exec(lab.client, ["taskset", "-c", GEN_CPU, "iperf3", "-c", dst,
                                  "-p", str(TCP_PORT), "-t", str(seconds), "-P", str(parallel),
                                  "-J"],
                     timeout=seconds + 30, check=False)
        res = json.loads(p.stdout)
        if "error" in res:
            raise RuntimeError(res["error"])
        return res["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        try:
            srv.wait(timeout=3)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


UDP_GSO_SENDER = r"""
import socket, sys, time
dst, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(17, 103, 1400)          # UDP_SEGMENT: the kernel (or the NIC) segments
    buf = b"u" * (1400 * 45)             # 63000 bytes per send
except OSError:
    buf = b"u" * 1400
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        s.sendto(buf, (dst, port))
    except OSError:
        pass
"""


def rx_bytes(lab, ns):
    p = lab.exec(ns, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"])
    return int(p.stdout)


def measure_udp_gso(lab, seconds, dst=VIP):
    """A bulk UDP transfer sent with UDP_SEGMENT (USO where the path has it)
    to the never-read UDP sink; Gbit/s arriving at the real server's
    interface in the middle of the run."""
    server = lab.servers[0][0]
    gen = subprocess.Popen(["ip", "netns", "exec", lab.client, "taskset", "-c", GEN_CPU,
                            sys.executable, "-c", UDP_GSO_SENDER, dst, str(UDP_PORT),
                            str(seconds + 1.5)])
    try:
        time.sleep(0.75)
        b0, t0 = rx_bytes(lab, server), time.monotonic()
        time.sleep(seconds)
        b1, t1 = rx_bytes(lab, server), time.monotonic()
    finally:
        gen.wait(timeout=seconds + 30)
    return (b1 - b0) * 8 / (t1 - t0) / 1e9


def rules():
    return (f"-A -u {VIP}:{UDP_PORT} -s sh -b sh-port\n"
            f"-a -u {VIP}:{UDP_PORT} -r {RIP}:{UDP_PORT} -m -w 1\n"
            f"-A -t {VIP}:{TCP_PORT} -s mh\n"
            f"-a -t {VIP}:{TCP_PORT} -r {RIP}:{TCP_PORT} -m -w 1\n")


def forwarder(lab, kind, extra=(), cpus=None):
    if kind == "bare":
        argv = (["taskset", "-c", FWD_CPU] if FWD_CPU != "none" else []) + [
                sys.executable, str(HERE / "bench_tun.py"),
                "--child", "bare", "--tun", "ulb0", "--vip", VIP, "--rip", RIP, "--lab", lab.tag]
        argv += list(extra)
        return lab.start("bare", lab.director, argv, ready="ready")
    cpus = cpus or FWD_CPU
    pin = ["taskset", "-c", cpus] if cpus != "none" else []
    if FWD_NICE:
        pin = ["nice", "-n", str(FWD_NICE)] + pin
    argv = pin + lab.director_argv(extra=list(extra))
    return lab.start("director", lab.director, argv, ready="ready", log=lab.director_log)


def median(xs):
    return statistics.median(xs) if xs else 0.0


def main(argv=None):
    global FWD_CPU, FWD_NICE, SERVER_ON_GEN_CPU
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tcp-seconds", type=int, default=5)
    ap.add_argument("--only", default="a,b,c,tcp,offload,w,e")
    ap.add_argument("--fwd-cpu", default=FWD_CPU,
                    help="CPU the forwarder is pinned to (default 1; 'none': not pinned)")
    ap.add_argument("--fwd-nice", type=int, default=0,
                    help="nice value of `userlb run` (default 0; e.g. -10 on a machine "
                         "whose other users keep the forwarder's CPU busy)")
    ap.add_argument("--pin-server", action="store_true",
                    help="pin the iperf3 server to the generator's CPU too (default: not "
                         "pinned; on 2 cores it then lands next to the client or the forwarder)")
    ap.add_argument("--child")
    ap.add_argument("--tun")
    ap.add_argument("--vip")
    ap.add_argument("--rip")
    ap.add_argument("--lab")
    ap.add_argument("--vnet", action="store_true")
    args = ap.parse_args(argv)
    if args.child == "bare":
        return child_bare(args)
    FWD_CPU = args.fwd_cpu
    FWD_NICE = args.fwd_nice
    SERVER_ON_GEN_CPU = args.pin_server
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("bench_tun: needs root and /dev/net/tun; skipped", file=sys.stderr)
        return 0
    from userlb.lab import Lab
    only = set(args.only.split(","))
    res = {}
    lab = Lab(n_servers=1, n_clients=1, director=False, current=False)
    try:
        lab.up()
        lab.write_rules(rules())
        letters = {"bare": "a", "bare_vnet": "e", "userlb": "b", "userlb_nooff": "d",
                   "userlb_w2": "w"}
        order = [k for k in ("bare", "bare_vnet", "userlb", "userlb_nooff", "userlb_w2")
                 if letters[k] in only]
        # alternate the two forwarders run by run (the machine is noisy)
        for run in range(args.runs):
            for kind in order:
                extra = {"userlb_nooff": ["--no-offload"], "userlb_w2": W2,
                         "bare_vnet": ["--vnet"]}.get(kind, ())
                bare = kind.startswith("bare")
                # the two workers get both CPUs (the generator shares CPU 0 with one)
                proc = forwarder(lab, "bare" if bare else "userlb", extra,
                                 cpus="0,1" if kind == "userlb_w2" else None)
                try:
                    pps, offered, us = measure_pps(lab, args.seconds, pid=proc.pid)
                finally:
                    lab.stop("bare" if bare else "director")
                res.setdefault(kind, []).append(pps)
                res.setdefault(kind + "_us", []).append(us)
                print(f"run {run}: {kind}: {pps:,.0f} pps delivered (offered {offered:,.0f}), "
                      f"forwarder CPU {us:.2f} us/packet", file=sys.stderr, flush=True)
        if "tcp" in only and "b" in only:
            forwarder(lab, "userlb")
            try:
                res["tcp_userlb"] = [measure_tcp(lab, args.tcp_seconds)]
            finally:
                lab.stop("director")
        if "offload" in only:
            measure_offloads(lab, args, res)
    finally:
        lab.down()
    if "c" in only:
        if shutil.which("nft") is None:
            print("nft missing (apt-get install nftables): tun.nft_dnat skipped", file=sys.stderr)
        else:
            lab = Lab(n_servers=1, n_clients=1, director=False, current=False)
            try:
                lab.up()
                lab.exec(lab.director, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
                lab.exec(lab.director, ["nft", "-f", "-"], input=(
                    "table ip userlb_bench {\n"
                    " chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
                    f"  ip daddr {VIP} udp dport {UDP_PORT} dnat to {RIP}\n"
                    f"  ip daddr {VIP} tcp dport {TCP_PORT} dnat to {RIP}\n"
                    " }\n}\n"))
                for run in range(args.runs):
                    pps, offered, _us = measure_pps(lab, args.seconds)
                    res.setdefault("nft", []).append(pps)
                    print(f"run {run}: nft: {pps:,.0f} pps delivered (offered {offered:,.0f})",
                          file=sys.stderr, flush=True)
                if "tcp" in only:
                    res["tcp_nft"] = [measure_tcp(lab, args.tcp_seconds)]
            finally:
                lab.down()
    names = {"bare": ("tun.bare_loop.pps", "pps"), "userlb": ("tun.userlb.pps", "pps"),
             "nft": ("tun.nft_dnat.pps", "pps"),
             "userlb_nooff": ("tun.userlb_nooffload.pps", "pps"),
             "userlb_w2": ("tun.userlb_w2.pps", "pps"),
             "bare_vnet": ("tun.bare_loop_vnet.pps", "pps"),
             "tcp_userlb": ("tcp.userlb.gbps", "Gbit/s"),
             "tcp_nft": ("tcp.nft_dnat.gbps", "Gbit/s")}
    for mode in OFFLOAD_MODES:
        names[f"tcp1_{mode}"] = (f"tcp.{mode}.gbps", "Gbit/s")
        names[f"tcp4_{mode}"] = (f"tcp4.{mode}.gbps", "Gbit/s")
        names[f"udp_{mode}"] = (f"udp_gso.{mode}.gbps", "Gbit/s")
    for key, (name, unit) in names.items():
        if key in res:
            v = median(res[key])
            emit(name, round(v, 3 if unit != "pps" else 0), unit,
                 runs=[round(x, 3) for x in res[key]])
    for key, name in (("bare_us", "tun.bare_loop.cpu_us_per_pkt"),
                      ("userlb_us", "tun.userlb.cpu_us_per_pkt"),
                      ("userlb_nooff_us", "tun.userlb_nooffload.cpu_us_per_pkt"),
                      ("userlb_w2_us", "tun.userlb_w2.cpu_us_per_pkt"),
                      ("bare_vnet_us", "tun.bare_loop_vnet.cpu_us_per_pkt")):
        if res.get(key):
            emit(name, round(median(res[key]), 3), "us", runs=[round(x, 3) for x in res[key]])
    if res.get("bare_vnet_us") and res.get("userlb_us"):
        # like for like: both read and write the virtio-net header
        emit("tun.userlb_vs_bare_vnet.cpu_ratio",
             round(median(res["bare_vnet_us"]) / median(res["userlb_us"]), 3), "ratio")
    if WORKER_UTIL:
        # per run: each worker's CPU seconds per second (both busy = the kernel spread the flows)
        emit("tun.userlb_w2.worker_cpu_util", WORKER_UTIL[len(WORKER_UTIL) // 2], "cpu",
             runs=WORKER_UTIL)
    if res.get("bare") and res.get("userlb"):
        emit("tun.userlb_vs_bare.ratio", round(median(res["userlb"]) / median(res["bare"]), 3),
             "ratio")
    if res.get("bare_us") and res.get("userlb_us"):
        # the same comparison from CPU cost (less sensitive to a busy machine)
        emit("tun.userlb_vs_bare.cpu_ratio",
             round(median(res["bare_us"]) / median(res["userlb_us"]), 3), "ratio")
    for p, w in (("1", ""), ("4", ""), ("1", "_w2"), ("4", "_w2")):
        k, u = res.get(f"tcp{p}_kernel_route"), res.get(f"tcp{p}_userlb_offload{w}")
        if k and u:
            # ratio of the medians, and the median of the per-run ratios
            # (each run measures both back to back: less sensitive to load swings)
            paired = [a / b for a, b in zip(u, k, strict=False) if b]
            emit(f"tcp{'' if p == '1' else p}.userlb_offload{w}_vs_kernel.ratio",
                 round(median(u) / median(k), 3), "ratio",
                 paired_median=round(median(paired), 3), runs=[round(x, 3) for x in paired])
    for mode in OFFLOAD_MODES[1:]:
        for p in ("1", "4"):
            xs = res.get(f"tcp{p}_{mode}_cpu")
            if xs:
                # the forwarder's CPU time (user + system, incl. the kernel work
                # done in its read/write calls) per second of the iperf3 run
                emit(f"tcp{'' if p == '1' else p}.{mode}.cpu_util", round(median(xs), 3),
                     "cpu", runs=[round(x, 3) for x in xs])
    if res.get("load"):
        emit("host.loadavg1", round(median(res["load"]), 2), "load",
             runs=[round(x, 2) for x in res["load"]])
    return 0


OFFLOAD_MODES = ("kernel_route", "userlb_offload", "userlb_nooffload", "userlb_offload_w2")
#: the extra `userlb run` options of each mode
MODE_ARGS = {"userlb_offload": [], "userlb_nooffload": ["--no-offload"], "userlb_offload_w2": W2}


def measure_offloads(lab, args, res):
    """TCP throughput, 1 and 4 streams: kernel routing to the real server
    itself, userlb with and without offloads; alternated run by run."""
    res.setdefault("load", []).append(os.getloadavg()[0])
    modes = [m for m in OFFLOAD_MODES if not m.endswith("_w2") or "w" in args.only.split(",")]
    for run in range(args.runs):
        for mode in modes:
            pid = None
            if mode != "kernel_route":
                pid = forwarder(lab, "userlb", MODE_ARGS[mode],
                                cpus="0,1" if mode.endswith("_w2") else None).pid
            try:
                dst = RIP if mode == "kernel_route" else VIP
                for p in (1, 4):
                    c0, t0 = cpu_seconds(pid), time.monotonic()
                    g = measure_tcp(lab, args.tcp_seconds, dst=dst, parallel=p)
                    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
                    res.setdefault(f"tcp{p}_{mode}", []).append(g)
                    if pid:
                        res.setdefault(f"tcp{p}_{mode}_cpu", []).append(cpu)
                    print(f"run {run}: {mode}: {p} stream(s): {g:.2f} Gbit/s "
                          + (f"(userlb CPU {cpu:.0%}) " if pid else "")
                          + f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                g = measure_udp_gso(lab, args.tcp_seconds, dst=dst)
                res.setdefault(f"udp_{mode}", []).append(g)
                print(f"run {run}: {mode}: UDP with UDP_SEGMENT: {g:.2f} Gbit/s",
                      file=sys.stderr, flush=True)
            finally:
                if mode != "kernel_route":
                    lab.stop("director")
    res["load"].append(os.getloadavg()[0])


if __name__ == "__main__":
    sys.exit(main())
