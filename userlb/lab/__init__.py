"""A lab in network namespaces: client, director, real servers.

    client ns  (ulb-SFX-c)   eth0  10.10.0.2..  fd00:10::2..   (several client addresses)
        |  veth
    director ns (ulb-SFX-d)  c0    10.10.0.1    fd00:10::1
                             br0   10.20.0.1    fd00:20::1     (bridge of the servers' links)
                             ulb0  the TUN device of `userlb run` (VIPs routed into it)
        |  bridge
    server ns i (ulb-SFX-sI) eth0  10.20.0.(10+i) fd00:20::(10+i), default route -> director

Optional (`far_mtu`): one more real server behind a router whose server-side
link has a lowered MTU (the PMTU discovery test):

    director f0 10.20.1.1 -- router (ulb-SFX-r) 10.20.1.2 | 10.20.2.1 (MTU far_mtu) -- far (ulb-SFX-f) 10.20.2.2

With `directors` K >= 2 (issue 8: active-active directors behind ECMP) the
client and the real servers hang off a router instead, and K director
namespaces sit beside it:

    client ns (ulb-SFX-c)    eth0  10.10.0.2..     default via the router
        |
    router ns (ulb-SFX-r)    c0    10.10.0.1       fd00:10::1
                             br0   10.20.0.1       fd00:20::1      (bridge of the servers' links)
                             dK    10.30.K.1       fd00:30:K::1    (one link per director)
        |  dK <-> up0
    director K (ulb-SFX-dK)  up0   10.30.K.2       fd00:30:K::2    default via the router;
                             ulb0  the TUN device of `userlb run` (same rules everywhere)
    server ns i (ulb-SFX-sI) eth0  10.20.0.(10+i)  default via the router

The router (net.ipv4/ipv6.fib_multipath_hash_policy = 1, L4 hashing) reaches
the VIPs through a multipath route over the live directors, and sends what
comes from the real servers (`iif br0`, rule to table ROUTER_REPLY_TABLE)
to the client networks through the same kind of multipath route: the
replies of a flow are hashed on their own 5-tuple and may reach a director
that never saw the flow's SYN.  A packet whose DSCP is K (TOS byte 4K, e.g.
a client socket with IP_TOS / IPV6_TCLASS = 4K) is pinned to director K
(rule `iif c0 tos 4K` to table ROUTER_PIN_TABLE + K): that is how a test
sends the same flow to each director in turn.  `kill_director(K)` takes
director K out of every route first and then stops it; `revive_director(K)`
starts it again and puts it back.

VIPs: 10.99.0.1 and fd00:99::1.  `userlb run` gets `--reply-from 10.20.0.0/16
--reply-from fd00:20::/44` so that ICMP errors from the router go into the TUN too.

The state (names, PIDs, paths) is kept in STATE_ROOT/SFX/state.json; `Lab.load`
finds it again.  `down()` is idempotent and kills only the processes the lab
started (by PID, after checking their command line carries the lab tag).
"""
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import time

STATE_ROOT = pathlib.Path(os.environ.get("USERLB_LAB_DIR", "/run/userlb-lab"))
CURRENT = "current"

VIP4 = "10.99.0.1"
VIP6 = "fd00:99::1"
CLIENT_NET4 = "10.10.0"
CLIENT_NET6 = "fd00:10::"
TUN = "ulb0"
REPLY_FROM = ("10.20.0.0/16", "fd00:20::/44")

HTTP, ECHO, HASH, UDP_ECHO = 80, 7, 9, 7
DISCARD = 5000          # UDP sink (never read), for packet-rate benchmarks
# extra TCP echo ports of every real server (distinct real-server ports, so
# that tests can define several services whose replies stay unambiguous)
EXTRA_ECHO = tuple(range(7001, 7009))

ROUTER_REPLY_TABLE = 200        # router: replies from the servers -> directors (multipath)
ROUTER_PIN_TABLE = 100          # router: + K: the VIPs via director K only


class LabError(Exception):
    pass


