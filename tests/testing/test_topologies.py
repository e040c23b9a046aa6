"""The containerlab topology (docker/containerlab) and the Kathará lab
(docker/kathara): they parse, reference images and files that exist, agree
with the namespace lab's address plan and rules -- and their node scripts,
run for real in network namespaces wired the way each tool wires its nodes,
carry traffic through the director to every real server.

containerlab and Kathará themselves are not installed here (nor is a
container engine that could run them), so neither tool runs: what runs is
our side of the contract, the scripts they would execute in each node.
"""
import os
import pathlib
import re
import subprocess
import sys
import time
import uuid

import pytest
from yaml_subset import read_yaml

from helpers.netns import needs_root
from userlb.lab.base import (
    CLIENT_NET4,
    CLIENT_NET6,
    VIP4,
    VIP6,
    client_addrs,
    server_addr4,
    server_addr6,
)
from userlb.lab.rules import rules_text

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLAB = ROOT / "docker" / "containerlab"
KATHARA = ROOT / "docker" / "kathara"
SERVERS = [(f"s{i}", server_addr4(i), server_addr6(i)) for i in (1, 2, 3)]
LAB_IMAGE = "userlb-lab:local"


def test_yaml_reader_reads_what_it_claims():
    doc = read_yaml("a: 1\nb:\n  c: [\"x:1\", y]\n  d:\n    - e: 'q'\n      f: g\n    - h\n")
    assert doc == {"a": "1", "b": {"c": ["x:1", "y"], "d": [{"e": "q", "f": "g"}, "h"]}}
    with pytest.raises(AssertionError):
        read_yaml("a: 1\na: 2\n")


# ------------------------------------------------------------- the files
def test_image_is_the_container_labs():
    assert f"image: ${{ULB_IMAGE:-{LAB_IMAGE}}}" in (ROOT / "docker/docker-compose.yml").read_text()
    assert (ROOT / "docker/Dockerfile").exists()
    kd = (KATHARA / "Dockerfile").read_text()
    assert f"ARG LAB_IMAGE={LAB_IMAGE}" in kd and "FROM ${LAB_IMAGE}" in kd
    assert 'CMD ["/bin/bash"]' in kd and "ENTRYPOINT []" in kd


@pytest.mark.parametrize("path", [CLAB / "lab.rules", KATHARA / "director/etc/userlb/lab.rules"])
def test_rules_are_the_namespace_labs(path):
    """Up to date with userlb.lab (the regeneration command is in the header)."""
    text = path.read_text()
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == \
        rules_text(SERVERS).splitlines()


def clab():
    return read_yaml((CLAB / "userlb.clab.yml").read_text())


def test_containerlab_topology():
    topo = clab()
    assert topo["name"] == "userlb"
    defaults, nodes = topo["topology"]["defaults"], topo["topology"]["nodes"]
    assert defaults["kind"] == "linux" and defaults["image"] == LAB_IMAGE
    assert set(nodes) == {"director", "s1", "s2", "s3", "client"}
    script = (CLAB / "node.sh").read_text()
    for name, node in nodes.items():
        for bind in node.get("binds", defaults["binds"]):
            host, guest = bind.split(":")[:2]
            assert (CLAB / host).is_file(), bind                 # relative to the topology
            assert guest.startswith("/lab/")
        words = node["cmd"].split()
        assert words[0] == "/lab/node.sh" and f"\n{words[1]})" in script, name
        assert words[1:] == (["server", name] if name.startswith("s") else [name])
    ends = [e for link in topo["topology"]["links"] for e in link["endpoints"]]
    assert len(ends) == len(set(ends)) == 8
    assert {e.split(":")[0] for e in ends} == set(nodes)
    assert sorted(e for e in ends if e.startswith("director:")) == \
        [f"director:eth{i}" for i in (1, 2, 3, 4)]
    assert "/lab/lab.rules" in " ".join(nodes["director"]["binds"])
    assert subprocess.run(["sh", "-n", str(CLAB / "node.sh")]).returncode == 0


