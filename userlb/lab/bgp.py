"""The ECMP lab with BGP (`userlb lab up --directors K --bgp`): the router's
routes to the VIPs come from BGP, as in production.

    router ns   BIRD 2 (bird -f -c bird.conf -s bird.ctl): one eBGP session per
                director and family (AS 65000 <- AS 65001), hold time 3 s,
                keepalive 1 s; its kernel protocols write the routes with
                `merge paths` (one multipath route over the directors that
                announce a prefix) -- the VIPs into the main table, the
                routes tagged with the community REPLY_COMMUNITY (the client
                networks, for the real servers' replies) into
                ROUTER_REPLY_TABLE.  The 5-tuple hash is the ECMP lab's
                (topology.ROUTER_SYSCTLS).
    director K  ExaBGP (exabgp CONF) with one API process, `userlb announce`
                on that director's control socket and TUN device (looks every
                ANNOUNCE_INTERVAL s, rise/fall ANNOUNCE_RISE/ANNOUNCE_FALL); it
                announces each VIP with next hop self and, with the community,
                the client networks (`--also`).

No lab code writes a route on the router: `kill_director(K)` stops that
director's `userlb run` only (its ExaBGP and `userlb announce` go on, as the
BGP speaker of a production director does), `userlb announce` sees it gone
and withdraws, BIRD takes the next hop out.  `revive_director(K)` starts
`userlb run` again and the routes come back the same way.  No BFD: ExaBGP
does not speak it (docs/scale-out.md).
"""
import os
import shutil
import sys
import time

from .base import CLIENT_NET4, CLIENT_NET6, ROUTER_REPLY_TABLE, TUN, LabError, link4, link6, sh

ROUTER_AS, DIRECTOR_AS = 65000, 65001
REPLY_COMMUNITY = (65000, 200)
ANNOUNCE_INTERVAL, ANNOUNCE_RISE, ANNOUNCE_FALL = 0.5, 2, 2
HOLD_TIME = 3
CLIENT_PREFIXES = (f"{CLIENT_NET4}.0/24", f"{CLIENT_NET6}/64")


def director_guard(dev="up0"):
    """`ip` lines for a director namespace: what arrives from the router and
    is not for the TUN device (a VIP, a real server's reply) is dropped, not
    sent back by the default route.  Without it, between the death of
    `userlb run` and the withdrawal, the director would forward the real
    servers' replies untranslated to the clients, whose kernels answer with
    a reset that kills the connection at the real server."""
    lines = []
    for fam in ("", "-6 "):
        lines += [f"{fam}rule add iif {dev} lookup main suppress_prefixlength 0 pref 32000",
                  f"{fam}rule add iif {dev} blackhole pref 32001"]
    return lines


def need_programs():
    missing = [p for p in ("bird", "birdc", "exabgp") if shutil.which(p) is None]
    if missing:
        raise LabError(f"--bgp needs {', '.join(missing)}: apt-get install bird2 exabgp")


def bird_conf(lab):
    """The router's bird.conf."""
    c = f"({REPLY_COMMUNITY[0]}, {REPLY_COMMUNITY[1]})"
    out = [f'# userlb lab {lab.tag}: the ECMP router (BIRD 2)',
           f'log "{lab.dir}/bird.log" all;',
           "router id 10.10.0.1;",
           "protocol device { scan time 10; }",
           "ipv4 table reply4;", "ipv6 table reply6;"]
    for fam in ("4", "6"):
        ip = f"ipv{fam}"
        out += ["# VIPs: the main table, one multipath route per prefix",
                f"protocol kernel vips{fam} {{",
                f"    {ip} {{ import none; export where !({c} ~ bgp_community); }};",
                "    merge paths on;", "}",
                f"# the client networks (community {c}): table {ROUTER_REPLY_TABLE}, "
                f"for the replies (rule iif br0)",
                f"protocol pipe replies{fam} {{ table master{fam}; peer table reply{fam}; "
                f"import none; export where {c} ~ bgp_community; }}",
                f"protocol kernel replies{fam}k {{",
                f"    kernel table {ROUTER_REPLY_TABLE};",
                f"    {ip} {{ table reply{fam}; import none; export all; }};",
                "    merge paths on;", "}"]
    out += ["template bgp director {",
            f"    local as {ROUTER_AS};",
            f"    hold time {HOLD_TIME}; keepalive time 1; connect retry time 1;",
            "    error wait time 1, 5;",
            "}"]
    for k in range(1, lab.n_directors + 1):
        (r4, d4), (r6, d6) = link4(k), link6(k)
        out += [f"protocol bgp d{k}v4 from director {{",
                f"    local {r4} as {ROUTER_AS}; neighbor {d4} as {DIRECTOR_AS};",
                "    ipv4 { import all; export none; };", "}",
                f"protocol bgp d{k}v6 from director {{",
                f"    local {r6} as {ROUTER_AS}; neighbor {d6} as {DIRECTOR_AS};",
                "    ipv6 { import all; export none; };", "}"]
    return "\n".join(out) + "\n"


