"""`userlb announce` from the command line: --dry-run/--once, --exit-code,
and bad options refused with a message (no traceback)."""
import subprocess
import sys


def announce(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", "announce", *args],
                          input=stdin, capture_output=True, text=True, timeout=30)


def test_dry_run_once_with_no_director_prints_nothing_and_says_why(tmp_path):
    p = announce("--dry-run", "--once", "--control", str(tmp_path / "c.sock"),
                 "--also", "10.10.0.0/24")
    assert p.returncode == 0 and p.stdout == ""
    assert "not announcing 10.10.0.0/24: director not fit: userlb run is not running" in p.stderr


def test_exit_code_without_director(tmp_path):
    p = announce("--exit-code", "--control", str(tmp_path / "c.sock"))
    assert p.returncode == 1 and p.stdout.startswith("not fit: userlb run is not running")


def test_exabgp_gone_ends_it(tmp_path):
    """Under ExaBGP: the end of stdin (ExaBGP gone) ends the process."""
    p = announce("--control", str(tmp_path / "c.sock"), "--interval", "0.1", stdin="")
    assert p.returncode == 0 and "closed our stdin" in p.stderr
    assert p.stdout.splitlines()[0] == "clear adj-rib out"


def test_bad_options():
    for args, words in ((["--interval", "0"], "above 0"), (["--rise", "0"], "at least 1"),
                        (["--community", "1:99999"], "0..65535"),
                        (["--med", "10.99.0.1=x"], "med"), (["--also", "10.1.1.1/8"], "host bits"),
                        (["--next-hop", "router"], "--next-hop")):
        p = announce(*args)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, args
