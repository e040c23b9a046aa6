"""Soak: a lab director under mixed traffic and constant change (docs/soak.md).

    python -m userlb.lab.soak --minutes N [--reload-every S] [--close fin|rst|mix]
                              [--rate R] [--json FILE]
    (`make soak MINUTES=N`; needs root)

For N minutes, in a lab of its own (3 real servers, one director):

* traffic from the client namespace (`traffic`, run there): new TCP echo
  connections and new UDP echo flows over IPv4 and IPv6, each checked
  (payload back intact, the real server saw the client's own address and
  port), plus long-lived TCP streams (two per family) that carry checked data
  every half second for the whole run;
* a live change every second over the control socket (weights of the real
  servers, never all 0; a spare service added, filled and deleted), and
  every `--reload-every` seconds (60) a new rules file with other weights
  and SIGHUP;
* the director's RSS sampled every 5 s.

Short timeouts (`--set 20 5 5` in the rules file) let every entry expire soon
after the traffic ends; each client flow uses a source port of its own that
is not used again for far longer than any timeout, so one flow is one
connection at the director.  Then the checks:

* broken: no client flow failed, no stream broke;
* RSS growth after warm-up (the first fifth, at most 180 s) below 5 MB;
* entries back to 0 after the timeouts;
* counters: per real server, the connections of `-L -n --stats --exact`
  (all services summed) equal the flows the clients saw that server answer;
  each service's total equals the sum of its real servers';
* no error line in the director's log.

Exit status 0 when every check passes, 1 otherwise; the figures as JSON
(`--json FILE`) and a summary on stdout.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time

from .base import ECHO, UDP_ECHO, VIP4, VIP6, LabError, endpoint

# ipvsadm --set tcp tcpfin udp for the soak
TIMEOUTS = (20, 5, 5)
# how long entries may take to go after the traffic: the longest state
# timeout reachable (TIME_WAIT 120 s with FIN closes; CLOSE 10 s with RST)
DRAIN = {"fin": 130.0, "rst": 25.0, "mix": 130.0}
SPARE_PORT = 7001
RSS_LIMIT_KB = 5 * 1024
# RSS is compared from the end of the warm-up on: the first fifth of the run,
# at most 180 s (by then the entry table is in its steady state: the longest
# timeout, TIME_WAIT, is 120 s)
WARMUP = 180.0
ERROR_WORDS = re.compile(r"error|traceback|exception|refused|cannot|warning", re.I)


# --------------------------------------------------------------------- traffic
# (runs inside the client namespace: python -m userlb.lab.soak --traffic JSON)

class _Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.fail = {}
        self.servers = {}
        self.errors = []

    def good(self, kind, server, fam):
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + 1
            key = f"{server}/{fam}"
            self.servers[key] = self.servers.get(key, 0) + 1

    def bad(self, kind, why):
        with self.lock:
            self.fail[kind] = self.fail.get(kind, 0) + 1
            if len(self.errors) < 20:
                self.errors.append(f"{kind}: {why}")


def _ports(lo=10000, hi=31999):
    """Source ports in order (a port comes back after hi-lo flows)."""
    p = lo
    while True:
        yield p
        p = lo if p >= hi else p + 1


def _greeting(line, src, sport):
    """'NAME ADDR PORT' of an echo server -> NAME, if it saw src:sport."""
    name, addr, port = line.decode().split()
    if addr != src or int(port) != sport:
        raise ValueError(f"the server saw {addr}:{port}, not {src}:{sport}")
    return name


def _recv_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise ConnectionError("closed before the greeting")
        buf += c
    return buf[:-1]


def _recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        c = s.recv(n - len(out))
        if not c:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += c
    return bytes(out)


def _tcp_flow(src, vip, sport, rng, close):
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(5.0)
        s.bind((src, sport))
        s.connect((vip, ECHO))
        name = _greeting(_recv_line(s), src, sport)
        data = rng.randbytes(rng.randint(1, 8192))
        s.sendall(data)
        if _recv_exact(s, len(data)) != data:
            raise ValueError("echo differs")
        if close == "rst" or (close == "mix" and sport & 1):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return name
    finally:
        s.close()


def _udp_flow(src, vip, sport, rng):
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.settimeout(3.0)
        s.bind((src, sport))
        data = rng.randbytes(rng.randint(1, 1200))
        s.sendto(data, (vip, UDP_ECHO))
        got = s.recv(4096)
        head, _, body = got.partition(b"\n")
        name = _greeting(head, src, sport)
        if body != data:
            raise ValueError("echo differs")
        return name
    finally:
        s.close()


def _flows(kind, src, vip, end, interval, tally, close, seed):
    rng = random.Random(seed)
    fam = 6 if ":" in vip else 4
    ports = _ports()
    while time.monotonic() < end:
        sport = next(ports)
        try:
            if kind.startswith("tcp"):
                name = _tcp_flow(src, vip, sport, rng, close)
            else:
                name = _udp_flow(src, vip, sport, rng)
            tally.good(kind, name, fam)
        except (OSError, ValueError) as e:
            tally.bad(kind, f"{src}:{sport}: {e!r}")
        time.sleep(interval)


def _streams(pairs, end, tally, close):
    """Long-lived TCP echo connections: 256 checked bytes each, every 0.5 s."""
    rng = random.Random(7)
    live = []
    broken = []
    for src, vip in pairs:
        fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(5.0)
            s.bind((src, 0))
            s.connect((vip, ECHO))
            name = _greeting(_recv_line(s), src, s.getsockname()[1])
        except (OSError, ValueError) as e:
            broken.append(f"{src} -> {vip}: could not start: {e!r}")
            s.close()
            continue
        live.append((s, name, 6 if ":" in vip else 4))
    rounds = 0
    while time.monotonic() < end and live:
        for item in list(live):
            s, name, fam = item
            data = rng.randbytes(256)
            try:
                s.sendall(data)
                if _recv_exact(s, 256) != data:
                    raise ValueError("echo differs")
            except (OSError, ValueError) as e:
                broken.append(f"{name}/{fam}: {e!r}")
                live.remove(item)
                s.close()
        rounds += 1
        time.sleep(0.5)
    for s, name, fam in live:
        if close != "fin":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        tally.good("stream", name, fam)
    tally.streams = {"count": len(pairs), "rounds": rounds, "broken": broken}


def traffic(seconds, src4, src6, interval=0.05, close="mix"):
    """Run the soak's client side for `seconds`; the tallies (a dict)."""
    tally = _Tally()
    tally.streams = {}
    end = time.monotonic() + seconds
    jobs = [("tcp4", src4, VIP4), ("tcp6", src6, VIP6), ("udp4", src4, VIP4),
            ("udp6", src6, VIP6)]
    threads = [threading.Thread(target=_flows, args=(k, s, v, end, interval, tally, close, i))
               for i, (k, s, v) in enumerate(jobs)]
    threads.append(threading.Thread(target=_streams, args=(
        [(src4, VIP4), (src4, VIP4), (src6, VIP6), (src6, VIP6)], end, tally, close)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"ok": tally.ok, "fail": tally.fail, "servers": tally.servers,
            "errors": tally.errors, "streams": tally.streams}


# ---------------------------------------------------------------- the director

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LabError(f"no VmRSS for pid {pid}")


def _weights(rng, n):
    """n weights in 0..3, never all 0."""
    w = [rng.randint(0, 3) for _ in range(n)]
    if not any(w):
        w[rng.randrange(n)] = 1
    return w


class Soak:
    """One soak run on a lab (Lab, up, director started by `run`)."""

    def __init__(self, lab, seconds, reload_every=60.0, close="mix", interval=0.05,
                 seed=1, out=print):
        self.lab, self.seconds, self.reload_every = lab, seconds, reload_every
        self.close, self.interval = close, interval
        self.rng = random.Random(seed)
        self.out = out
        self.rss = []                   # (t, kB)
        self.changes = self.reloads = 0
        self.change_errors = []
        self.spare = False

    # -- rules and changes
    def rules(self, weights=None):
        t = TIMEOUTS
        return f"--set {t[0]} {t[1]} {t[2]}\n" + self.lab.rules_text(weights=weights)

    def request(self, argv):
        r = self.lab.control_request({"argv": argv})
        if not r.get("ok"):
            self.change_errors.append(f"{' '.join(argv)}: {r.get('error')}")
        self.changes += 1
        return r

    def one_change(self):
        """A live change: a weight of one real server of one service, or the
        spare service's life (add, add a real server, delete)."""
        lab = self.lab
        k = self.rng.randrange(4)
        if k == 0:
            vip = self.rng.choice([VIP4, VIP6])
            svc = endpoint(vip, SPARE_PORT)
            if not self.spare:
                self.request(["-A", "-t", svc, "-s", "wrr"])
                addr = lab.servers[0][2 if ":" in vip else 1]
                self.request(["-a", "-t", svc, "-r", endpoint(addr, SPARE_PORT), "-m"])
                self.spare = svc
            else:
                self.request(["-D", "-t", self.spare])
                self.spare = False
            return
        proto = self.rng.choice(["-t", "-u"])
        vip = self.rng.choice([VIP4, VIP6])
        port = ECHO if proto == "-t" else UDP_ECHO
        i = self.rng.randrange(len(lab.servers))
        addr = lab.servers[i][2 if ":" in vip else 1]
        listing = lab.control_request({"argv": ["-L", "-n", proto, endpoint(vip, port)]})
        weights = {ln.split()[1]: int(ln.split()[3]) for ln in listing["output"].splitlines()
                   if ln.strip().startswith("->") and ln.split()[1] != "RemoteAddress:Port"}
        target = endpoint(addr, port)
        w = self.rng.randint(0, 3)
        if w == 0 and all(v == 0 for a, v in weights.items() if a != target):
            w = 1
        self.request(["-e", proto, endpoint(vip, port), "-r", target, "-m", "-w", str(w)])

    def reload(self):
        text = self.rules(_weights(self.rng, len(self.lab.servers)))
        self.lab.reload(text)
        self.spare = False              # not in the file: the reload removed it
        self.reloads += 1

    # -- the run
    def run(self):
        import subprocess

        from .processes import child_env
        lab = self.lab
        pid = lab.director_pid()
        args = {"seconds": self.seconds, "src4": lab.clients4[0], "src6": lab.clients6[0],
                "interval": self.interval, "close": self.close}
        p = subprocess.Popen(["ip", "netns", "exec", lab.client, sys.executable, "-m",
                              "userlb.lab.soak", "--traffic", json.dumps(args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env())
        try:
            t0 = self._drive(p, pid)
            out, err = p.communicate(timeout=self.seconds + 60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode:
            raise LabError(f"soak traffic exited with {p.returncode}: {err.strip()}")
        self.traffic = json.loads(out)
        self.rss.append((round(time.monotonic() - t0, 1), rss_kb(pid)))
        # entries back to 0 (after the longest timeout the traffic can leave)
        deadline = time.monotonic() + DRAIN[self.close]
        entries = None
        while time.monotonic() < deadline:
            entries = _entries(lab)
            if entries == 0:
                break
            time.sleep(1.0)
        self.drain_s = round(time.monotonic() - (t0 + self.seconds), 1)
        self.entries_left = entries
        self.rss.append((round(time.monotonic() - t0, 1), rss_kb(pid)))
        self.stats = lab.control_request({"argv": ["-L", "-n", "--stats", "--exact"]})["output"]
        with open(lab.director_log) as f:
            log = f.read()
        ready = log.rfind("ready:")
        self.error_lines = [ln for ln in log[ready:].splitlines() if ERROR_WORDS.search(ln)]
        return self.report()

    def _drive(self, p, pid):
        """Changes, reloads and RSS samples until the traffic's time is up;
        the start time."""
        t0 = time.monotonic()
        next_rss = next_change = t0
        next_reload = t0 + self.reload_every
        end = t0 + self.seconds
        while time.monotonic() < end and p.poll() is None:
            now = time.monotonic()
            if now >= next_rss:
                self.rss.append((round(now - t0, 1), rss_kb(pid)))
                next_rss += 5.0
            if now >= next_reload:
                self.reload()
                next_reload += self.reload_every
            elif now >= next_change:
                self.one_change()
                next_change += 1.0
            time.sleep(max(0.0, min(next_change, next_rss, next_reload, end)
                           - time.monotonic()))
        return t0

    def report(self):
        t = self.traffic
        warm = min(WARMUP, self.seconds / 5)
        base = [kb for s, kb in self.rss if s >= warm]
        growth = (max(base) - base[0]) if base else 0
        seen, per_svc_ok = _director_conns(self.stats)
        # the client's tally by real-server address (s1/4 -> 10.20.0.11)
        want = {}
        for i, (_ns, a4, a6) in enumerate(self.lab.servers, 1):
            want[a4] = t["servers"].get(f"s{i}/4", 0)
            want[a6] = t["servers"].get(f"s{i}/6", 0)
        flows = sum(t["ok"].values())
        failed = sum(t["fail"].values())
        broken = len(t["streams"].get("broken", [])) + failed
        checks = {
            "broken": broken == 0,
            "rss_growth": growth < RSS_LIMIT_KB,
            "entries_back_to_0": self.entries_left == 0,
            "counters": seen == want and per_svc_ok and sum(seen.values()) == flows,
            "no_error_lines": not self.error_lines and not self.change_errors,
        }
        rep = {"seconds": self.seconds, "flows": flows, "by_kind": t["ok"], "failed": t["fail"],
               "errors": t["errors"][:10], "streams": t["streams"],
               "changes": self.changes, "reloads": self.reloads,
               "change_errors": self.change_errors[:10],
               "rss_kb": self.rss, "warmup_s": warm, "rss_growth_kb": growth,
               "drain_s": self.drain_s, "entries_left": self.entries_left,
               "director_conns": seen, "client_flows": want,
               "error_lines": self.error_lines[:10], "checks": checks,
               "passed": all(checks.values())}
        return rep


def _entries(lab):
    out = lab.control_request({"settings": {}})["output"]
    m = re.search(r"conn_entries = (\d+)", out)
    return int(m.group(1)) if m else None


def _director_conns(stats):
    """-L -n --stats --exact -> ({real-server address: connections, all
    services}, whether every service's total equals its real servers' sum)."""
    per = {}
    ok = True
    svc_total = None
    svc_sum = 0
    for ln in stats.splitlines():
        w = ln.split()
        if w and w[0] in ("TCP", "UDP", "SCTP"):
            if svc_total is not None and svc_total != svc_sum:
                ok = False
            svc_total, svc_sum = int(w[2]), 0
        elif w and w[0] == "->" and w[1] != "RemoteAddress:Port":
            addr = w[1].rsplit(":", 1)[0].strip("[]")
            per[addr] = per.get(addr, 0) + int(w[2])
            svc_sum += int(w[2])
    if svc_total is not None and svc_total != svc_sum:
        ok = False
    return per, ok


def summary(rep):
    c = rep["checks"]
    rss = [kb for _s, kb in rep["rss_kb"]]
    lines = [
        f"soak: {rep['seconds']:.0f} s, {rep['flows']} flows "
        + " ".join(f"{k}={v}" for k, v in sorted(rep["by_kind"].items()))
        + f", {rep['changes']} live changes, {rep['reloads']} reloads",
        f"  broken: {sum(rep['failed'].values())} failed flows, "
        f"{len(rep['streams'].get('broken', []))} broken streams of "
        f"{rep['streams'].get('count', 0)} ({rep['streams'].get('rounds', 0)} rounds)"
        f"  [{'ok' if c['broken'] else 'FAIL'}]",
        f"  RSS: {rss[0] / 1024:.1f} -> {rss[-1] / 1024:.1f} MB, growth after "
        f"{rep['warmup_s']:.0f} s warm-up {rep['rss_growth_kb'] / 1024:.2f} MB"
        f"  [{'ok' if c['rss_growth'] else 'FAIL'}]",
        f"  entries: {rep['entries_left']} left {rep['drain_s']} s after the traffic"
        f"  [{'ok' if c['entries_back_to_0'] else 'FAIL'}]",
        f"  counters: director {sum(rep['director_conns'].values())} connections, "
        f"clients {sum(rep['client_flows'].values())} flows"
        f"  [{'ok' if c['counters'] else 'FAIL'}]",
        f"  error lines: {len(rep['error_lines'])}, refused changes: "
        f"{len(rep['change_errors'])}  [{'ok' if c['no_error_lines'] else 'FAIL'}]",
    ]
    for e in rep["errors"] + rep["error_lines"] + rep["change_errors"]:
        lines.append(f"    {e}")
    return "\n".join(lines)


def soak(minutes, reload_every=60.0, close="mix", interval=0.05, out=print):
    """Bring a lab up, soak it, take it down; the report (dict)."""
    from .core import Lab
    lab = Lab(n_servers=3, n_clients=2, director=False, current=False)
    lab.up()
    try:
        s = Soak(lab, minutes * 60.0, reload_every=reload_every, close=close,
                 interval=interval, out=out)
        lab.write_rules(s.rules())
        lab.start_director()
        return s.run()
    finally:
        lab.down()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m userlb.lab.soak",
                                 description="soak a lab director (docs/soak.md)")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--reload-every", type=float, default=60.0, metavar="S")
    ap.add_argument("--close", choices=("fin", "rst", "mix"), default="mix",
                    help="how client TCP connections end (FIN, RST, alternately)")
    ap.add_argument("--interval", type=float, default=0.05, metavar="S",
                    help="pause between two new flows of one kind (default 0.05)")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    ap.add_argument("--traffic", metavar="JSON", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.traffic:
        print(json.dumps(traffic(**json.loads(a.traffic))))
        return 0
    # SIGTERM ends the run through `finally` (traffic stopped, lab removed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces, /dev/net/tun)", file=sys.stderr)
        return 2
    try:
        rep = soak(a.minutes, reload_every=a.reload_every, close=a.close, interval=a.interval)
    except LabError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 1
    print(summary(rep))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1)
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
