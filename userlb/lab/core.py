"""`Lab`: one lab's names, its saved state, and the operations that span its
parts -- up, down, and taking a director out of the ECMP routes and back.

The parts are mixed in: `Topology` (userlb/lab/topology.py) builds the
network, `Processes` (processes.py) starts and stops the real servers and the
directors, `Sessions` (sessions.py) runs traffic in the client namespace.

The state (names, PIDs, paths) is kept in STATE_ROOT/SFX/state.json; `Lab.load`
finds it again.  `down()` is idempotent and kills only the processes the lab
started (by PID, after checking their command line carries the lab tag).
"""
import json
import os
import pathlib
import secrets
import shutil

from . import rules
from .base import VIP4, VIP6, LabError, client_addrs, server_addr4, server_addr6, sh, short
from .bgp import Bgp
from .processes import Processes
from .sessions import Sessions
from .topology import Topology

STATE_ROOT = pathlib.Path(os.environ.get("USERLB_LAB_DIR", "/run/userlb-lab"))
CURRENT = "current"


class Lab(Topology, Processes, Sessions, Bgp):
    def __init__(self, n_servers=3, n_clients=8, far_mtu=None, suffix=None,
                 sloppy=False, director=True, config_servers=None, weights=None,
                 current=True, directors=1, bgp=False):
        if directors < 1:
            raise LabError("--directors: at least 1")
        if directors > 1 and far_mtu:
            raise LabError("--far-mtu needs the one-director lab (no --directors)")
        if bgp and directors < 2:
            raise LabError("--bgp needs --directors 2 or more")
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
        # K directors (K >= 2: behind the ECMP router; see userlb/lab/__init__.py)
        self.n_directors = directors
        # routes of the router from BGP (userlb/lab/bgp.py), not written by the lab
        self.bgp = bgp
        self.alive = list(range(1, directors + 1))     # directors in the routes
        # options every start of a director gets (`lab up --metrics/--procfs`)
        self.director_extra = []
        if directors > 1:
            self.router = f"{self.tag}-r"
            self.director_ns = [f"{self.tag}-d{k}" for k in range(1, directors + 1)]
            self.director = self.director_ns[0]
        else:
            self.director_ns = [self.director]
        # director 1's files (K = 1: the one director's)
        self.director_log = self.log_of(1)
        self.control_path = self.control_of(1)
        self.stats_path = self.stats_of(1)

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
                "director_extra": self.director_extra, "bgp": self.bgp,
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
        if st.get("keepalived") and cls is Lab:     # a VRRP pair (userlb/lab/vrrp.py)
            from .vrrp import VrrpLab
            cls = VrrpLab
        lab = cls(n_servers=st["n_servers"], n_clients=st["n_clients"], far_mtu=st["far_mtu"],
                  suffix=st["suffix"], sloppy=st["sloppy"],
                  config_servers=st.get("config_servers"), directors=st.get("directors", 1),
                  bgp=st.get("bgp", False))
        lab.alive = st.get("alive", lab.alive)
        lab.director_extra = list(st.get("director_extra", []))
        lab.pids = st["pids"]
        lab.namespaces = st["namespaces"]
        return lab

    @staticmethod
    def all_suffixes():
        if not STATE_ROOT.is_dir():
            return []
        return sorted(p.name for p in STATE_ROOT.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / "state.json").exists())

    # ------------------------------------------------------------ rules
    def rules_text(self, servers=None, weights=None, extra=""):
        servers = self.servers[:self.config_servers] if servers is None else servers
        names = [(short(s[0]), s[1], s[2]) for s in servers]
        far = (short(self.far[0]), self.far[1], self.far[2]) if self.far else None
        return rules.rules_text(names, weights or self.weights, far=far, extra=extra)

    def write_rules(self, text):
        tmp = self.rules_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.rules_path)

    # --------------------------------------------------------- up, down
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
            self.build_ecmp()
        else:
            self.build_single()
        self._start_servers()
        self.write_rules(self.rules_text())
        if self.want_director:
            self.start_director()
            if self.bgp:
                self.start_bgp()
        self.save()

    def down(self):
        """Kill the lab's processes and delete its namespaces (idempotent)."""
        errors = self.kill_all()
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

    # ---------------------------------------- directors in and out (ECMP)
    def kill_director(self, k, hard=False):
        """Take director k out of the router's routes (the pin too), then stop
        it (SIGTERM, SIGKILL with hard=True).  The flows it carried are
        rehashed onto the others by the kernel."""
        if self.n_directors < 2:
            raise LabError("kill-director needs a lab with --directors 2 or more")
        self._check_director(k)
        if self.bgp:      # BGP takes it out of the routes (userlb announce withdraws)
            self.alive = [a for a in self.alive if a != k]
            return self.stop(self.director_key(k), hard=hard)
        if k in self.alive:
            self.set_routes([a for a in self.alive if a != k])
        self.unpin(k)
        return self.stop(self.director_key(k), hard=hard)

    def revive_director(self, k, sloppy=None, extra=()):
        """Start director k again (same rules file) and put it back into the routes."""
        self._check_director(k)
        if self.director_pid(k) and self.ours(self.director_pid(k)):
            raise LabError(f"director {k} is running")
        self._start_one(k, sloppy=sloppy, extra=extra)
        if self.bgp:      # announced again by its `userlb announce`
            self.alive = sorted(set(self.alive) | {k})
            self.save()
            return
        self.pin(k)
        self.set_routes(sorted(set(self.alive) | {k}))

    def _check_director(self, k):
        if not 1 <= k <= self.n_directors:
            raise LabError(f"no director {k} (1..{self.n_directors})")

    def restart_director(self, sloppy=None, extra=()):
        """Stop and start the director(s).  K >= 2: the routes stay as they are
        (all directors are back in a second or two)."""
        self.stop_director()
        self.start_director(sloppy=sloppy, extra=extra)
        if self.n_directors > 1 and self.bgp:
            self.alive = list(range(1, self.n_directors + 1))
            self.save()
        elif self.n_directors > 1:
            self.set_routes(range(1, self.n_directors + 1))
            for k in self.alive:
                self.pin(k)