def read_lab_conf(text):
    devices = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("LAB_"):
            continue
        m = re.fullmatch(r'(\w+)\[(\w+)\]="?([^"]*)"?', line)
        assert m, f"not a lab.conf line: {line!r}"
        devices.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    return devices


def test_kathara_lab():
    devices = read_lab_conf((KATHARA / "lab.conf").read_text())
    assert set(devices) == {"director", "s1", "s2", "s3", "client"}
    assert devices["director"]["0"] == devices["client"]["0"] == "front"
    assert {devices[d]["0"] for d in ("s1", "s2", "s3")} == {devices["director"]["1"]} == {"back"}
    for name, opts in devices.items():
        assert opts["image"] == "userlb-lab-kathara:local" and opts["ipv6"] == "true"
        startup = KATHARA / f"{name}.startup"
        assert startup.is_file(), startup
        assert subprocess.run(["bash", "-n", str(startup)]).returncode == 0
    assert "userlb-lab-kathara:local" in (KATHARA / "README.md").read_text()
    assert "/etc/userlb/lab.rules" in (KATHARA / "director.startup").read_text()


def test_addresses_are_the_namespace_labs():
    """The real servers', the client's and the director's addresses and the
    VIPs of both topologies are those of userlb/lab/base.py."""
    node_sh = (CLAB / "node.sh").read_text()
    for i in (1, 2, 3):       # node.sh computes them: host = 10 + N
        assert (server_addr4(i), server_addr6(i)) == (f"10.20.0.{10 + i}", f"fd00:20::{10 + i:x}")
        startup = (KATHARA / f"s{i}.startup").read_text()
        assert f"ip addr add {server_addr4(i)}/24 dev eth0" in startup
        assert f"ip -6 addr add {server_addr6(i)}/64 dev eth0 nodad" in startup
        assert f"--name s{i} " in startup
    assert 'ip addr add "10.20.0.$host/24"' in node_sh and "host=$((10 + ${name#s}))" in node_sh
    assert 'fd00:20::$(printf %x "$host")/64' in node_sh
    client = (KATHARA / "client.startup").read_text()
    for text in (node_sh, client):
        assert f"ip route add {VIP4}/32 via {CLIENT_NET4}.1" in text
        assert f"ip -6 route add {VIP6}/128 via {CLIENT_NET6}1" in text
        for a in client_addrs(2)[0]:
            assert f"ip addr add {a}/24" in text


# ----------------------------------------- the node scripts, run in namespaces
class Wiring:
    """Namespaces with unique names named after the nodes; removed (and
    the processes found in them killed, by PID) on close."""

    def __init__(self, names):
        self.tag = f"ulbt-{uuid.uuid4().hex[:6]}"
        self.ns = {n: f"{self.tag}-{n}" for n in names}
        self.procs = []
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)

    def link(self, a, ia, b, ib):
        subprocess.run(["ip", "link", "add", ia, "netns", self.ns[a], "type", "veth", "peer",
                        "name", ib, "netns", self.ns[b]], check=True)

    def bridge(self, name, members):
        """A collision domain: a bridge in a namespace of its own."""
        self.ns[name] = f"{self.tag}-{name}"
        subprocess.run(["ip", "netns", "add", self.ns[name]], check=True)
        subprocess.run(["ip", "-n", self.ns[name], "link", "add", "cd0", "type", "bridge"],
                       check=True)
        subprocess.run(["ip", "-n", self.ns[name], "link", "set", "cd0", "up"], check=True)
        for k, (node, iface) in enumerate(members):
            self.link(node, iface, name, f"p{k}")
            subprocess.run(["ip", "-n", self.ns[name], "link", "set", f"p{k}", "master", "cd0",
                            "up"], check=True)

    def env(self, tmp):
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        env["PYTHONPATH"] = str(ROOT)
        env["ULB_LOG_DIR"] = str(tmp)
        return env

    def start(self, node, argv, env, log):
        with open(log, "w") as f:
            self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.ns[node]] + argv,
                                               env=env, stdout=f, stderr=f,
                                               start_new_session=True))

    def run(self, node, argv, env, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns[node]] + argv, env=env,
                              capture_output=True, text=True, **kw)

    def close(self):
        pids = set()
        for ns in self.ns.values():
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids |= {int(p) for p in out.stdout.split()}
        pids |= {p.pid for p in self.procs}
        for pid in pids:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def traffic(w, env, count=12):
    """HTTP and UDP echo to both VIPs from the client: the records."""
    flows = []
    for vip, srcs in (("10.99.0.1", ["10.10.0.2", "10.10.0.3"]),
                      ("fd00:99::1", ["fd00:10::2", "fd00:10::3"])):
        for func, port in (("http", 80), ("udp", 7)):
            kw = f'{{"vip": "{vip}", "port": {port}, "count": {count}, "sources": {srcs!r}}}'
            p = w.run("client", [sys.executable, "-m", "userlb.lab.client", func,
                                 kw.replace("'", '"')], env, timeout=60)
            assert p.returncode == 0, p.stderr
            flows += __import__("json").loads(p.stdout)
    return flows