def sh(cmd, check=True, input=None, capture=True, timeout=60):
    """Run a command (list); raise LabError with its stderr on failure."""
    p = subprocess.run(cmd, input=input, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode:
        raise LabError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or '').strip()}")
    return p


def server_addr4(i):
    return f"10.20.0.{10 + i}"


def server_addr6(i):
    return f"fd00:20::{10 + i:x}"


def client_addrs(n):
    """n IPv4 and n IPv6 client addresses."""
    return ([f"{CLIENT_NET4}.{2 + k}" for k in range(n)],
            [f"{CLIENT_NET6}{2 + k:x}" for k in range(n)])


def rules_text(servers, weights=None, far=None, extra=""):
    """The lab's rules file (ipvsadm -R syntax).  servers: list of (name, a4, a6)."""
    weights = weights or [1] * len(servers)
    lines = []
    for vip in (VIP4, f"[{VIP6}]"):
        v6 = vip.startswith("[")
        for proto, port, sched in (("-t", HTTP, "-s mh -b mh-fallback,mh-port"),
                                   ("-t", ECHO, "-s mh -b mh-fallback,mh-port"),
                                   ("-u", UDP_ECHO, "-s sh -b sh-fallback,sh-port")):
            lines.append(f"-A {proto} {vip}:{port} {sched}")
            for (name, a4, a6), w in zip(servers, weights):
                rip = f"[{a6}]" if v6 else a4
                lines.append(f"-a {proto} {vip}:{port} -r {rip}:{port} -m -w {w}")
        lines.append(f"-A -t {vip}:{HASH} -s mh -b mh-port")
        targets = [far] if far else servers
        for name, a4, a6 in targets:
            rip = f"[{a6}]" if v6 else a4
            lines.append(f"-a -t {vip}:{HASH} -r {rip}:{HASH} -m -w 1")
    return "\n".join(lines) + "\n" + extra


