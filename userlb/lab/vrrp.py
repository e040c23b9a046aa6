"""The classic LVS pair: two directors, real keepalived moving the VIP with
VRRP, `userlb run --keepalived` on both (docs/keepalived.md, "The VRRP pair").

    client ns (ulb-SFX-c)    eth0 10.10.0.2..      route 10.99.0.1 on-link (ARP)
        |  veth
    switch ns (ulb-SFX-sw)   bridge brc: c, d1c, d2c  (client segment, VRRP adverts)
                             bridge brs: d1s, d2s, s1..sN (server segment)
        |  veths
    director K (ulb-SFX-dK)  eth0 10.10.0.25K/24   (K = 1, 2)
                             eth1 10.20.0.25K/24
                             keepalived --vrrp: VIP 10.99.0.1/32 on eth0 and the
                             servers' gateway 10.20.0.1/24 on eth1 on the master
                             userlb run --keepalived dK.conf --sloppy-tcp
    server ns i (ulb-SFX-sI) eth0 10.20.0.(10+i)/24, default via 10.20.0.1

Both directors read their own dK.conf: a `vrrp_instance` (director 1: state
MASTER, priority 150; director 2: BACKUP, 100; advert_int 1) and `include
services.conf`, the shared `virtual_server` blocks (`lb_algo mh`, `mh-port`,
NAT, TCP_CHECK); a `vrrp_script` (pgrep on the director's `userlb run`
command line, every second) puts the instance in FAULT when userlb dies.
keepalived runs with `--vrrp` only (no checker, no ip_vs); userlb skips
the vrrp_instance and follows the VIP as a local address (docs/steering.md).
The real servers' gateway moves with the VIP, so the replies of every flow
come back to the director that holds the VIP; with mh and sloppy TCP the new
master takes established connections over (it picks the same real server
for a mid-flow packet; replies without an entry are translated statelessly).

`fail(k)` stops director k as a crash would: SIGKILL of keepalived (its whole
process group) and of `userlb run`, then its links go down (a killed
keepalived leaves its VIPs configured; a dead machine also leaves the
segment).  The backup takes over after VRRP's master-down interval
(3 x advert_int + skew, about 3.6 s).  `kill_userlb(k)` kills only userlb:
the track script fails, keepalived sends a priority-0 advert (about 1 s).
`rst_guard()`: why the directors drop their own stack's RSTs from the VIP.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from .base import ECHO, HTTP, TUN, VIP4, LabError, sh
from .core import Lab
from .processes import wait_for
from .sessions import Streams
from .topology import batch, sysctls, veth

KEEPALIVED = "keepalived"
PGREP = "/usr/bin/pgrep"
VRID = 51
GATEWAY4 = "10.20.0.1"          # the real servers' default route: a VRRP address too
PRIORITY = {1: 150, 2: 100}
SERVICE_PORTS = (ECHO, HTTP)
REPLY_FROM4 = "10.20.0.0/24"
RST_GUARD = "ulb_vrrp_rst_guard"


def director_addr(k, side):
    """Director k's own address on the client (side 'c') or server ('s') segment."""
    return f"10.{10 if side == 'c' else 20}.0.{250 + k}"


def keepalived_conf(k, sfx, path):
    """Director k's keepalived.conf (at path): its vrrp_instance, tracking its
    `userlb run` (a pgrep on its command line, every second), and the shared
    services."""
    state = "MASTER" if k == 1 else "BACKUP"
    pattern = ".".join(userlb_argv_head(path)[1:])     # '.': the spaces, as a regex
    return f"""! userlb lab {sfx}: director {k} of the VRRP pair
global_defs {{
    router_id ulb-{sfx}-d{k}
    script_user root
    enable_script_security
}}
vrrp_script chk_userlb {{
    script "{PGREP} -f {pattern}"
    interval 1
    fall 1
    rise 1
}}
vrrp_instance VI_ULB {{
    state {state}
    interface eth0
    virtual_router_id {VRID}
    priority {PRIORITY[k]}
    advert_int 1
    virtual_ipaddress {{
        {VIP4}/32 dev eth0
        {GATEWAY4}/24 dev eth1
    }}
    track_script {{
        chk_userlb
    }}
}}
include services.conf
"""


def userlb_argv_head(path):
    """The start of director's `userlb run` command line after the interpreter."""
    return ["-m", "userlb.cli.main", "run", "--keepalived", path]