def announce_argv(lab, k):
    """The `userlb announce` command of director k."""
    argv = [sys.executable, "-m", "userlb.cli.main", "announce",
            "--control", lab.control_of(k), "--tun", TUN,
            "--interval", str(ANNOUNCE_INTERVAL), "--rise", str(ANNOUNCE_RISE),
            "--fall", str(ANNOUNCE_FALL)]
    comm = f"{REPLY_COMMUNITY[0]}:{REPLY_COMMUNITY[1]}"
    for p in CLIENT_PREFIXES:
        argv += ["--also", p, "--community", f"{p}={comm}"]
    return argv


def exabgp_conf(lab, k, script):
    (r4, d4), (r6, d6) = link4(k), link6(k)
    out = [f"# userlb lab {lab.tag}: director {k}'s BGP speaker (ExaBGP 4)",
           "process announce {", f"    run {script};", "    encoder text;", "}"]
    for peer, local, fam in ((r4, d4, "ipv4"), (r6, d6, "ipv6")):
        out += [f"neighbor {peer} {{", f"    router-id {d4};", f"    local-address {local};",
                f"    local-as {DIRECTOR_AS};", f"    peer-as {ROUTER_AS};",
                f"    hold-time {HOLD_TIME};",
                f"    family {{ {fam} unicast; }}",
                "    api { processes [ announce ]; }", "}"]
    return "\n".join(out) + "\n"


EXABGP_ENV = {"exabgp_daemon_user": "root", "exabgp_daemon_daemonize": "false",
              "exabgp_api_cli": "false", "exabgp_log_destination": "stdout",
              "exabgp_api_ack": "true", "exabgp_tcp_bind": ""}


class Bgp:
    """BGP in the ECMP lab (mixed into Lab: uses dir, router, director_ns,
    n_directors, start(), stop(), ours(), pids)."""

    @property
    def bird_ctl(self):
        return str(self.dir / "bird.ctl")

    def start_bgp(self, timeout=20):
        """BIRD on the router, ExaBGP + `userlb announce` on every director;
        wait until every director's VIPs are in BIRD's table."""
        need_programs()
        conf = self.dir / "bird.conf"
        conf.write_text(bird_conf(self))
        self.start("bird", self.router, ["bird", "-f", "-c", str(conf), "-s", self.bird_ctl,
                                         "-P", str(self.dir / "bird.pid")])
        from .processes import wait_for
        wait_for(lambda: os.path.exists(self.bird_ctl) and self.birdc("show status",
                                                                      check=False),
                 10, "BIRD did not start (see bird.log)")
        for k in range(1, self.n_directors + 1):
            self.start_exabgp(k)
        want = set(range(1, self.n_directors + 1))
        wait_for(lambda: all(self.bgp_nexthops(p) == want for p in self.vip_prefixes()),
                 timeout, lambda: "the directors' VIPs did not reach the router:\n"
                 + self.birdc("show protocols") + self.birdc("show route"))

    def start_exabgp(self, k):
        script = self.dir / f"announce-{k}.sh"
        script.write_text(f"#!/bin/sh\n# userlb announce of director {k}, run by ExaBGP\n"
                          f"exec {' '.join(announce_argv(self, k))}\n")
        os.chmod(script, 0o755)
        conf = self.dir / f"exabgp-{k}.conf"
        conf.write_text(exabgp_conf(self, k, script))
        env = dict(EXABGP_ENV, exabgp_daemon_pid=str(self.dir / f"exabgp-{k}.pid"))
        return self.start(f"exabgp{k}", self.director_ns[k - 1],
                          ["env"] + [f"{n}={v}" for n, v in env.items()]
                          + ["exabgp", str(conf)], log=str(self.dir / f"exabgp-{k}.log"))

    def announce_pid(self, k):
        """The PID of director k's `userlb announce` (ExaBGP's child), or None."""
        pid = self.pids.get(f"exabgp{k}")
        if not pid:
            return None
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if b"announce" in cmd and self.control_of(k).encode() in cmd:
                return int(d)
        return None

    # ------------------------------------------------------------ the router's view
    def birdc(self, command, check=True):
        """`birdc -s bird.ctl COMMAND` in the router namespace: its output."""
        p = sh(["ip", "netns", "exec", self.router, "birdc", "-s", self.bird_ctl]
               + command.split(), check=check, timeout=10)
        return p.stdout if p.returncode == 0 else ""

    def vip_prefixes(self):
        from .base import VIP4, VIP6
        return [f"{VIP4}/32", f"{VIP6}/128"]

    def bgp_routes(self, table=None):
        """BIRD's routes: {prefix: {director k of each path}} (all tables, or one)."""
        text = self.birdc("show route" + (f" table {table}" if table else ""), check=False)
        return parse_birdc_routes(text, self._hop_to_director())

    def bgp_nexthops(self, prefix):
        return self.bgp_routes().get(prefix, set())

    def _hop_to_director(self):
        out = {}
        for k in range(1, self.n_directors + 1):
            out[link4(k)[1]] = k
            out[link6(k)[1]] = k
        return out


