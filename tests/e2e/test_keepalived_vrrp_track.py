"""keepalived's VRRP tracking `userlb run` (docs/keepalived.md, "keepalived
watching userlb"): a `vrrp_script` runs `userlb adm -L -n` on the
director's control socket every second and the `vrrp_instance` tracks it,
so a userlb that dies alone takes the VIP away from its director (FAULT
state: the backup, if any, becomes master) and a userlb started again
gives it back.  keepalived and userlb read the same file (userlb skips
`global_defs`, `vrrp_script` and `vrrp_instance`).

Real keepalived (VRRP only, its own pid files) and `userlb run` in one
network namespace of the test's own; both stopped by PID, the namespace
deleted, even on failure.  keepalived missing while running as root is a
failure, not a skip: CI runs as root after `make sysdeps`, which installs
it.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers.netns import HAVE_ROOT, HAVE_TUN, ROOT_REASON, needs_root

pytestmark = [needs_root, pytest.mark.root]

VIP = "10.99.7.1"
LIMIT = 4.0          # interval 1 s x fall 1 + the script's run + the VRRP transition


def conf_text(sock):
    check = f"{sys.executable} -m userlb.cli.main adm --control {sock} -L -n"
    return textwrap.dedent(f"""
        global_defs {{
            script_user root
            enable_script_security
        }}
        vrrp_script chk_userlb {{
            script "{check}"
            interval 1
            timeout 2
            fall 1
            rise 1
        }}
        vrrp_instance VI_TRACK {{
            state MASTER
            interface eth0
            virtual_router_id 77
            priority 150
            advert_int 1
            virtual_ipaddress {{
                {VIP}/32 dev eth0
            }}
            track_script {{
                chk_userlb
            }}
        }}
        virtual_server {VIP} 80 {{
            lb_algo mh
            protocol TCP
            real_server 10.77.0.9 80 {{
                weight 1
            }}
        }}
        """)


def sh(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic()


def stop(p):
    """SIGTERM the process group of a process we started, SIGKILL if it stays."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


@pytest.fixture
def ns(tmp_path):
    if not (HAVE_ROOT and HAVE_TUN):
        pytest.skip(ROOT_REASON)
    assert shutil.which("keepalived"), "keepalived is missing: make sysdeps (Debian keepalived)"
    name = f"ulbtrk-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    procs = []
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                    ["addr", "add", "10.77.0.1/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["link", "set", "eth1", "up"]):
            sh("ip", "-n", name, *cmd)
        yield name, tmp_path, procs
    finally:
        for p in procs:
            stop(p)
        sh("ip", "netns", "del", name, check=False)


def start(ns, argv, log):
    with open(log, "a") as f:
        return subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                                stdout=f, stderr=f, start_new_session=True)


def test_keepalived_drops_the_vip_when_userlb_dies_and_takes_it_back(ns):
    name, tmp, procs = ns
    sock, conf, ulog, klog = (str(tmp / n) for n in
                              ("control.sock", "keepalived.conf", "userlb.log", "keepalived.log"))
    with open(conf, "w") as f:
        f.write(conf_text(sock))
    userlb = [sys.executable, "-m", "userlb.cli.main", "run", "--keepalived", conf,
              "--tun", "ulbt0", "--control", sock, "--sloppy-tcp"]

    def has_vip():
        return f"{VIP}/32" in sh("ip", "-n", name, "-4", "addr", "show", "dev", "eth0").stdout

    def steered():
        return f"to {VIP} ipproto tcp dport 80" in sh("ip", "-n", name, "-4", "rule").stdout

    def log(path):
        with open(path) as f:
            return f.read()

    u = start(name, userlb, ulog)
    procs.append(u)
    wait(lambda: "ready" in log(ulog), 20, f"userlb ready\n{log(ulog)}")
    k = start(name, ["keepalived", "-n", "-l", "-D", "--vrrp", "-f", conf,
                     "-p", str(tmp / "k.pid"), "-r", str(tmp / "k-vrrp.pid"),
                     "-c", str(tmp / "k-chk.pid")], klog)
    procs.append(k)
    wait(has_vip, 15, f"keepalived master with the VIP\n{log(klog)}")
    # userlb follows the VIP keepalived added: it is steered into the device
    wait(steered, 5, "userlb's rule for the VIP")

    # userlb dies alone: the tracked script fails, keepalived gives the VIP up
    t0 = time.monotonic()
    os.killpg(u.pid, signal.SIGKILL)
    u.wait(timeout=5)
    t1 = wait(lambda: not has_vip(), 10, f"the VIP released\n{log(klog)}")
    print(f"VIP released {t1 - t0:.2f} s after userlb was killed")
    assert t1 - t0 < LIMIT, t1 - t0
    assert "FAULT" in log(klog), log(klog)
    assert k.poll() is None                     # keepalived itself still runs

    # userlb back: the script passes, keepalived is master again
    u2 = start(name, userlb, ulog)
    procs.append(u2)
    t2 = time.monotonic()
    wait(has_vip, 15, f"the VIP back\n{log(klog)}")
    print(f"VIP back {time.monotonic() - t2:.2f} s after userlb was started again")
    wait(steered, 5, "userlb's rule for the VIP again")
