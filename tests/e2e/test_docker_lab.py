"""The container lab (docker/) built and run for real, on a private Docker engine.

The module starts its own engine with `docker/lab.sh daemon-start DIR`: its own
containerd, data root, exec root, pid file and unix socket (DIR/docker.sock),
no default bridge, no iptables rules, no ip_forward change; the lab's two
networks are bridges with names unique to this run.  It builds the lab
(debootstrap base image cached in .cache/docker, wheels from the host),
sends HTTP and UDP flows from the two client containers through their
director containers (ULB_DIRECTORS=2: two directors with the same rules and
no shared state), and checks every flow against `userlb simulate` (run on the
host with the same rules file) and what the real servers saw.  `userlb adm`
in each director must count its own client's flows and not the other's.  At the end (and
after a failure: fixture finalizer) everything is removed -- containers,
networks, the engine and containerd, their directory -- and the last test
checks that nothing is left: links, routes, nft/iptables rules, mounts,
processes, /etc/docker/key.json, /run/containerd.

Needs root (apt-get, dockerd); skipped otherwise.  Measured here: about
3 minutes cold (no .cache/docker, no docker/wheels: debootstrap is most of
it; add the apt-get install of docker.io on a fresh machine), about one
minute warm.  Only one container lab per host at a time (fixed prefixes): the
module waits for LOCK.
"""
import fcntl
import importlib.util
import json
import os
import pathlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
LAB_SH = str(DOCKER_DIR / "lab.sh")
COMPOSE = str(DOCKER_DIR / "docker-compose.yml")
COMPOSE_TWO = str(DOCKER_DIR / "docker-compose.two.yml")
# one container lab at a time on a host (its prefixes are fixed); `lab.sh run-demo` takes it too
LOCK = "/run/lock/userlb-docker-lab.lock"


def _load_lab():
    spec = importlib.util.spec_from_file_location("userlb_docker_lab", DOCKER_DIR / "lab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lab = _load_lab()

IS_ROOT = os.geteuid() == 0


def run(argv, env=None, timeout=900, check=True, input=None):
    p = subprocess.run([str(a) for a in argv], env=env, timeout=timeout, text=True, input=input,
                       capture_output=True)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(map(str, argv))}: exit {p.returncode}\n"
                             f"stdout: {p.stdout[-4000:]}\nstderr: {p.stderr[-4000:]}")
    return p


# ---------------------------------------------------------------- static
def test_rules_file_is_generated_from_lab_py():
    assert (DOCKER_DIR / "lab.rules").read_text() == lab.rules_text(), \
        "docker/lab.rules is stale: python3 docker/lab.py rules > docker/lab.rules"


def test_rules_file_loads_and_covers_both_vips():
    from userlb.lab.demo import predict
    cases = [("tcp", lab.SOURCES4[0], lab.VIP4, lab.HTTP),
             ("udp", lab.SOURCES4[1], lab.VIP4, lab.UDP_ECHO),
             ("tcp", lab.SOURCES6[0], lab.VIP6, lab.HTTP),
             ("udp", lab.SOURCES6[1], lab.VIP6, lab.UDP_ECHO)]
    flows = [{"proto": p, "client": c, "cport": 40000 + i, "vip": v, "vport": port}
             for i, (p, c, v, port) in enumerate(cases)]
    dests = predict(str(DOCKER_DIR / "lab.rules"), flows)
    assert [lab.server_of(d) in {s[0] for s in lab.SERVERS} for d in dests] == [True] * 4


def test_dockerfile_base_is_a_build_argument():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=userlb-base:bookworm$", text, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert "--no-index" in text
    # the entry point is lab.py, and it knows every role the compose file uses
    assert 'ENTRYPOINT ["python3", "/opt/userlb-lab/lab.py"]' in text


# ------------------------------------------------------------ the engine
def _links():
    out = run(["ip", "-o", "link", "show"]).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _cmd(argv):
    if shutil.which(argv[0]) is None:
        return ""
    return run(argv, check=False).stdout


