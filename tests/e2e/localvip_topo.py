"""A small topology for the local-VIP and crash tests: client -- director --
real server, each in its own namespace (unique names, removed on exit).

    client (C)  eth0 10.10.0.2/24, 10.99.0.0/24 via 10.10.0.1
    director (D) c0 10.10.0.1/24, s0 10.20.0.1/24, VIP 10.99.0.1 on lo
    server (S)  eth0 10.20.0.11/24, default via 10.20.0.1

Servers answer one line: their name and the peer address they saw.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER = r"""
import socket, sys, threading
name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{name} {peer[0]}\n".encode()); c.close()
"""
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(200).decode().strip())
"""


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (":" + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


class Topo:
    #: extra `userlb run` options every start() passes
    extra = ()

    def __init__(self):
        sfx = uuid.uuid4().hex[:6]
        self.c, self.d, self.s = f"ulv-{sfx}-c", f"ulv-{sfx}-d", f"ulv-{sfx}-s"
        self.tun = f"ulv{sfx}"
        self.dir = None
        self.procs = []

    def up(self, tmp):
        self.dir = tmp
        for ns in (self.c, self.d, self.s):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.c, "link", "add", "eth0", "type", "veth", "peer", "c0",
           "netns", self.d)
        sh("ip", "-n", self.s, "link", "add", "eth0", "type", "veth", "peer", "s0",
           "netns", self.d)
        for ns, dev, addr in ((self.c, "eth0", "10.10.0.2/24"), (self.d, "c0", "10.10.0.1/24"),
                              (self.d, "s0", "10.20.0.1/24"), (self.s, "eth0", "10.20.0.11/24"),
                              (self.d, "lo", "10.99.0.1/32")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.c, "route", "add", "10.99.0.0/24", "via", "10.10.0.1")
        sh("ip", "-n", self.s, "route", "add", "default", "via", "10.20.0.1")
        sh("ip", "netns", "exec", self.d, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.server(self.s, "S", "10.20.0.11", 80)
        self.server(self.d, "D", "0.0.0.0", 2222)
        return self

    def server(self, ns, name, addr, port):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, name,
                              addr, str(port)], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "listening"
        return p

    def connect(self, ns, addr, port):
        """The line the server answered, or 'ERR ...'."""
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, addr,
                            str(port)], capture_output=True, text=True, timeout=20)
        if p.returncode:
            return "ERR " + (p.stderr.strip().splitlines() or ["?"])[-1]
        return p.stdout.strip()

    def rules_file(self, text):
        path = os.path.join(self.dir, "rules.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    @property
    def sock(self):
        return os.path.join(self.dir, "control.sock")

    def start(self, rules):
        """`userlb run` in the director namespace; returns the Popen once ready."""
        seen = len(self.log())
        log = open(os.path.join(self.dir, "run.log"), "a")
        p = subprocess.Popen(["ip", "netns", "exec", self.d, sys.executable, "-m",
                              "userlb.cli.main", "run", "--config", self.rules_file(rules),
                              "--tun", self.tun, "--control", self.sock, *self.extra],
                             stdout=log, stderr=log, env=env())
        self.procs.append(p)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "ready:" in self.log()[seen:]:
                return p
            if p.poll() is not None:
                raise AssertionError("userlb run exited:\n" + self.log())
            time.sleep(0.1)
        raise AssertionError("userlb run not ready:\n" + self.log())

    def log(self):
        try:
            with open(os.path.join(self.dir, "run.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, p, sig=signal.SIGTERM):
        p.send_signal(sig)
        p.wait(timeout=20)

    def adm(self, *args):
        return subprocess.run([sys.executable, "-m", "userlb.cli.main", "adm", "--control",
                               self.sock] + list(args), capture_output=True, text=True,
                              timeout=30, env=env())

    def userlb(self, *args):
        return subprocess.run(["ip", "netns", "exec", self.d, sys.executable, "-m",
                               "userlb.cli.main"] + list(args), capture_output=True,
                              text=True, timeout=30, env=env())

    def ip(self, *args):
        return sh("ip", "-n", self.d, *args).stdout

    def state(self):
        """The director's rules (both families), every IPv4 route (all tables)
        and the IPv6 routes of userlb or its device (the kernel's IPv6
        link-local routes come and go with DAD on their own)."""
        out = {f: self.ip(f, "rule") for f in ("-4", "-6")}
        out["-4"] += self.ip("-4", "route", "show", "table", "all")
        out["-6"] += "".join(ln + "\n" for ln in self.ip("-6", "route", "show", "table", "all")
                             .splitlines() if "proto 245" in ln or self.tun in ln)
        return out

    def down(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        for ns in (self.c, self.d, self.s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def wait_for(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.1)
