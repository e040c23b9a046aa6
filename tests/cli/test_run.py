"""`userlb run` (userlb/cli/run.py) without a device: refusing unusable
configuration files (the SIGHUP reload's difference: tests/control/test_diff.py)."""
import subprocess
import sys


def _run(argv):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", "run"] + argv,
                          capture_output=True, text=True, timeout=60)


def test_unreadable_config_is_refused(tmp_path):
    p = _run(["--config", str(tmp_path / "missing.conf"), "--tun", "ulbnone"])
    assert p.returncode == 1
    assert "cannot read" in p.stderr and "missing.conf" in p.stderr


def test_bad_config_is_refused_with_its_line(tmp_path):
    f = tmp_path / "bad.conf"
    f.write_text("-A -t 10.99.0.1:80 -s mh\n-a -t 10.99.0.1:80 -r 10.20.0.11 -m -w x\n")
    p = _run(["--config", str(f), "--tun", "ulbnone"])
    assert p.returncode == 1
    assert "line 2" in p.stderr and str(f) in p.stderr


def test_bad_reply_prefix_is_refused(tmp_path):
    p = _run(["--reply-from", "10.20.0.0/99", "--tun", "ulbnone"])
    assert p.returncode == 2 and "--reply-from" in p.stderr


def test_bad_max_entries_is_refused():
    for bad in ("0", "100000001"):
        p = _run(["--max-entries", bad, "--tun", "ulbnone"])
        assert p.returncode == 2 and "--max-entries" in p.stderr, p.stderr


def test_help_documents_the_signals():
    p = _run(["--help"])
    assert p.returncode == 0
    for word in ("SIGHUP", "SIGTERM", "SIGUSR1", "--control", "--sloppy-tcp", "--no-routes"):
        assert word in p.stdout


def test_log_format_json_and_level():
    import json
    p = _run(["--log-format", "json", "--max-entries", "0", "--tun", "ulbnone"])
    assert p.returncode == 2
    rec = json.loads(p.stderr.strip().splitlines()[-1])
    assert rec["level"] == "info" and rec["prog"] == "userlb run"
    assert "--max-entries" in rec["msg"] and rec["time"].endswith("Z")
    p = _run(["--log-level", "error", "--max-entries", "0", "--tun", "ulbnone"])
    assert p.returncode == 2 and p.stderr == ""          # an info line, filtered out