def services_conf(servers):
    """The shared virtual_server blocks: mh with mh-port, NAT, a TCP_CHECK
    every second on each real server."""
    out = ["! the services of both directors (included by d1.conf and d2.conf)"]
    for port in SERVICE_PORTS:
        out += [f"virtual_server {VIP4} {port} {{", "    delay_loop 1", "    lb_algo mh",
                "    mh-port", "    lb_kind NAT", "    protocol TCP"]
        for _ns, a4, _a6 in servers:
            out += [f"    real_server {a4} {port} {{", "        weight 1",
                    "        TCP_CHECK {", "            connect_timeout 1", "        }",
                    "    }"]
        out.append("}")
    return "\n".join(out) + "\n"


def rst_guard():
    """nft: the director's own stack never answers the VIP's service ports
    with a RST.  When VRRP adds the VIP, the kernel delivers its packets
    locally until userlb has put its steering rules in (the netlink round
    trip, tens of milliseconds on a busy machine); a retransmission of a
    taken-over connection that falls into that window would get a RST from
    the kernel (no socket there) and die.  Dropped instead, it is sent again
    and reaches userlb.  userlb's own RSTs leave through its TUN device
    (forwarded, not this output hook)."""
    ports = ", ".join(str(p) for p in SERVICE_PORTS)
    return (f"table inet {RST_GUARD} {{\n"
            f"  chain out {{\n    type filter hook output priority 0; policy accept;\n"
            f"    ip saddr {VIP4} tcp sport {{ {ports} }} tcp flags & rst == rst counter drop\n"
            f"  }}\n}}\n")