def snapshot():
    return {
        "links": _links(),
        "nft": _cmd(["nft", "list", "ruleset"]),
        "iptables": _cmd(["iptables", "-S"]) + _cmd(["iptables", "-t", "nat", "-S"]),
        "ip6tables": _cmd(["ip6tables", "-S"]) + _cmd(["ip6tables", "-t", "nat", "-S"]),
        "routes": [x for x in (_cmd(["ip", "route", "show", "table", "all"]) +
                               _cmd(["ip", "-6", "route", "show", "table", "all"])).splitlines()
                   if "10.98." in x or "fd00:98:" in x or "10.99." in x or "fd00:99:" in x],
        "key.json": os.path.exists("/etc/docker/key.json"),
        "run-containerd": os.path.exists("/run/containerd"),
        "ip_forward": pathlib.Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def _processes_mentioning(word):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if word in cmd:
            found.append(f"{pid}: {cmd}")
    return found


class Engine:
    """A private dockerd (+ containerd) and the lab's compose project on it."""

    def __init__(self):
        self.sfx = secrets.token_hex(3)
        # short: unix socket paths below it (ULB_TMP: another parent, e.g. if /tmp is small)
        self.dir = tempfile.mkdtemp(prefix="ulbd-", dir=os.environ.get("ULB_TMP", "/tmp"))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DOCKER_", "COMPOSE_"))}
        self.env.update(COMPOSE_PROJECT_NAME=f"ulbt{self.sfx}", ULB_BRIDGE=f"u{self.sfx}",
                        ULB_IMAGE=f"userlb-lab:t{self.sfx}", PYTHON=sys.executable,
                        ULB_DIRECTORS="2")
        self.bridges = [f"u{self.sfx}-front", f"u{self.sfx}-back"]
        self.closed = False
        self.times = {}

    def start(self):
        t = time.monotonic()
        host = run([LAB_SH, "daemon-start", self.dir], env=self.env, timeout=120).stdout.strip()
        assert host == f"unix://{self.dir}/docker.sock"
        self.env["DOCKER_HOST"] = host
        self.times["engine start"] = time.monotonic() - t

    def sh(self, *args, timeout=900, check=True):
        return run([LAB_SH] + list(args), env=self.env, timeout=timeout, check=check)

    def compose(self, *args, timeout=300, check=True):
        return run(["docker-compose", "-f", COMPOSE, "-f", COMPOSE_TWO] + list(args), env=self.env,
                   timeout=timeout, check=check)

    def close(self):
        """Idempotent; runs also after a failure (finalizer)."""
        if self.closed:
            return
        self.closed = True
        errors = []
        t = time.monotonic()
        if "DOCKER_HOST" in self.env:
            p = self.sh("down", timeout=120, check=False)
            if p.returncode:
                errors.append(f"lab.sh down: {p.stderr.strip()[-500:]}")
        p = self.sh("daemon-stop", self.dir, timeout=180, check=False)
        if p.returncode:
            errors.append(f"lab.sh daemon-stop: {p.stderr.strip()[-500:]}")
        # last resort, only for names unique to this run
        for br in self.bridges:
            if br in _links():
                errors.append(f"bridge {br} left behind (removed now)")
                run(["ip", "link", "del", br], check=False)
        self.times["teardown"] = time.monotonic() - t
        return errors


@pytest.fixture(scope="module")
def engine(request):
    if not IS_ROOT:
        pytest.skip("needs root (apt-get, dockerd, containers)")
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    lockf = open(LOCK, "a")
    request.addfinalizer(lockf.close)          # registered first: released last
    deadline = time.monotonic() + 900
    while True:
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another container lab has held {LOCK} for 15 minutes")
            time.sleep(1)
    run([LAB_SH, "deps"], timeout=600)
    clash = snapshot()["routes"]
    if clash:
        pytest.fail("the host already routes the lab's prefixes (10.98/16, fd00:98::/32, VIPs) -- "
                    "another container lab up?\n" + "\n".join(clash))
    eng = Engine()
    eng.before = snapshot()
    request.addfinalizer(eng.close)
    eng.start()
    return eng


@pytest.fixture(scope="module")
def lab_up(engine):
    t = time.monotonic()
    engine.sh("up", timeout=900)
    engine.times["lab.sh up (prepare + compose up + ready)"] = time.monotonic() - t
    return engine


CLIENTS = {"1": "client", "2": "client2"}
DIRECTORS = {"1": "director", "2": "director2"}


@pytest.fixture(scope="module")
def all_flows(lab_up):
    """{client number: flow records}: 120 HTTP + 48 UDP flows from each client."""
    out = {}
    for n, svc in CLIENTS.items():
        p = lab_up.compose("exec", "-T", svc, "python3", "/opt/userlb-lab/lab.py",
                           "traffic", "--requests", "120", "--udp", "48")
        out[n] = json.loads(p.stdout)
    return out


@pytest.fixture(params=sorted(CLIENTS))
def flows(request, all_flows):
    return all_flows[request.param]


def _ep(addr, port):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _addrs(svc, net):
    """A compose service's (IPv4, IPv6) address on network net."""
    return svc["networks"][net]["ipv4_address"], svc["networks"][net]["ipv6_address"]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1200)
