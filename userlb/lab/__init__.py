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
                 current=True):
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
                  suffix=st["suffix"], sloppy=st["sloppy"], config_servers=st.get("config_servers"))
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
        sh(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")

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
        # real servers
        for ns, _a4, _a6 in self.servers + ([self.far] if self.far else []):
            self.start(ns.rsplit("-", 1)[1], ns,
                       [sys.executable, "-m", "userlb.lab.servers", "--name", ns.rsplit("-", 1)[1],
                        "--discard", str(DISCARD), "--lab", self.tag], ready="ready")
        self.write_rules(self.rules_text())
        if self.want_director:
            self.start_director()
        self.save()

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

    def director_argv(self, sloppy=None, extra=()):
        sloppy = self.sloppy if sloppy is None else sloppy
        argv = [sys.executable, "-m", "userlb.cli.main", "run", "--config", self.rules_path,
                "--tun", TUN, "--stats-file", self.stats_path, "--control", self.control_path]
        for p in REPLY_FROM:
            argv += ["--reply-from", p]
        if sloppy:
            argv.append("--sloppy-tcp")
        return argv + list(extra)

    def start_director(self, sloppy=None, extra=()):
        if sloppy is not None:
            self.sloppy = sloppy
        return self.start("director", self.director, self.director_argv(extra=extra),
                          ready="ready", log=self.director_log)

    def stop_director(self, timeout=10):
        pid = self.pids.pop("director", None)
        self.save()
        if pid:
            self._kill(pid, timeout)

    def restart_director(self, sloppy=None, extra=()):
        self.stop_director()
        self.start_director(sloppy=sloppy, extra=extra)

    def signal_director(self, sig):
        pid = self.pids.get("director")
        if not pid or not self._ours(pid):
            raise LabError("the director is not running")
        os.kill(pid, sig)

    def reload(self, text=None):
        """Write a new rules file (if given) and make the director re-read it."""
        if text is not None:
            self.write_rules(text)
        before = self._log_count("SIGHUP")
        self.signal_director(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._log_count("SIGHUP") > before:
                last = [l for l in open(self.director_log) if "SIGHUP" in l][-1]
                if "applied" not in last:
                    raise LabError(last.strip())
                return last.strip()
            time.sleep(0.02)
        raise LabError("the director did not answer SIGHUP")

    def _log_count(self, word):
        try:
            with open(self.director_log) as f:
                return sum(1 for l in f if word in l)
        except FileNotFoundError:
            return 0

    def stats(self, timeout=5):
        """Ask the director (SIGUSR1) for its listing + counters."""
        try:
            old = os.stat(self.stats_path).st_mtime_ns
        except FileNotFoundError:
            old = 0
        self.signal_director(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.stat(self.stats_path).st_mtime_ns != old:
                    return open(self.stats_path).read()
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise LabError("the director did not write its stats")

    def adm(self, *args, input=None):
        """`userlb adm --control <this lab's socket> ARGS` (CompletedProcess)."""
        return sh([sys.executable, "-m", "userlb.cli.main", "adm", "--control", self.control_path]
                  + list(args), input=input, check=False)

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
        # director first, so it removes its routes while its namespace exists
        keys = sorted(self.pids, key=lambda k: k != "director")
        for key in keys:
            try:
                self._kill(self.pids[key])
            except Exception as e:   # noqa: BLE001
                errors.append(f"{key}: {e}")
        self.pids = {}
        existing = set(sh(["ip", "netns", "list"]).stdout.split())
        for ns in list(self.namespaces) + [self.client, self.director] + [s[0] for s in self.servers] \
                + ([self.router, self.far[0]] if self.far_mtu else []):
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
    """Drives `userlb.lab.client session` over its stdin/stdout."""

    def __init__(self, lab, kw):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[2]) + \
            (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.client, sys.executable, "-m",
                                   "userlb.lab.client", "session", json.dumps(kw)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        self.flows = self._read()["flows"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise LabError(f"client session ended: {err.strip()}")
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
                self.p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
