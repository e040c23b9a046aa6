"""`userlb adm` the command: its own options, local syntax checks, exit
codes and streams, as a real process (`python -m userlb.cli.main adm`)
against an in-process control server."""
import os
import subprocess
import sys
import tempfile

import pytest

from helpers.control_server import ServedDirector, lines
from userlb.cli.adm import split_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def userlb(*args, stdin="", env=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT
    e.pop("USERLB_CONTROL", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "userlb.cli.main"] + list(args), input=stdin,
                       capture_output=True, text=True, timeout=60, env=e)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def d():
    srv = ServedDirector()
    try:
        yield srv
    finally:
        srv.close()


def test_split_args():
    assert split_args(["--control", "/x", "-L", "-n"]) == ("/x", None, ["-L", "-n"])
    assert split_args(["-L", "--control=/y", "-n"]) == ("/y", None, ["-L", "-n"])
    assert split_args(["--sloppy-tcp", "on"]) == (None, {"settings": {"sloppy_tcp": True}}, [])
    assert split_args(["--sloppy-tcp=off"]) == (None, {"settings": {"sloppy_tcp": False}}, [])
    assert split_args(["--show-settings"]) == (None, {"settings": {}}, [])
    for bad in (["--control"], ["--sloppy-tcp"], ["--sloppy-tcp", "maybe"],
                ["--show-settings", "-L"]):
        with pytest.raises(ValueError):
            split_args(bad)


def test_process_round_trip_and_exit_codes(d):
    c = ["adm", "--control", d.path]
    assert userlb(*c, "-C")[0] == 0
    assert userlb(*c, "-A", "-t", "10.0.0.100:80", "-s", "mh", "-b", "mh-port") == (0, "", "")
    assert userlb(*c, "-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m", "-w", "2") == \
        (0, "", "")
    rc, out, err = userlb(*c, "-Ln")
    assert rc == 0 and err == ""
    assert lines(out)[3:] == [
        "TCP  10.0.0.100:80 mh (mh-port)",
        "  -> 10.1.0.1:80                  Masq    2      0          0         ",
    ]
    # refused by the director: 255 and ipvsadm's message on stderr
    assert userlb(*c, "-A", "-t", "10.0.0.100:80") == (255, "", "Service already exists\n")
    # syntax error: 2
    assert userlb(*c, "-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1", "-w", "-1") == \
        (2, "", "illegal weight specified\n")
    # -R from stdin, all or nothing, the bad line named
    rc, out, err = userlb(*c, "-R",
                          stdin="-A -u 10.0.0.100:53\n-a -u 10.0.0.100:54 -r 10.1.0.1 -m\n")
    assert (rc, out) == (255, "")
    assert err == "line 2: Service not defined: -a -u 10.0.0.100:54 -r 10.1.0.1 -m\n"
    saved = userlb(*c, "-S", "-n")[1]
    assert lines(saved) == ["-A -t 10.0.0.100:80 -s mh -b mh-port",
                            "-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 2"]
    # -S | -R on a clean director gives the same rules
    assert userlb(*c, "-C")[0] == 0
    assert userlb(*c, "-R", stdin=saved)[0] == 0
    assert userlb(*c, "-S", "-n")[1] == saved


def test_control_path_from_environment(d):
    rc, out, err = userlb("adm", "-L", "--timeout", env={"USERLB_CONTROL": d.path})
    assert (rc, out, err) == (0, "Timeout (tcp tcpfin udp): 900 120 300\n", "")


def test_sloppy_tcp_switch(d):
    c = ["adm", "--control", d.path]
    assert userlb(*c, "--sloppy-tcp", "on")[1].startswith("sloppy_tcp = 1\n")
    assert d.engine.sloppy_tcp is True
    assert userlb(*c, "--show-settings")[1].startswith("sloppy_tcp = 1\n")
    assert userlb(*c, "--sloppy-tcp", "off")[1].startswith("sloppy_tcp = 0\n")
    assert d.engine.sloppy_tcp is False
    assert userlb(*c, "--sloppy-tcp", "sideways")[0] == 2


def test_no_director():
    path = os.path.join(tempfile.mkdtemp(), "none.sock")
    rc, out, err = userlb("adm", "--control", path, "-L", "-n")
    assert (rc, out) == (2, "")
    assert err == f"no userlb director is listening on {path} (is `userlb run` running?)\n"
    rc, out, err = userlb("adm", "--control", path, "--sloppy-tcp", "on")
    assert rc == 2 and err.startswith("no userlb director is listening")


def test_help_version_and_syntax_need_no_director():
    path = os.path.join(tempfile.mkdtemp(), "none.sock")
    rc, out, err = userlb("adm", "--control", path, "-h")
    assert rc == 0 and "/run/userlb/control.sock" in out and "--sloppy-tcp on|off" in out
    rc, out, err = userlb("adm", "--control", path, "-v")
    assert rc == 0 and "ipvsadm v1.31" in out
    rc, out, err = userlb("adm", "--control", path, "-A", "-t", "10.0.0.1:80", "-s", "nosuch")
    assert rc == 2 and err.startswith("Scheduler not found")


def test_broken_pipe_on_stdout_is_quiet(d, monkeypatch):
    """`userlb adm -Lnc | head`: the reader goes away; no traceback."""
    import io

    from userlb.cli import adm

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    quieted = []
    monkeypatch.setattr(adm, "_quiet_stdout", lambda: quieted.append(True))
    err = io.StringIO()
    rc = adm.main(["--control", d.path, "-L", "-n"], stdout=ClosedPipe(), stderr=err)
    assert (rc, err.getvalue(), quieted) == (0, "", [True])