def test_compose_config(engine):
    """The resolved compose file: roles, capabilities, device, sysctls and
    addresses as lab.py (and lab.rules) expect them."""
    text = engine.compose("config", timeout=60).stdout
    cfg = json.loads(run(["/usr/bin/python3", "-c",
                          "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                         input=text).stdout)
    svcs = cfg["services"]
    assert set(svcs) == {"director", "director2", "s1", "s2", "s3", "client", "client2"}
    images = {s["image"] for s in svcs.values()}
    assert images == {engine.env["ULB_IMAGE"]}
    assert [n for n, s in svcs.items() if "build" in s] == ["director"]
    assert svcs["director"]["build"]["args"]["BASE"] == "userlb-base:bookworm"
    for n, (front, back) in lab.DIRECTORS.items():
        d = svcs[DIRECTORS[n]]
        assert d["command"] == (["director"] if n == "1" else ["director", n])
        assert "NET_ADMIN" in d["cap_add"]
        assert any(dev.split(":")[0] == "/dev/net/tun" for dev in d["devices"])
        assert str(d["sysctls"]["net.ipv4.ip_forward"]) == "1"
        assert str(d["sysctls"]["net.ipv6.conf.all.forwarding"]) == "1"
        assert str(d["sysctls"]["net.ipv4.conf.default.rp_filter"]) == "0"
        assert _addrs(d, "front") == front
        assert _addrs(d, "back") == back
    for name, a4, a6 in lab.SERVERS:
        s = svcs[name]
        assert s["command"] == ["server", name]
        assert "NET_ADMIN" in s["cap_add"]
        assert set(s["networks"]) == {"back"}
        assert _addrs(s, "back") == (a4, a6)
    for n, (addr, _s4, _s6, _gw) in lab.CLIENTS.items():
        c = svcs[CLIENTS[n]]
        assert c["command"] == (["client"] if n == "1" else ["client", n])
        assert c.get("environment", {}).get("ULB_CLIENT", "1") == n
        assert set(c["networks"]) == {"front"}
        assert _addrs(c, "front") == addr
    nets = cfg["networks"]
    assert [x["subnet"] for x in nets["front"]["ipam"]["config"]] == [lab.FRONT4, lab.FRONT6]
    assert [x["subnet"] for x in nets["back"]["ipam"]["config"]] == [lab.BACK4, lab.BACK6]
    bridge = "com.docker.network.bridge.name"
    assert [nets[n]["driver_opts"][bridge] for n in ("front", "back")] == engine.bridges


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1200)
def test_flows_reach_the_servers_simulate_predicts(flows):
    from userlb.lab.demo import predict
    failed = [f for f in flows if "error" in f]
    assert not failed, failed[:5]
    groups = {(f["proto"], ":" in f["vip"]) for f in flows}
    assert groups == {("tcp", False), ("tcp", True), ("udp", False), ("udp", True)}
    assert len(flows) == 168
    n = next(k for k, v in lab.CLIENTS.items() if flows[0]["client"] in v[1])
    assert {f["client"] for f in flows} == set(lab.CLIENTS[n][1] + lab.CLIENTS[n][2])
    predicted = predict(str(DOCKER_DIR / "lab.rules"), flows)
    wrong = [(f["proto"], _ep(f["client"], f["cport"]), _ep(f["vip"], f["vport"]), f["server"], d)
             for f, d in zip(flows, predicted, strict=False) if lab.server_of(d) != f["server"]]
    assert not wrong, wrong[:10]


@pytest.mark.slow
@pytest.mark.root
def test_real_servers_see_the_client_address_and_port(flows):
    seen = [(f["client"], f["cport"], f["seen_client"], f["seen_port"]) for f in flows
            if (f["seen_client"], f["seen_port"]) != (f["client"], f["cport"])]
    assert not seen, seen[:10]
    # replies came from the VIP (UDP: the socket is not connected, so this is checked)
    udp = [f for f in flows if f["proto"] == "udp"]
    assert {(f["reply_from"], f["reply_port"]) for f in udp} == {(lab.VIP4, lab.UDP_ECHO),
                                                                 (lab.VIP6, lab.UDP_ECHO)}
    assert all(f["intact"] for f in udp)


def _adm_conns(text):
    """`-L -n --stats` -> {(service, dest): conns}, dest None for the service line."""
    out = {}
    svc = None
    for line in text.splitlines():
        m = re.match(r"^(TCP|UDP)\s+(\S+)\s+(\d+)", line)
        if m:
            svc = (m.group(1).lower(), m.group(2))
            out[(svc, None)] = int(m.group(3))
            continue
        m = re.match(r"^\s+->\s+(\S+)\s+(\d+)", line)
        if m and svc:
            out[(svc, m.group(1))] = int(m.group(2))
    return out


def _per_dest(flows):
    names = {s[0]: s for s in lab.SERVERS}
    per = {}
    for f in flows:
        _n, a4, a6 = names[f["server"]]
        svc = (f["proto"], _ep(f["vip"], f["vport"]))
        for k in ((svc, _ep(a6 if ":" in f["vip"] else a4, f["vport"])), (svc, None)):
            per[k] = per.get(k, 0) + 1
    return per


@pytest.mark.slow
@pytest.mark.root
def test_adm_stats_in_each_director_count_its_own_clients_flows(lab_up, all_flows):
    for n, svc in DIRECTORS.items():
        p = lab_up.compose("exec", "-T", svc, "userlb", "adm", "-L", "-n", "--stats", check=False)
        assert p.returncode == 0, f"userlb adm -L -n --stats in {svc}: {p.stderr}"
        conns = _adm_conns(p.stdout)
        mine = _per_dest(all_flows[n])
        other = _per_dest(all_flows["2" if n == "1" else "1"])
        # every flow of its client is counted on its service and destination (a few
        # more may be: the readiness probes), and none of the other client's
        missing = [k for k in mine if k not in conns]
        assert not missing, (svc, missing, p.stdout)
        short = {k: (want, conns[k]) for k, want in mine.items() if conns[k] < want}
        assert not short, (svc, short)
        extra = {k: (want, conns[k]) for k, want in mine.items()
                 if k[1] is None and conns[k] >= want + other.get(k, 0)}
        assert not extra, (svc, "counts the other client's flows", extra)


@pytest.mark.slow
@pytest.mark.root
def test_demo_prints_distribution_and_stats(lab_up):
    p = lab_up.sh("demo", "--requests", "30", "--udp", "12", timeout=300)
    out = p.stdout
    assert out.count("answered: 42/42, as `userlb simulate` predicts: 42") == 2, out
    assert "through director 1" in out and "through director 2" in out
    for name, a4, _a6 in lab.SERVERS:
        assert re.search(rf"^{name}\s+\d+/\d+", out, re.M), out
        assert f"-> {a4}:80" in out, out        # the adm listing
    assert "director: userlb adm -L -n --stats" in out
    assert "director2: userlb adm -L -n --stats" in out


@pytest.mark.slow
@pytest.mark.root
def test_teardown_leaves_nothing(engine):
    """Last test of the module: remove the lab and the engine, then compare."""
    errors = engine.close()
    after = snapshot()
    assert not errors, errors
    assert not os.path.exists(engine.dir)
    assert not _processes_mentioning(engine.dir)
    assert not [x for x in pathlib.Path("/proc/self/mounts").read_text().splitlines()
                if engine.dir in x]
    new_links = {n for n in after["links"] - engine.before["links"]
                 if n.startswith(("veth", "br-", "docker", f"u{engine.sfx}"))}
    assert not new_links
    for key in ("nft", "iptables", "ip6tables", "routes", "key.json", "run-containerd",
                "ip_forward"):
        assert after[key] == engine.before[key], key
    print("timings (s):", json.dumps({k: round(v, 1) for k, v in engine.times.items()}))