class Lab:
    def __init__(self, n_servers=3, n_clients=8, far_mtu=None, suffix=None,
                 sloppy=False, director=True, config_servers=None, weights=None,
                 current=True, directors=1):
        if directors < 1:
            raise LabError("--directors: at least 1")
        if directors > 1 and far_mtu:
            raise LabError("--far-mtu needs the one-director lab (no --directors)")
        if directors > 200:
            raise LabError("--directors: at most 200")
        self.sfx = suffix or secrets.token_hex(3)
        self.tag = f"ulb-{self.sfx}"
        self.n_servers = n_servers
        self.n_clients = n_clients
        self.far_mtu = far_mtu
        self.sloppy = sloppy
        self.want_director = director
        self.current = current      # make STATE_ROOT/current point here (`userlb lab up`)
        # how many of the servers the initial rules file uses (rest: spare)
        self.config_servers = n_servers if config_servers is None else config_servers
        self.weights = weights
        self.dir = STATE_ROOT / self.sfx
        self.client = f"{self.tag}-c"
        self.director = f"{self.tag}-d"
        self.servers = [(f"{self.tag}-s{i}", server_addr4(i), server_addr6(i))
                        for i in range(1, n_servers + 1)]
        self.router = f"{self.tag}-r" if far_mtu else None
        self.far = (f"{self.tag}-f", "10.20.2.2", "fd00:20:2::2") if far_mtu else None
        self.clients4, self.clients6 = client_addrs(n_clients)
        self.pids = {}
        self.namespaces = []
        self.rules_path = str(self.dir / "rules.conf")
        self.stats_path = str(self.dir / "stats.txt")
        self.director_log = str(self.dir / "director.log")
        self.control_path = str(self.dir / "control.sock")
        # K directors (K >= 2: behind the ECMP router; see the module docstring)
        self.n_directors = directors
        self.alive = list(range(1, directors + 1))     # directors in the routes
        if directors > 1:
            self.router = f"{self.tag}-r"
            self.director_ns = [f"{self.tag}-d{k}" for k in range(1, directors + 1)]
            self.director = self.director_ns[0]
            self.director_log = self.log_of(1)
            self.control_path = self.control_of(1)
            self.stats_path = self.stats_of(1)
        else:
            self.director_ns = [self.director]

    # per-director names (K = 1: the names of the one-director lab)
    def director_key(self, k=1):
        return "director" if self.n_directors == 1 else f"director{k}"

    def control_of(self, k=1):
        return str(self.dir / ("control.sock" if self.n_directors == 1 else f"control-{k}.sock"))

    def log_of(self, k=1):
        return str(self.dir / ("director.log" if self.n_directors == 1 else f"director-{k}.log"))

    def stats_of(self, k=1):
        return str(self.dir / ("stats.txt" if self.n_directors == 1 else f"stats-{k}.txt"))

    def director_pid(self, k=1):
        return self.pids.get(self.director_key(k))

    # ------------------------------------------------------------ state
    def state(self):
        return {"suffix": self.sfx, "tag": self.tag, "n_servers": self.n_servers,
                "n_clients": self.n_clients, "far_mtu": self.far_mtu, "sloppy": self.sloppy,
                "client": self.client, "director": self.director,
                "servers": self.servers, "router": self.router, "far": self.far,
                "clients4": self.clients4, "clients6": self.clients6,
                "pids": self.pids, "namespaces": self.namespaces,
                "rules": self.rules_path, "stats": self.stats_path,
                "director_log": self.director_log, "control": self.control_path,
                "config_servers": self.config_servers,
                "directors": self.n_directors, "alive": self.alive,
                "director_namespaces": self.director_ns,
                "vip4": VIP4, "vip6": VIP6}

    def save(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state(), indent=1))
        os.replace(tmp, self.dir / "state.json")
        if not self.current:
            return
        cur = STATE_ROOT / CURRENT
        try:
            if cur.is_symlink() or cur.exists():
                cur.unlink()
            cur.symlink_to(self.sfx)
        except OSError:
            pass

    @classmethod
    def load(cls, suffix=None):
        d = STATE_ROOT / (suffix or CURRENT)
        try:
            st = json.loads((d / "state.json").read_text())
        except FileNotFoundError:
            raise LabError(f"no lab state in {d} (is a lab up? `userlb lab up`)") from None
        lab = cls(n_servers=st["n_servers"], n_clients=st["n_clients"], far_mtu=st["far_mtu"],
                  suffix=st["suffix"], sloppy=st["sloppy"], config_servers=st.get("config_servers"),
                  directors=st.get("directors", 1))
        lab.alive = st.get("alive", lab.alive)
        lab.pids = st["pids"]
        lab.namespaces = st["namespaces"]
        return lab

    @staticmethod
    def all_suffixes():
        if not STATE_ROOT.is_dir():
            return []
        return sorted(p.name for p in STATE_ROOT.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / "state.json").exists())

    # --------------------------------------------------------- building
    def ns_add(self, name):
        sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.save()
        sh(["ip", "-n", name, "link", "set", "lo", "up"])

    def batch(self, ns, lines):
        """`ip -batch` in ns; lines starting with "-6 " go to an `ip -6 -batch`."""
        v4 = [l for l in lines if not l.startswith("-6 ")]
        v6 = [l[3:] for l in lines if l.startswith("-6 ")]
        if v4:
            sh(["ip", "-n", ns, "-batch", "-"], input="\n".join(v4) + "\n")
        if v6:
            sh(["ip", "-n", ns, "-6", "-batch", "-"], input="\n".join(v6) + "\n")

    def sysctl(self, ns, name, value):
        sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{name}={value}"])

    def up(self):
        """Create everything; on any failure remove what was made and re-raise."""
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self):
        if shutil.which("ip") is None:
            raise LabError("iproute2 (`ip`) is missing: apt-get install iproute2")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        if self.n_directors > 1:
            return self._up_ecmp()
        c, d = self.client, self.director
        for ns in [c, d] + [s[0] for s in self.servers] + \
                ([self.router, self.far[0]] if self.far_mtu else []):
            self.ns_add(ns)
        # client <-> director
        sh(["ip", "link", "add", "eth0", "netns", c, "type", "veth", "peer", "name", "c0", "netns", d])
        lines = ["link set eth0 up", "route add default via 10.10.0.1",
                 "route add ::/0 via fd00:10::1"]
        self.batch(c, [f"addr add {a}/24 dev eth0" for a in self.clients4] +
                   [f"addr add {a}/64 dev eth0 nodad" for a in self.clients6] + lines)
        self.batch(d, ["addr add 10.10.0.1/24 dev c0", "addr add fd00:10::1/64 dev c0 nodad",
                       "link set c0 up", "link add br0 type bridge",
                       "addr add 10.20.0.1/24 dev br0", "addr add fd00:20::1/64 dev br0 nodad",
                       "link set br0 up"])
        self.sysctl(d, "net.ipv6.conf.br0.accept_dad", 0)
        self.sysctl(d, "net.ipv4.ip_forward", 1)
        self.sysctl(d, "net.ipv6.conf.all.forwarding", 1)
        for i, (ns, a4, a6) in enumerate(self.servers, 1):
            sh(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer",
                "name", f"s{i}", "netns", d])
            self.batch(d, [f"link set s{i} master br0", f"link set s{i} up"])
            self.batch(ns, [f"addr add {a4}/24 dev eth0", f"addr add {a6}/64 dev eth0 nodad",
                            "link set eth0 up", "route add default via 10.20.0.1",
                            "route add ::/0 via fd00:20::1"])
        if self.far_mtu:
            r, (f, fa4, fa6) = self.router, self.far
            sh(["ip", "link", "add", "f0", "netns", d, "type", "veth", "peer", "name", "eth0", "netns", r])
            sh(["ip", "link", "add", "eth1", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", f])
            self.batch(d, ["addr add 10.20.1.1/24 dev f0", "addr add fd00:20:1::1/64 dev f0 nodad",
                           "link set f0 up", "route add 10.20.2.0/24 via 10.20.1.2",
                           "route add fd00:20:2::/64 via fd00:20:1::2"])
            self.batch(r, ["addr add 10.20.1.2/24 dev eth0", "addr add fd00:20:1::2/64 dev eth0 nodad",
                           "link set eth0 up", f"link set eth1 mtu {self.far_mtu}",
                           "addr add 10.20.2.1/24 dev eth1", "addr add fd00:20:2::1/64 dev eth1 nodad",
                           "link set eth1 up", "route add default via 10.20.1.1",
                           "route add ::/0 via fd00:20:1::1"])
            self.sysctl(r, "net.ipv4.ip_forward", 1)
            self.sysctl(r, "net.ipv6.conf.all.forwarding", 1)
            self.batch(f, [f"addr add {fa4}/24 dev eth0", f"addr add {fa6}/64 dev eth0 nodad",
                           "link set eth0 up", "route add default via 10.20.2.1",
                           "route add ::/0 via fd00:20:2::1"])
        self._start_servers()
        self.write_rules(self.rules_text())
        if self.want_director:
            self.start_director()
        self.save()

    def _start_servers(self):
        for ns, _a4, _a6 in self.servers + ([self.far] if self.far else []):
            self.start(ns.rsplit("-", 1)[1], ns,
                       [sys.executable, "-m", "userlb.lab.servers", "--name", ns.rsplit("-", 1)[1],
                        "--discard", str(DISCARD), "--more-echo",
                        f"{EXTRA_ECHO[0]}-{EXTRA_ECHO[-1]}", "--lab", self.tag], ready="ready")

    # ------------------------------------------------ K >= 2 directors (ECMP)
    @staticmethod
    def link4(k):
        """(router side, director side) IPv4 addresses of director k's link."""
        return f"10.30.{k}.1", f"10.30.{k}.2"

    @staticmethod
    def link6(k):
        return f"fd00:30:{k:x}::1", f"fd00:30:{k:x}::2"

    def _up_ecmp(self):
        c, r = self.client, self.router
        for ns in [c, r] + self.director_ns + [s[0] for s in self.servers]:
            self.ns_add(ns)
        sh(["ip", "link", "add", "eth0", "netns", c, "type", "veth", "peer", "name", "c0", "netns", r])
        self.batch(c, [f"addr add {a}/24 dev eth0" for a in self.clients4] +
                   [f"addr add {a}/64 dev eth0 nodad" for a in self.clients6] +
                   ["link set eth0 up", "route add default via 10.10.0.1",
                    "route add ::/0 via fd00:10::1"])
        for name, value in (("net.ipv4.ip_forward", 1), ("net.ipv6.conf.all.forwarding", 1),
                            ("net.ipv4.fib_multipath_hash_policy", 1),
                            ("net.ipv6.fib_multipath_hash_policy", 1),
                            ("net.ipv4.conf.all.rp_filter", 0),
                            ("net.ipv4.conf.default.rp_filter", 0),
                            ("net.ipv6.conf.default.accept_dad", 0)):
            self.sysctl(r, name, value)
        self.batch(r, ["addr add 10.10.0.1/24 dev c0", "addr add fd00:10::1/64 dev c0 nodad",
                       "link set c0 up", "link add br0 type bridge",
                       "addr add 10.20.0.1/24 dev br0", "addr add fd00:20::1/64 dev br0 nodad",
                       "link set br0 up"])
        for i, (ns, a4, a6) in enumerate(self.servers, 1):
            sh(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer",
                "name", f"s{i}", "netns", r])
            self.batch(r, [f"link set s{i} master br0", f"link set s{i} up"])
            self.batch(ns, [f"addr add {a4}/24 dev eth0", f"addr add {a6}/64 dev eth0 nodad",
                            "link set eth0 up", "route add default via 10.20.0.1",
                            "route add ::/0 via fd00:20::1"])
        for k, dns in enumerate(self.director_ns, 1):
            (r4, d4), (r6, d6) = self.link4(k), self.link6(k)
            sh(["ip", "link", "add", f"d{k}", "netns", r, "type", "veth", "peer",
                "name", "up0", "netns", dns])
            self.batch(r, [f"addr add {r4}/24 dev d{k}", f"addr add {r6}/64 dev d{k} nodad",
                           f"link set d{k} up"])
            self.sysctl(dns, "net.ipv4.conf.all.rp_filter", 0)
            self.batch(dns, [f"addr add {d4}/24 dev up0", f"addr add {d6}/64 dev up0 nodad",
                             "link set up0 up", f"route add default via {r4}",
                             f"route add ::/0 via {r6}"])
            # the pin: DSCP k from the client side goes to director k only
            t = ROUTER_PIN_TABLE + k
            self.batch(r, [f"route add {VIP4}/32 via {d4} dev d{k} table {t}",
                           f"-6 route add {VIP6}/128 via {d6} dev d{k} table {t}",
                           f"rule add iif c0 tos 0x{4 * k:02x} lookup {t} pref {1000 + k}",
                           f"-6 rule add iif c0 tos 0x{4 * k:02x} lookup {t} pref {1000 + k}"])
        t = ROUTER_REPLY_TABLE
        self.batch(r, [f"rule add iif br0 lookup {t} pref 900",
                       f"-6 rule add iif br0 lookup {t} pref 900"])
        self.set_routes()
        self._start_servers()
        self.write_rules(self.rules_text())
        if self.want_director:
            self.start_director()
        self.save()

    def set_routes(self, alive=None):
        """Point the router's multipath routes (VIPs; replies to the client
        networks) at the directors in `alive` (default self.alive); with none,
        remove them."""
        if alive is not None:
            self.alive = sorted(alive)
        self.save()
        targets = [(f"{VIP4}/32", "", ""), (f"{VIP6}/128", "-6 ", ""),
                   (f"{CLIENT_NET4}.0/24", "", f" table {ROUTER_REPLY_TABLE}"),
                   (f"{CLIENT_NET6}/64", "-6 ", f" table {ROUTER_REPLY_TABLE}")]
        lines = []
        for dst, fam, table in targets:
            v6 = bool(fam)
            hops = [(self.link6(k) if v6 else self.link4(k))[1] for k in self.alive]
            if not hops:
                lines.append(f"{fam}route del {dst}{table}")
            elif len(hops) == 1:
                lines.append(f"{fam}route replace {dst}{table} via {hops[0]} dev d{self.alive[0]}")
            else:
                nh = " ".join(f"nexthop via {h} dev d{k}" for h, k in zip(hops, self.alive))
                lines.append(f"{fam}route replace {dst}{table} {nh}")
        for line in lines:
            p = sh(["ip", "-n", self.router] + line.split(), check=False)
            if p.returncode and " del " not in f" {line} ":
                raise LabError(f"router: ip {line}: {p.stderr.strip()}")

    def router_routes(self):
        """The router's VIP / reply routes and rules (text, for humans and tests)."""
        out = []
        for fam in ("-4", "-6"):
            out.append(sh(["ip", "-n", self.router, fam, "route", "show", "table", "all"]).stdout)
            out.append(sh(["ip", "-n", self.router, fam, "rule", "show"]).stdout)
        return "".join(out)

    def kill_director(self, k, hard=False):
        """Take director k out of the router's routes (the pin too), then stop
        it (SIGTERM, SIGKILL with hard=True).  The flows it carried are
        rehashed onto the others by the kernel."""
        if self.n_directors < 2:
            raise LabError("kill-director needs a lab with --directors 2 or more")
        if not 1 <= k <= self.n_directors:
            raise LabError(f"no director {k} (1..{self.n_directors})")
        if k in self.alive:
            self.set_routes([a for a in self.alive if a != k])
        t = ROUTER_PIN_TABLE + k
        for fam, dst in (("-4", f"{VIP4}/32"), ("-6", f"{VIP6}/128")):
            sh(["ip", "-n", self.router, fam, "route", "del", dst, "table", str(t)], check=False)
        pid = self.pids.pop(self.director_key(k), None)
        self.save()
        if pid:
            if hard and self._ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            self._kill(pid)
        return pid

    def revive_director(self, k, sloppy=None, extra=()):
        """Start director k again (same rules file) and put it back into the routes."""
        if not 1 <= k <= self.n_directors:
            raise LabError(f"no director {k} (1..{self.n_directors})")
        if self.director_pid(k) and self._ours(self.director_pid(k)):
            raise LabError(f"director {k} is running")
        self._start_one(k, sloppy=sloppy, extra=extra)
        _r4, d4 = self.link4(k)
        _r6, d6 = self.link6(k)
        t = ROUTER_PIN_TABLE + k
        self.batch(self.router, [f"route replace {VIP4}/32 via {d4} dev d{k} table {t}",
                                 f"-6 route replace {VIP6}/128 via {d6} dev d{k} table {t}"])
        self.set_routes(sorted(set(self.alive) | {k}))

    def rules_text(self, servers=None, weights=None, extra=""):
        servers = self.servers[:self.config_servers] if servers is None else servers
        names = [(s[0].rsplit("-", 1)[1], s[1], s[2]) for s in servers]
        far = (self.far[0].rsplit("-", 1)[1], self.far[1], self.far[2]) if self.far else None
        return rules_text(names, weights or self.weights, far=far, extra=extra)

    def write_rules(self, text):
        tmp = self.rules_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.rules_path)

    # -------------------------------------------------------- processes
    def start(self, key, ns, argv, ready=None, log=None, timeout=15):
        """Start argv in namespace ns (new session, PID recorded under key);
        wait until `ready` appears in its stderr log."""
        log = log or str(self.dir / f"{key}.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[2]) + \
            (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log, "w") as lf:
            p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                                 stdout=lf, stderr=lf, start_new_session=True, env=env)
        self.pids[key] = p.pid
        self.save()
        if ready is None:
            return p
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log) as f:
                text = f.read()
            if ready in text:
                return p
            if p.poll() is not None:
                raise LabError(f"{key} exited with {p.returncode}:\n{text.strip()}")
            time.sleep(0.02)
        raise LabError(f"{key} not ready after {timeout}s:\n{open(log).read().strip()}")

    def director_argv(self, sloppy=None, extra=(), k=1):
        sloppy = self.sloppy if sloppy is None else sloppy
        argv = [sys.executable, "-m", "userlb.cli.main", "run", "--config", self.rules_path,
                "--tun", TUN, "--stats-file", self.stats_of(k), "--control", self.control_of(k)]
        for p in REPLY_FROM:
            argv += ["--reply-from", p]
        if sloppy:
            argv.append("--sloppy-tcp")
        return argv + list(extra)

    def start_director(self, sloppy=None, extra=()):
        """Start the director (K >= 2: every director, all with the same rules)."""
        if sloppy is not None:
            self.sloppy = sloppy
        if self.n_directors == 1:
            return self.start("director", self.director, self.director_argv(extra=extra),
                              ready="ready", log=self.director_log)
        return [self._start_one(k, extra=extra) for k in range(1, self.n_directors + 1)]

    def _start_one(self, k, sloppy=None, extra=()):
        return self.start(self.director_key(k), self.director_ns[k - 1],
                          self.director_argv(sloppy=sloppy, extra=extra, k=k),
                          ready="ready", log=self.log_of(k))

    def running_directors(self):
        """Numbers of the directors whose process runs."""
        return [k for k in range(1, self.n_directors + 1)
                if self.director_pid(k) and self._ours(self.director_pid(k))]

    def stop_director(self, timeout=10):
        for k in range(1, self.n_directors + 1):
            pid = self.pids.pop(self.director_key(k), None)
            self.save()
            if pid:
                self._kill(pid, timeout)

    def restart_director(self, sloppy=None, extra=()):
        """Stop and start the director(s).  K >= 2: the routes stay as they are
        (all directors are back in a second or two)."""
        self.stop_director()
        self.start_director(sloppy=sloppy, extra=extra)
        if self.n_directors > 1:
            self.set_routes(range(1, self.n_directors + 1))
            for k in self.alive:
                _r4, d4 = self.link4(k)
                _r6, d6 = self.link6(k)
                t = ROUTER_PIN_TABLE + k
                self.batch(self.router, [f"route replace {VIP4}/32 via {d4} dev d{k} table {t}",
                                         f"-6 route replace {VIP6}/128 via {d6} dev d{k} table {t}"])

    def signal_director(self, sig, k=None):
        """Send sig to the director (K >= 2: k, or every running director)."""
        ks = [k] if k is not None else (
            [1] if self.n_directors == 1 else self.running_directors())
        if not ks:
            raise LabError("no director is running")
        for k in ks:
            pid = self.director_pid(k)
            if not pid or not self._ours(pid):
                raise LabError("the director is not running" if self.n_directors == 1
                               else f"director {k} is not running")
            os.kill(pid, sig)

    def reload(self, text=None):
        """Write a new rules file (if given) and make the director(s) re-read it.
        Returns the (last) director's log line."""
        if text is not None:
            self.write_rules(text)
        ks = [1] if self.n_directors == 1 else self.running_directors()
        before = {k: self._log_count("SIGHUP", k) for k in ks}
        for k in ks:
            self.signal_director(signal.SIGHUP, k)
        lines = []
        for k in ks:
            deadline = time.monotonic() + 10
            while True:
                if self._log_count("SIGHUP", k) > before[k]:
                    last = [l for l in open(self.log_of(k)) if "SIGHUP" in l][-1]
                    if "applied" not in last:
                        raise LabError(last.strip())
                    lines.append(last.strip())
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"director {k} did not answer SIGHUP")
                time.sleep(0.02)
        return lines[-1]

    def _log_count(self, word, k=1):
        try:
            with open(self.log_of(k)) as f:
                return sum(1 for l in f if word in l)
        except FileNotFoundError:
            return 0

    def stats(self, timeout=5, k=None):
        """Ask the director (SIGUSR1) for its listing + counters (K >= 2:
        director k, default the first running one)."""
        if k is None:
            run = self.running_directors() if self.n_directors > 1 else [1]
            k = run[0] if run else 1
        path = self.stats_of(k)
        try:
            old = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            old = 0
        self.signal_director(signal.SIGUSR1, k)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.stat(path).st_mtime_ns != old:
                    return open(path).read()
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise LabError("the director did not write its stats")

    def adm(self, *args, input=None, k=None):
        """`userlb adm --control <this lab's socket> ARGS` (CompletedProcess);
        K >= 2: director k (default 1)."""
        path = self.control_path if k is None else self.control_of(k)
        return sh([sys.executable, "-m", "userlb.cli.main", "adm", "--control", path]
                  + list(args), input=input, check=False)

    def adm_all(self, *args, input=None):
        """The same `userlb adm` command on every running director: {k: CompletedProcess}."""
        ks = [1] if self.n_directors == 1 else self.running_directors()
        return {k: self.adm(*args, input=input, k=k) for k in ks}

    def control_request(self, req, k=1):
        """One request on director k's control socket (userlb.control.protocol),
        without starting a process: the decoded response."""
        from ..control import protocol
        return protocol.request(self.control_of(k), req)

    def _ours(self, pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return self.tag in cmd or self.sfx in cmd

    def _kill(self, pid, timeout=5):
        if not self._ours(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wpid, _ = os.waitpid(pid, os.WNOHANG)
                if wpid == pid:
                    return
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    return
                try:   # not our child (another `userlb lab` process started it)
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().split(")")[-1].split()[0] == "Z":
                            return
                except OSError:
                    return
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    # ------------------------------------------------------------- exec
    def exec(self, ns, argv, input=None, timeout=120, check=True):
        return sh(["ip", "netns", "exec", ns] + argv, input=input, timeout=timeout, check=check)

    def client_py(self, func, timeout=120, **kw):
        """Run userlb.lab.client.FUNC(**kw) inside the client namespace; its JSON result."""
        p = self.exec(self.client, [sys.executable, "-m", "userlb.lab.client", func, json.dumps(kw)],
                      timeout=timeout)
        return json.loads(p.stdout)

    def session(self, **kw):
        """Long-lived flows with steady traffic in the client namespace
        (userlb.lab.client.session); see ClientSession."""
        return ClientSession(self, kw)

    # ------------------------------------------------------------- down
    def down(self):
        """Kill the lab's processes and delete its namespaces (idempotent)."""
        errors = []
        # directors first, so they remove their routes while their namespaces exist
        keys = sorted(self.pids, key=lambda k: not k.startswith("director"))
        for key in keys:
            try:
                self._kill(self.pids[key])
            except Exception as e:   # noqa: BLE001
                errors.append(f"{key}: {e}")
        self.pids = {}
        existing = set(sh(["ip", "netns", "list"]).stdout.split())
        for ns in list(self.namespaces) + [self.client] + self.director_ns \
                + [s[0] for s in self.servers] + ([self.router] if self.router else []) \
                + ([self.far[0]] if self.far_mtu else []):
            if ns in existing:
                p = sh(["ip", "netns", "del", ns], check=False)
                if p.returncode:
                    errors.append(p.stderr.strip())
                existing.discard(ns)
        self.namespaces = []
        cur = STATE_ROOT / CURRENT
        try:
            if cur.is_symlink() and os.readlink(cur) == self.sfx:
                cur.unlink()
        except OSError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return errors

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


class ClientSession:
    """Drives a long-running `userlb.lab.client MODE` (session, stream) in the
    client namespace over its stdin/stdout: one JSON line per command."""

    def __init__(self, lab, kw, mode="session", close_timeout=10.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[2]) + \
            (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.mode = mode
        self.close_timeout = close_timeout
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.client, sys.executable, "-m",
                                   "userlb.lab.client", mode, json.dumps(kw)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        self.flows = self._read()["flows"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise LabError(f"client {self.mode} ended: {err.strip()}")
        return json.loads(line)

    def _cmd(self, word):
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()
        return self._read()

    def report(self):
        return self._cmd("report")

    def pause(self):
        return self._cmd("pause")

    def resume(self):
        return self._cmd("resume")

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.close()
                self.p.wait(timeout=self.close_timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