class VrrpLab(Lab):
    """A Lab of two directors on shared segments with real keepalived (VRRP)."""

    def __init__(self, n_servers=3, n_clients=8, suffix=None, current=True, director=True,
                 **_saved):     # Lab.load's other arguments: fixed here
        super().__init__(n_servers=n_servers, n_clients=n_clients, suffix=suffix,
                         sloppy=True, directors=2, current=current, director=director)
        self.router = None
        self.switch = f"{self.tag}-sw"
        self.keepalived = True
        self.vip = VIP4

    def state(self):
        return {**super().state(), "keepalived": True, "switch": self.switch}

    def conf_path(self, k):
        return str(self.dir / f"d{k}.conf")

    # ------------------------------------------------------------ network
    def build_vrrp(self):
        c, sw = self.client, self.switch
        for ns in [sw, c] + self.director_ns + [s[0] for s in self.servers]:
            self.ns_add(ns)
        batch(sw, ["link add brc type bridge", "link add brs type bridge",
                   "link set brc up", "link set brs up"])
        veth("eth0", c, "c", sw)
        batch(sw, ["link set c master brc", "link set c up"])
        batch(c, [f"addr add {a}/24 dev eth0" for a in self.clients4] +
              ["link set eth0 up", f"route add {VIP4}/32 dev eth0"])
        for k, d in enumerate(self.director_ns, 1):
            veth("eth0", d, f"d{k}c", sw)
            veth("eth1", d, f"d{k}s", sw)
            batch(sw, [f"link set d{k}c master brc", f"link set d{k}c up",
                       f"link set d{k}s master brs", f"link set d{k}s up"])
            sysctls(d, (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                        ("net.ipv4.conf.default.rp_filter", 0)))
            batch(d, [f"addr add {director_addr(k, 'c')}/24 dev eth0",
                      f"addr add {director_addr(k, 's')}/24 dev eth1",
                      "link set eth0 up", "link set eth1 up"])
            sh(["ip", "netns", "exec", d, "nft", "-f", "-"], input=rst_guard())
        for i, (ns, a4, _a6) in enumerate(self.servers, 1):
            veth("eth0", ns, f"s{i}", sw)
            batch(sw, [f"link set s{i} master brs", f"link set s{i} up"])
            batch(ns, [f"addr add {a4}/24 dev eth0", "link set eth0 up",
                       f"route add default via {GATEWAY4}"])

    def _up(self):
        if shutil.which(KEEPALIVED) is None:
            raise LabError("keepalived is missing: apt-get install keepalived (make sysdeps)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        self.build_vrrp()
        self._start_servers()
        with open(self.dir / "services.conf", "w") as f:
            f.write(services_conf(self.servers))
        for k in (1, 2):
            with open(self.conf_path(k), "w") as f:
                f.write(keepalived_conf(k, self.sfx, self.conf_path(k)))
        if self.want_director:
            for k in (1, 2):
                self.start_keepalived(k)
            self.start_director()
            self.wait_master(1)
        self.save()

    # ------------------------------------------------------------ processes
    def keepalived_argv(self, k):
        d = str(self.dir)
        return [KEEPALIVED, "-n", "-l", "-D", "--vrrp", "-f", self.conf_path(k),
                "-p", f"{d}/keepalived-{k}.pid", "-r", f"{d}/keepalived-{k}-vrrp.pid",
                "-c", f"{d}/keepalived-{k}-checkers.pid"]

    def start_keepalived(self, k):
        return self.start(f"keepalived{k}", self.director_ns[k - 1], self.keepalived_argv(k))

    def director_argv(self, sloppy=None, extra=(), k=1):
        return [sys.executable] + userlb_argv_head(self.conf_path(k)) + [
            "--tun", TUN, "--stats-file", self.stats_of(k), "--control", self.control_of(k),
            "--reply-from", REPLY_FROM4, "--sloppy-tcp"] + list(extra)

    def master(self):
        """The directors that hold the VIP on a link that is up (normally one)."""
        out = []
        for k, d in enumerate(self.director_ns, 1):
            p = sh(["ip", "-n", d, "-4", "addr", "show", "dev", "eth0"], check=False)
            if f" {VIP4}/32 " in p.stdout and ",UP," in p.stdout:
                out.append(k)
        return out

    def wait_master(self, k, timeout=10):
        """Wait until director k holds the VIP and its userlb steers it."""
        def ready():
            if self.master() != [k]:
                return False
            rules = sh(["ip", "-n", self.director_ns[k - 1], "-4", "rule"]).stdout
            return f"to {VIP4} ipproto tcp dport {ECHO}" in rules
        wait_for(ready, timeout, lambda: f"director {k} is not the VRRP master after "
                 f"{timeout}s (VIP on {self.master() or 'none'})")

    def kill_userlb(self, k):
        """SIGKILL director k's `userlb run` only: its keepalived's track
        script (pgrep, every second) fails, the instance goes to FAULT and
        gives the VIP up.  The monotonic time of the kill."""
        t0 = time.monotonic()
        self.stop(self.director_key(k), hard=True)
        return t0

    def rst_guard_drops(self, k):
        """How many RSTs of its own stack director k's guard dropped (rst_guard)."""
        p = sh(["ip", "netns", "exec", self.director_ns[k - 1], "nft", "list", "table", "inet",
                RST_GUARD], check=False)
        words = p.stdout.split()
        return int(words[words.index("packets") + 1]) if "packets" in words else 0

    def fail(self, k):
        """Stop director k as a crash would (module doc); the monotonic time of the kill."""
        t0 = time.monotonic()
        for key in (f"keepalived{k}", self.director_key(k)):
            pid = self.pids.get(key)
            if pid and self.ours(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)     # keepalived: parent and VRRP child
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        d = self.director_ns[k - 1]
        sh(["ip", "-n", d, "link", "set", "eth0", "down"])
        sh(["ip", "-n", d, "link", "set", "eth1", "down"])
        for key in (f"keepalived{k}", self.director_key(k)):
            self.stop(key, timeout=5)
        return t0

    # `userlb lab kill-director K` / `start-director K` on a VRRP pair
    def kill_director(self, k, hard=False):
        self._check_director(k)
        pid = self.director_pid(k)
        self.fail(k)
        self.alive = [a for a in self.alive if a != k]
        self.save()
        return pid

    def revive_director(self, k, sloppy=None, extra=()):
        self._check_director(k)
        if self.director_pid(k) and self.ours(self.director_pid(k)):
            raise LabError(f"director {k} is running")
        self.revive(k)
        self.alive = sorted(set(self.alive) | {k})
        self.save()
        if k == 1:          # the higher priority takes the VIP back
            self.wait_master(1, timeout=15)

    def revive(self, k):
        """Director k back: links up, keepalived and userlb started again (with
        its higher priority it takes the VIP back)."""
        d = self.director_ns[k - 1]
        for dev in ("eth0", "eth1"):
            sh(["ip", "-n", d, "link", "set", dev, "up"])
        self.start_keepalived(k)
        self._start_one(k)

    def probe(self, timeout=10.0):
        """New connections from the client to VIP:ECHO, 0.2 s apart with a
        0.25 s timeout each, until one gets the real server's greeting: its
        monotonic time, or None."""
        kw = {"src": self.clients4[-1], "vip": VIP4, "port": ECHO, "timeout": timeout}
        p = subprocess.run(["ip", "netns", "exec", self.client, sys.executable, "-m",
                            "userlb.lab.vrrp", "probe", json.dumps(kw)],
                           capture_output=True, text=True, timeout=timeout + 10)
        if p.returncode:
            raise LabError(f"probe: {p.stderr.strip()}")
        return json.loads(p.stdout)["t"]


def _probe(src, vip, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = socket.socket()
        s.settimeout(0.25)
        try:
            s.bind((src, 0))
            s.connect((vip, port))
            if s.recv(200).endswith(b"\n"):
                return time.monotonic()
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.05)
    return None


def status_lines(lab, proc):
    """`userlb lab status` of a VRRP pair; proc(key): a process's state."""
    lines = [f"lab {lab.tag} (state {lab.dir}/state.json): VRRP pair",
             f"  client    {lab.client}: {' '.join(lab.clients4)}",
             f"  switch    {lab.switch}: bridges brc (client side), brs (server side)",
             f"  VRRP master (VIP {VIP4}, gateway {GATEWAY4}): "
             f"director {' '.join(map(str, lab.master())) or 'none'}"]
    for k in (1, 2):
        lines += [f"  director {k} {lab.director_ns[k - 1]}: keepalived "
                  f"{proc(f'keepalived{k}')}, userlb {proc(lab.director_key(k))}",
                  f"            {lab.conf_path(k)}; userlb adm --control {lab.control_of(k)}"
                  f" -L -n --health"]
    for ns, a4, _a6 in lab.servers:
        lines.append(f"  {ns}: {a4}, {proc(ns.rsplit('-', 1)[1])}")
    return lines


# ------------------------------------------------------------------ the demo

def failover(lab, streams=30, out=print, how="crash"):
    """Streams through the VIP, the master (director 1) stopped, the backup
    serving: a dict of what was measured (the demo and the e2e test).
    how: "crash" (`fail`: keepalived and userlb killed, links down) or
    "userlb" (`kill_userlb`: only userlb killed; keepalived's track script
    gives the VIP up)."""
    st = Streams(lab, [[VIP4, ECHO]], count=streams, chunk=512, interval=0.05,
                 timeout=20.0, sources=lab.clients4)
    try:
        time.sleep(1.0)
        before = st.report()
        out(f"{streams} streams through {VIP4}:{ECHO} on director 1 (the VRRP master), "
            f"{sum(r['rounds'] for r in before)} echo rounds so far")
        if how == "crash":
            t0 = lab.fail(1)
            out("director 1 stopped: keepalived and userlb SIGKILLed, its links down")
        else:
            t0 = lab.kill_userlb(1)
            out("director 1's userlb SIGKILLed: its keepalived's track script fails, "
                "FAULT state, the VIP is given up")
        t1 = lab.probe()
        took = None if t1 is None else t1 - t0
        out(f"first new connection through the backup after "
            f"{'never' if took is None else f'{took:.2f} s'}; VIP now on director "
            f"{lab.master() or 'none'}")
        time.sleep(2.0)
        mid = {(r["client"], r["cport"]): r["rounds"] for r in st.report()}
        time.sleep(1.5)
        final = st.finish()
    finally:
        st.close()
    moved = sum(1 for r in final if r["rounds"] > mid.get((r["client"], r["cport"]), 0))
    intact = sum(1 for r in final if r["intact"] and r["done"])
    out(f"streams intact (every byte echoed, clean end): {intact}/{len(final)}; "
        f"still moving after the failover: {moved}/{len(final)}; "
        f"longest gap {max(r['max_gap'] for r in final):.2f} s")
    return {"failover_s": took, "intact": intact, "moved": moved, "streams": len(final),
            "reports": final}


def demo_main(suffix=None, streams=30, out=print):
    """`userlb lab demo --keepalived`: the failover on the current VRRP lab
    (or --lab SUFFIX) with both directors running, else on a temporary one.
    A kept lab gets its director 1 back afterwards (it takes the VIP back).
    True when every stream survived and the backup served."""
    lab = None
    try:
        cur = Lab.load(suffix)
        if isinstance(cur, VrrpLab) and len(cur.running_directors()) == 2 and \
                cur.master() == [1]:
            lab = cur
        elif suffix:
            raise LabError(f"lab {cur.tag} is not a VRRP pair with director 1 as master "
                           "(`userlb lab up --keepalived`)")
    except LabError:
        if suffix:
            raise
    temp = lab is None
    try:
        if temp:
            out("setting up a VRRP pair (two directors, real keepalived) ...")
            lab = VrrpLab(current=False).up()
        out(f"directors {' '.join(lab.director_ns)}: keepalived priorities 150/100, "
            f"VIP {VIP4} and the servers' gateway {GATEWAY4} on director {lab.master()}")
        res = failover(lab, streams, out)
        lab.revive(1)
        lab.wait_master(1, timeout=15)
        out(f"director 1 started again: it takes the VIP back (VIP on {lab.master()})")
        res2 = failover(lab, streams, out, how="userlb")
        lab._start_one(1)
        lab.wait_master(1, timeout=15)
        out(f"director 1's userlb started again: the VIP is back on {lab.master()}")
    finally:
        if temp and lab is not None:
            lab.down()
            out(f"lab {lab.tag} removed")
    return all(r["intact"] == r["streams"] and r["failover_s"] is not None
               for r in (res, res2))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "probe":
        print(json.dumps({"t": _probe(**json.loads(argv[1]))}))
        return 0
    print("usage: python -m userlb.lab.vrrp probe JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