def wait_ready(w, env, deadline=20.0):
    end = time.monotonic() + deadline
    while True:
        p = w.run("client", [sys.executable, "-m", "userlb.lab.client", "http",
                             '{"vip": "10.99.0.1", "count": 1, "sources": ["10.10.0.2"], '
                             '"timeout": 0.5}'], env, timeout=30)
        if p.returncode == 0 and '"server"' in p.stdout:
            return
        assert time.monotonic() < end, p.stdout + p.stderr
        time.sleep(0.2)


def check(flows):
    assert flows and all("error" not in f for f in flows), [f for f in flows if "error" in f]
    assert {f["server"] for f in flows} == {"s1", "s2", "s3"}
    assert all((f["seen_client"], f["seen_port"]) == (f["client"], f["cport"]) for f in flows)


@needs_root
@pytest.mark.root
def test_containerlab_node_scripts_carry_traffic(tmp_path):
    """node.sh's roles in namespaces wired as userlb.clab.yml's links."""
    topo = clab()["topology"]
    w = Wiring(topo["nodes"])
    try:
        for link in topo["links"]:
            (a, ia), (b, ib) = (e.split(":") for e in link["endpoints"])
            w.link(a, ia, b, ib)
        env = w.env(tmp_path)
        env["ULB_RULES"] = str(CLAB / "lab.rules")
        for name, node in topo["nodes"].items():
            argv = node["cmd"].split()
            w.start(name, ["sh", str(CLAB / "node.sh")] + argv[1:], env, tmp_path / f"{name}.log")
        wait_ready(w, env)
        check(traffic(w, env))
    finally:
        w.close()


@needs_root
@pytest.mark.root
def test_kathara_startup_files_carry_traffic(tmp_path):
    """The .startup files in namespaces wired as lab.conf's collision domains."""
    devices = read_lab_conf((KATHARA / "lab.conf").read_text())
    w = Wiring(devices)
    try:
        domains = {}
        for name, opts in devices.items():
            for k, cd in opts.items():
                if k.isdigit():
                    domains.setdefault(cd, []).append((name, f"eth{k}"))
        for cd, members in domains.items():
            w.bridge(cd, members)
        env = w.env(tmp_path)
        env["ULB_RULES"] = str(KATHARA / "director/etc/userlb/lab.rules")
        for name in devices:            # Kathará's sysctls for an ipv6 device
            w.run(name, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                         "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
                         "net.ipv4.conf.default.rp_filter=0"], env, check=True)
        for name in devices:
            p = w.run(name, ["bash", str(KATHARA / f"{name}.startup")], env, timeout=30)
            assert p.returncode == 0, (name, p.stderr)
        wait_ready(w, env)
        check(traffic(w, env))
    finally:
        w.close()