def parse_birdc_routes(text, hop_to_director):
    """`birdc show route` text -> {prefix: {director numbers of its paths}}.

        Table master4:
        10.99.0.1/32         unicast [d1v4 20:00:01.123] * (100) [AS65001i]
                via 10.30.1.2 on d1
                             unicast [d2v4 20:00:01.456] (100) [AS65001i]
                via 10.30.2.2 on d2
    """
    out = {}
    cur = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        words = line.split()
        if not line[0].isspace():
            cur = words[0]
            out.setdefault(cur, set())
        elif words[0] == "via" and cur is not None:
            k = hop_to_director.get(words[1])
            out[cur].add(k if k is not None else words[1])
    return out


def wait_routes(lab, prefix, want, timeout, poll=0.05):
    """Poll BIRD until prefix's paths are the directors `want` (a set);
    the seconds it took.  LabError after timeout."""
    t0 = time.monotonic()
    while True:
        if lab.bgp_nexthops(prefix) == set(want):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise LabError(f"{prefix}: paths {sorted(lab.bgp_nexthops(prefix), key=str)}, "
                           f"wanted {sorted(want)} after {timeout}s")
        time.sleep(poll)


# ------------------------------------------------------------ failover, demo

def failover(lab, vip_ports, k, count=30, before=1.0, after=1.5, hard=True, timeout=3.0,
             chunk=1024, interval=0.05):
    """Stream on `count` connections, stop director k's `userlb run` (SIGKILL
    with hard=True) and measure, by polling BIRD, when its paths to the VIPs
    are gone; then finish the streams.  -> {"flows", "carriers" (before),
    "withdrawn" {prefix: seconds from the kill}, "final", "table_before",
    "table_after", "victim_stats" (director k's `-L -n --stats` before the
    kill)}."""
    from .ecmp import carriers
    from .sessions import Streams
    left = set(lab.running_directors()) - {k}
    with Streams(lab, vip_ports, count=count, chunk=chunk, interval=interval,
                 timeout=20.0) as st:
        time.sleep(before)
        carried = carriers(lab, st.flows)
        table_before = lab.birdc("show route")
        victim = lab.adm("-L", "-n", "--stats", k=k).stdout
        t0 = time.monotonic()
        lab.kill_director(k, hard=hard)
        withdrawn = {}
        pending = set(lab.vip_prefixes())
        while pending and time.monotonic() - t0 < timeout + 2:
            routes = lab.bgp_routes()
            for p in list(pending):
                if routes.get(p, set()) == left:
                    withdrawn[p] = time.monotonic() - t0
                    pending.discard(p)
            time.sleep(0.02)
        table_after = lab.birdc("show route")
        time.sleep(after)
        final = st.finish()
    return {"flows": st.flows, "carriers": carried, "withdrawn": withdrawn, "final": final,
            "table_before": table_before, "table_after": table_after,
            "victim_stats": victim}


