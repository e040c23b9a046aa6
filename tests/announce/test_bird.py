"""`userlb bird-config` (userlb/announce/bird.py, userlb/cli/bird_config.py):
the snippet is accepted by BIRD 2's own parser (`bird -p`), the health loop
by `sh -n`, and bad input is refused with a message."""
import subprocess
import sys

from userlb.announce import bird

RULES = "-A -t 10.99.0.1:80 -s mh\n-A -t [fd00:99::1]:80 -s mh\n-A -u 10.99.0.2:53 -s rr\n"


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", "bird-config", *args],
                          capture_output=True, text=True, timeout=30, **kw)


def bird_parses(tmp_path, text, fams=("4", "6")):
    (tmp_path / "userlb.conf").write_text(text)
    sessions = {"4": "neighbor 192.0.2.1 as 65000; ipv4 { import none; "
                     "export filter userlb_export4; next hop self; };",
                "6": "neighbor 2001:db8::1 as 65000; ipv6 { import none; "
                     "export filter userlb_export6; next hop self; };"}
    conf = ["router id 10.0.0.1;", "protocol device {}",
            f'include "{tmp_path / "userlb.conf"}";']
    conf += [f"protocol bgp r{f} {{ local as 65001; {sessions[f]} }}" for f in fams]
    (tmp_path / "bird.conf").write_text("\n".join(conf) + "\n")
    return subprocess.run(["bird", "-p", "-c", str(tmp_path / "bird.conf")],
                          capture_output=True, text=True, timeout=30)


def test_snippet_from_a_rules_file_parses_in_bird(tmp_path):
    (tmp_path / "r.conf").write_text(RULES)
    p = cli("--rules", str(tmp_path / "r.conf"), "--tun", "ulb0")
    assert p.returncode == 0, p.stderr
    assert "define USERLB_VIPS4 = [ 10.99.0.1/32, 10.99.0.2/32 ];" in p.stdout
    assert 'route fd00:99::1/128 via "ulb0";' in p.stdout and "check link on;" in p.stdout
    r = bird_parses(tmp_path, p.stdout)
    assert r.returncode == 0, r.stderr + r.stdout


def test_one_family_only_and_no_vips(tmp_path):
    text = bird.snippet(["10.99.0.1/32"], "userlb0", "--vip")
    assert "userlb_vips6" not in text
    assert bird_parses(tmp_path, text, fams=("4",)).returncode == 0
    assert "has no VIPs" in bird.snippet([], "userlb0", "x")


def test_health_loop_is_valid_shell():
    p = cli("--vip", "10.99.0.1", "--vip", "fd00:99::1", "--health-loop", "--rise", "2")
    assert p.returncode == 0, p.stderr
    assert "userlb announce --exit-code" in p.stdout and '"$fit" -ge 2' in p.stdout
    assert "userlb_vips4 userlb_vips6" in p.stdout
    assert subprocess.run(["sh", "-n"], input=p.stdout, text=True).returncode == 0


def test_bad_input_is_refused(tmp_path):
    (tmp_path / "bad.conf").write_text("-A -t 10.99.0.1:80 -s mh\n-A -t nonsense\n")
    p = cli("--rules", str(tmp_path / "bad.conf"))
    assert p.returncode == 1 and "bad.conf" in p.stderr and "line 2" in p.stderr
    assert p.stdout == ""
    p = cli("--vip", "10.99.0")
    assert p.returncode == 2 and "--vip" in p.stderr
    p = cli("--control", str(tmp_path / "none.sock"))
    assert p.returncode == 1 and "no answer from a director" in p.stderr
    p = cli("--rules", str(tmp_path / "missing.conf"))
    assert p.returncode == 1 and "missing.conf" in p.stderr
