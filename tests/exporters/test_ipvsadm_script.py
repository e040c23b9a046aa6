"""The `ipvsadm` console script (userlb/cli/ipvsadm_main.py) and
`userlb ipvsadm-shim`.

* Parse errors, exit codes, the no-director message: compared with the real
  ipvsadm 1.31 (Debian's /sbin/ipvsadm, installed with ldirectord by `make
  sysdeps`).  The real binary initialises IPVS before it parses, so it runs
  under a small LD_PRELOAD library (compiled here with gcc) that answers
  IPVS's getsockopt(IP_VS_SO_GET_INFO) as a kernel with an empty table would;
  the comparisons are of messages printed before any command reaches the kernel.
* Commands and listings through the script against a served director.
* install/remove on a tree made for the test (`--root`): dpkg-divert moves
  the real binary aside and puts it back byte for byte.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers.control_server import ServedDirector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROG = "/sbin/ipvsadm"

FAKE_IPVS_C = r"""
#define _GNU_SOURCE
#include <sys/socket.h>
#include <string.h>
#include <errno.h>
#include <dlfcn.h>
/* IP_VS_BASE_CTL = 64 + 1024 + 64; GET_INFO = BASE + 1 */
int getsockopt(int fd, int level, int opt, void *val, socklen_t *len) {
  if (level == 0 && opt == 1153) {
    unsigned int *p = val; p[0] = 0x010201; p[1] = 4096; p[2] = 0; return 0;
  }
  if (level == 0 && opt >= 1152 && opt < 1152 + 64) { errno = ENOSYS; return -1; }
  int (*real)(int, int, int, void *, socklen_t *) = dlsym(RTLD_NEXT, "getsockopt");
  return real(fd, level, opt, val, len);
}
int setsockopt(int fd, int level, int opt, const void *val, socklen_t len) {
  if (level == 0 && opt >= 1152 && opt < 1152 + 64) { errno = ENOSYS; return -1; }
  int (*real)(int, int, int, const void *, socklen_t) = dlsym(RTLD_NEXT, "setsockopt");
  return real(fd, level, opt, val, len);
}
"""

#: argument vectors refused before the kernel is asked (exit 2 or 255)
SYNTAX_CASES = [
    "--foo", "-p 5", "-n -L", "-nL", "-t 1.2.3.4:80 -A", "-Q",
    "-L --foo", "-L -n --foo=3", "-A -t", "-e -t 1.2.3.4:80 -r 1.1.1.1:80 -w",
    "-L -L", "-AE -t 1.2.3.4:80", "-A --edit-service -t 1.2.3.4:80",
    "-A -t 1.2.3.4", "-A -t 1.2.3.4:80 -w 3", "-A", "-a -t 1.2.3.4:80",
    "-a -t 1.2.3.4:80 -r 10.0.0.1 -w x", "-a -t 1.2.3.4:80 -r 10.0.0.1 -w -1",
    "-A -t 1.2.3.4:80 -p 0", "-A -t 1.2.3.4:80 -p 99999999",
    "-A -t 1.2.3.4:80 -t 1.2.3.4:81", "-A -t 300.2.3.4:80", "-A -t 1.2.3.4:99999",
    "-A -t 1.2.3.4:80 -o", "-L -n -x 3", "-L -c --stats", "-D", "-Z -t 1.2.3.4:80 -r 1.1.1.1",
    "--set 1 2", "-A -t ::1:80", "-A -t 1.2.3.4:80 -b nope",
    "-A -t 1.2.3.4:80 -s rr -b sh-port", "-A -t 1.2.3.4:80 -s rr 5",
    "-a -t 1.2.3.4:80 -r 10.0.0.1 -x -1", "-a -t 1.2.3.4:80 -r 10.0.0.1 -w 2147483648",
]


def _real_ipvsadm():
    """(argv prefix, env) running the real ipvsadm with the fake IPVS, or a
    skip reason."""
    if not os.path.isfile(PROG) or b"userlb ipvsadm shim" in open(PROG, "rb").read(256):
        return None, f"the real ipvsadm is not at {PROG} (make sysdeps installs it)"
    if shutil.which("gcc") is None:
        return None, "needs gcc (to build the fake-IPVS preload library)"
    d = tempfile.mkdtemp(prefix="ulb-fakeipvs-")
    src = os.path.join(d, "fake.c")
    with open(src, "w") as f:
        f.write(FAKE_IPVS_C)
    lib = os.path.join(d, "fake.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src, "-ldl"], check=True)
    return lib, None


@pytest.fixture(scope="module")
def fake_lib():
    lib, why = _real_ipvsadm()
    if lib is None:
        pytest.skip(why)
    yield lib
    shutil.rmtree(os.path.dirname(lib), ignore_errors=True)


@pytest.fixture(scope="module")
def d():
    srv = ServedDirector()
    try:
        yield srv
    finally:
        srv.close()


def ours(words, control, stdin=""):
    env = dict(os.environ, PYTHONPATH=ROOT, USERLB_CONTROL=control,
               USERLB_IPVSADM_ARGV0=PROG)
    return subprocess.run([sys.executable, "-m", "userlb.cli.ipvsadm_main", *words],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)


def real(words, lib):
    env = dict(os.environ, LD_PRELOAD=lib)
    return subprocess.run([PROG, *words], capture_output=True, text=True, env=env, timeout=60)


def test_syntax_errors_as_ipvsadm_1_31(fake_lib, d):
    v = subprocess.run([PROG, "-v"], capture_output=True, text=True,
                       env=dict(os.environ, LD_PRELOAD=fake_lib))
    assert v.stdout.startswith("ipvsadm v1.31 "), v.stdout
    mismatches = []
    for case in SYNTAX_CASES:
        w = case.split()
        r, u = real(w, fake_lib), ours(w, d.path)
        assert r.returncode in (2, 255), (case, r.returncode, r.stderr)
        if (r.returncode, r.stdout, r.stderr) != (u.returncode, u.stdout, u.stderr):
            mismatches.append((case, r.returncode, r.stderr, u.returncode, u.stderr))
    assert mismatches == []


def test_no_director_is_no_ipvs_module(fake_lib):
    """Without a director: the message and status of ipvsadm without IPVS
    (the real one's, measured without the preload), plus one line for userlb."""
    r = subprocess.run([PROG, "-L", "-n"], capture_output=True, text=True)
    u = ours(["-L", "-n"], "/nonexistent/control.sock")
    assert r.returncode == u.returncode == 2
    assert r.stderr.startswith("Can't initialize ipvs: Protocol not available\n"
                               "Are you sure that IP Virtual Server is built in the kernel "
                               "or as module?\n")
    first_two = "".join(u.stderr.splitlines(keepends=True)[:2])
    assert first_two == r.stderr
    assert "/nonexistent/control.sock" in u.stderr.splitlines()[2]


def test_weights_and_thresholds_go_to_the_director_as_in_ipvsadm(fake_lib, d):
    """ipvsadm 1.31 parses -w up to INT_MAX and -y above -x; the kernel takes
    the weight and refuses the thresholds (ERANGE).  The real one, with the
    fake IPVS, gets past its parser (the kernel call fails with ENOSYS);
    ours reaches the director, which does what the kernel does."""
    c = d.path
    assert ours(["-C"], c).returncode == 0
    assert ours(["-A", "-t", "10.0.0.100:80", "-s", "wrr"], c).returncode == 0
    for case in ("-w 70000", "-w 2147483647", "-x 5 -y 10"):
        r = real(["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", *case.split()],
                 fake_lib)
        assert (r.returncode, r.stderr) == (255, "Function not implemented\n"), (case, r)
    u = ours(["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", "-w", "70000"], c)
    assert u.returncode == 0, u.stderr
    u = ours(["-e", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", "-x", "5", "-y", "10"], c)
    assert u.returncode == 255
    assert u.stderr.startswith("Numerical result out of range"), u.stderr
    assert "  -> 10.1.0.1:80                  Masq    70000  0          0" in d.ok("-L", "-n")
    assert ours(["-C"], c).returncode == 0


def test_commands_and_listing(d):
    c = d.path
    assert ours(["-C"], c).returncode == 0
    assert ours(["-A", "-t", "10.0.0.100:80", "-s", "rr"], c).returncode == 0
    assert ours(["-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", "-w", "2"],
                c).returncode == 0
    again = ours(["-A", "-t", "10.0.0.100:80", "-s", "rr"], c)
    assert (again.returncode, again.stderr) == (255, "Service already exists\n")
    out = ours(["-L", "-n"], c)
    assert out.returncode == 0 and out.stdout == d.ok("-L", "-n")
    assert out.stdout.splitlines()[3:] == [
        "TCP  10.0.0.100:80 rr",
        "  -> 10.1.0.1:80                  Masq    2      0          0         "]
    for opts in (["--stats"], ["--rate"], ["--thresholds"], ["--persistent-conn"],
                 ["--timeout"], ["-c"]):
        assert ours(["-L", "-n", *opts], c).stdout == d.ok("-L", "-n", *opts)
    assert ours(["-S", "-n"], c).stdout == d.ok("-S", "-n")
    rules = d.ok("-S", "-n")
    assert ours(["-C"], c).returncode == 0
    assert ours(["-R"], c, stdin=rules).returncode == 0
    assert d.ok("-S", "-n") == rules


def test_version_and_help_name_userlb():
    v = ours(["-v"], "/nonexistent")
    assert v.returncode == 0 and v.stdout.startswith("ipvsadm v1.31 ") and "userlb" in v.stdout
    h = ours(["-h"], "/nonexistent")
    assert h.returncode == 0 and f"{PROG} -A|E virtual-service" in h.stdout


# ------------------------------------------------------------------ the shim
def _fake_root(tmp):
    """A tree with a merged /usr, the real ipvsadm in usr/sbin and a dpkg
    database in which the ipvsadm package owns /sbin/ipvsadm."""
    os.makedirs(os.path.join(tmp, "usr/sbin"))
    os.symlink("usr/sbin", os.path.join(tmp, "sbin"))
    admin = os.path.join(tmp, "var/lib/dpkg")
    os.makedirs(os.path.join(admin, "info"))
    os.makedirs(os.path.join(admin, "updates"))
    with open(os.path.join(admin, "status"), "w") as f:
        f.write("Package: ipvsadm\nStatus: install ok installed\nVersion: 1:1.31-1\n"
                "Architecture: amd64\nMaintainer: nobody\nDescription: test\n\n")
    with open(os.path.join(admin, "info/ipvsadm.list"), "w") as f:
        f.write("/sbin/ipvsadm\n")
    open(os.path.join(admin, "diversions"), "w").close()
    binary = os.path.join(tmp, "usr/sbin/ipvsadm")
    with open(binary, "wb") as f:
        f.write(b"\x7fELF not really ipvsadm\n" + os.urandom(64))
    os.chmod(binary, 0o751)
    return binary


def _state(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), st.st_mode, st.st_mtime_ns


def shim(*args):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", "ipvsadm-shim", *args],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.skipif(shutil.which("dpkg-divert") is None, reason="needs dpkg-divert")
def test_shim_install_remove_with_dpkg_divert():
    tmp = tempfile.mkdtemp(prefix="ulb-shimroot-")
    try:
        binary = _fake_root(tmp)
        before = _state(binary)
        p = shim("install", "--root", tmp, "--control", "/x/control.sock")
        assert p.returncode == 0, p.stderr
        assert "diverted to /sbin/ipvsadm.distrib" in p.stdout
        assert _state(os.path.join(tmp, "usr/sbin/ipvsadm.distrib")) == before
        lst = subprocess.run(["dpkg-divert", "--root", tmp, "--list"], capture_output=True,
                             text=True).stdout
        assert lst.strip() == "local diversion of /sbin/ipvsadm to /sbin/ipvsadm.distrib"
        # the shim runs userlb's ipvsadm (no director at /x: ipvsadm's message)
        r = subprocess.run([binary, "-L", "-n"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=""))
        assert r.returncode == 2 and r.stderr.startswith("Can't initialize ipvs:")
        assert "/x/control.sock" in r.stderr
        assert shim("install", "--root", tmp).returncode == 0       # idempotent
        assert shim("status", "--root", tmp).stdout == "/sbin/ipvsadm: userlb shim\n"
        p = shim("remove", "--root", tmp)
        assert p.returncode == 0, p.stderr
        assert _state(binary) == before
        assert sorted(os.listdir(os.path.join(tmp, "usr/sbin"))) == ["ipvsadm"]
        assert subprocess.run(["dpkg-divert", "--root", tmp, "--list"], capture_output=True,
                              text=True).stdout == ""
        assert shim("remove", "--root", tmp).stdout == \
            "/sbin/ipvsadm: not userlb's shim, left alone\n"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_shim_without_package_renames():
    tmp = tempfile.mkdtemp(prefix="ulb-shimroot-")
    try:
        os.makedirs(os.path.join(tmp, "sbin"))
        os.makedirs(os.path.join(tmp, "usr/sbin"))
        binary = os.path.join(tmp, "sbin/ipvsadm")
        with open(binary, "w") as f:
            f.write("#!/bin/sh\necho local build\n")
        os.chmod(binary, 0o700)
        before = _state(binary)
        assert shim("install", "--root", tmp).returncode == 0
        assert os.path.exists(binary + ".userlb-orig")
        assert shim("status", "--root", tmp).stdout == ("/sbin/ipvsadm: userlb shim\n"
                                                        "/usr/sbin/ipvsadm: userlb shim\n")
        assert shim("remove", "--root", tmp).returncode == 0
        assert _state(binary) == before
        assert os.listdir(os.path.join(tmp, "usr/sbin")) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_bind_refused_in_the_host_namespace():
    if os.path.exists("/proc/1/ns/mnt") and \
            os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt"):
        pytest.skip("this test process is already in a private mount namespace")
    p = shim("install", "--bind")
    assert p.returncode == 1 and "private mount namespace" in p.stderr


# ------------------------------------------------------- names without -n
def test_listing_without_n_prints_names(d):
    from userlb.cli.ipvsadm_main import name_listing
    hosts = {"10.1.0.1": "web-1.example", "10.1.0.2": "a-very-long-host-name.example.org"}
    kw = {"resolve": hosts.get,
          "service": lambda port, proto: {(80, "tcp"): "http", (53, "udp"): "domain"}.get(
              (port, proto))}
    text = (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.0.0.100:80 rr\n"
        "  -> 10.1.0.1:80                  Masq    1      0          0         \n"
        "  -> 10.1.0.2:8080                Masq    1      0          0         \n"
        "UDP  [2001:db8::1]:53 rr\n")
    assert name_listing(text, False, **kw).splitlines()[3:] == [
        "TCP  10.0.0.100:http rr",
        "  -> web-1.example:http           Masq    1      0          0         ",
        # ipvsadm cuts an IPv4 destination's name at 28 characters
        "  -> a-very-long-host-name.exampl Masq    1      0          0         ",
        "UDP  [2001:db8::1]:domain rr"]
    stats = ("TCP  10.0.0.100:80                       0        0        0        0        0\n"
             "  -> 10.1.0.1:80                         1        2        3        4        5\n")
    assert name_listing(stats, False, pad33=True, **kw).splitlines() == [
        "TCP  10.0.0.100:http                     0        0        0        0        0",
        "  -> web-1.example:http                  1        2        3        4        5"]
    rules = "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 1\n"
    assert name_listing(rules, True, **kw) == (
        "-A -t 10.0.0.100:http -s rr\n-a -t 10.0.0.100:http -r web-1.example:http -m -w 1\n")
    # through the script against the director: -L without -n names the port
    c = d.path
    ours(["-C"], c)
    assert ours(["-A", "-t", "10.0.0.100:80", "-s", "rr"], c).returncode == 0
    out = ours(["-L"], c).stdout
    assert "TCP  10.0.0.100:http rr" in out.splitlines()
    # -L -c: the source, virtual and destination columns
    from userlb.cli.ipvsadm_main import name_connections
    conns = ("IPVS connection entries\n"
             "pro expire state       source             virtual            destination\n"
             "TCP 14:59  ESTABLISHED 10.9.0.1:40000     10.0.0.100:80      10.1.0.1:80\n"
             "UDP 04:58  UDP         10.9.0.1:5353      10.0.0.100:53      10.1.0.2:53\n")
    assert name_connections(conns, **kw).splitlines() == conns.splitlines()[:2] + [
        "TCP 14:59  ESTABLISHED 10.9.0.1:40000     10.0.0.100:http    web-1.example:http",
        "UDP 04:58  UDP         10.9.0.1:5353      10.0.0.100:domain  "
        "a-very-long-host-name.example.org:domain"]
    assert ours(["-L", "-c"], c).stdout.splitlines()[:2] == conns.splitlines()[:2]
    assert ours(["-L", "-n"], c).stdout.splitlines()[3] == "TCP  10.0.0.100:80 rr"