def vip_table(lab):
    """The router's BGP routes to the VIPs, one line per path (for humans)."""
    routes = lab.bgp_routes()
    out = []
    for p in lab.vip_prefixes():
        ks = sorted(routes.get(p, set()), key=str)
        out.append(f"    {p:<16} via " + (", ".join(f"director {x}" for x in ks) or "nothing"))
    kern = lab.exec(lab.router, ["ip", "route", "show", lab.vip_prefixes()[0].split("/")[0]])
    out += ["    kernel: " + line.strip() for line in kern.stdout.splitlines()]
    return "\n".join(out)


def demo(lab, connections=30, out=sys.stdout, k=None):
    """The BGP failover, live: `connections` streaming TCP connections (mh,
    sloppy TCP on), kill -9 of one director's `userlb run`, the router's
    table before and after, then the director started again.  True when no
    connection was lost."""
    from .base import ECHO, VIP4, VIP6

    def p(*a):
        print(*a, file=out, flush=True)
    k = k or lab.n_directors
    res = lab.adm_all("--sloppy-tcp", "on")
    if any(r.returncode for r in res.values()):
        raise LabError("cannot switch sloppy TCP on")
    p(f"BGP failover demo: {lab.n_directors} directors, each with ExaBGP + `userlb announce`, "
      f"behind a BIRD 2 router with ECMP (merge paths, 5-tuple hash)")
    p("the router's routes to the VIPs before (birdc show route):")
    p(vip_table(lab))
    p(f"{connections} TCP connections stream checked data to {VIP4}:{ECHO} and "
      f"[{VIP6}]:{ECHO} (mh, sloppy TCP); now kill -9 of director {k}'s `userlb run` ...")
    r = failover(lab, [[VIP4, ECHO], [VIP6, ECHO]], k, count=connections)
    on_k = sum(1 for c in r["carriers"] if k in c)
    for pfx in lab.vip_prefixes():
        w = r["withdrawn"].get(pfx)
        p(f"  {pfx}: director {k} withdrawn by BGP "
          + (f"{w:.2f} s after the kill" if w is not None else "NOT within the time allowed"))
    p("the router's routes after:")
    p(vip_table(lab))
    final = r["final"]
    lost = [f for f in final if not (f["intact"] and f["done"])]
    p(f"  {connections - len(lost)}/{connections} connections completed with their data "
      f"intact ({on_k} had their entry on director {k}), lost: {len(lost)}")
    for f in lost[:5]:
        p(f"    LOST {f['client']}:{f['cport']} -> {f['server']}: {f['error']}")
    t0 = time.monotonic()
    lab.revive_director(k)
    back = wait_routes(lab, lab.vip_prefixes()[0], set(range(1, lab.n_directors + 1)), 15)
    p(f"director {k} started again: announced again {time.monotonic() - t0:.2f} s after its "
      f"start ({back:.2f} s after `userlb run` was ready)")
    p(vip_table(lab))
    return not lost and len(r["withdrawn"]) == len(lab.vip_prefixes())


def demo_main(k, suffix=None, connections=30, out=sys.stdout):
    """`userlb lab demo --bgp [--directors K]`: on the current lab when it is
    a BGP lab with K directors all running, else on a temporary one."""
    from .core import Lab
    lab = None
    try:
        cur = Lab.load(suffix)
        if cur.bgp and cur.n_directors == k and len(cur.running_directors()) == k:
            lab = cur
    except LabError:
        if suffix:
            raise
    temp = lab is None
    ok = False
    try:
        if temp:
            print(f"setting up a lab with {k} directors and BGP ...", file=out, flush=True)
            lab = Lab(n_servers=3, n_clients=8, directors=k, bgp=True, current=False)
            lab.up()
        ok = demo(lab, connections=connections, out=out)
    finally:
        if temp and lab is not None:
            lab.down()
            print(f"lab {lab.tag} removed", file=out, flush=True)
        elif lab is not None and not lab.sloppy:
            lab.adm_all("--sloppy-tcp", "off")
    return 0 if ok else 1
