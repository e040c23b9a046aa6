"""ipvsadm 1.31's output for direct routing and tunnel destinations: the
Forward column (Route, Tunnel), -L --tun-info, -S (and -R of it), --stats."""
from userlb.control import listing
from userlb.control.config import Config

RULES = """\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.1:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.2 -w 2
-a -t 10.0.0.100:80 -r 10.1.0.3:8080 -i -w 3
-a -t 10.0.0.100:80 -r 10.1.0.4 -i --tun-type gue --tun-port 6080 --tun-csum
-a -t 10.0.0.100:80 -r 10.1.0.5 -i --tun-type gue --tun-port 6081 --tun-remcsum
-a -t 10.0.0.100:80 -r 10.1.0.6 -i --tun-type gre --tun-nocsum
-a -t 10.0.0.100:80 -r 10.1.0.7 -i --tun-type gre --tun-csum
-a -t 10.0.0.100:80 -r [2001:db8::8]:80 -i
"""


def cfg():
    c = Config()
    c.load_rules(RULES)
    return c


def test_forward_column():
    lines = listing.list_all(cfg(), numeric=True).splitlines()
    rows = {ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("  -> ") and
            "RemoteAddress" not in ln}
    assert rows == {"10.1.0.1:80": "Masq", "10.1.0.2:80": "Route", "10.1.0.3:80": "Tunnel",
                    "10.1.0.4:80": "Tunnel", "10.1.0.5:80": "Tunnel", "10.1.0.6:80": "Tunnel",
                    "10.1.0.7:80": "Tunnel", "[2001:db8::8]:80": "Tunnel"}
    assert "  -> 10.1.0.2:80                  Route   2      0          0         " in lines


def test_tun_info():
    text = listing.list_all(cfg(), numeric=True, tun_info=True)
    lines = text.splitlines()
    assert ("  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
            "InActConn") in lines
    want = {"10.1.0.1:80": "n/a", "10.1.0.2:80": "n/a", "10.1.0.3:80": "ipip",
            "10.1.0.4:80": "gue:6080:+c", "10.1.0.5:80": "gue:6081:r+c",
            "10.1.0.6:80": "gre:-c", "10.1.0.7:80": "gre:+c", "[2001:db8::8]:80": "ipip"}
    for addr, info in want.items():
        line = [ln for ln in lines if ln.startswith(f"  -> {addr} ")][0]
        # "  -> %-28s %-7s %-13s %-6d %-10u %-10u"
        assert line[5 + 28 + 1 + 7 + 1:5 + 28 + 1 + 7 + 1 + 13].rstrip() == info


def test_save_and_restore():
    c = cfg()
    saved = listing.save_lines(c)
    assert "-a -t 10.0.0.100:80 -r 10.1.0.2:80 -g -w 2" in saved
    assert "-a -t 10.0.0.100:80 -r 10.1.0.3:80 -i -w 3 --tun-type ipip" in saved
    assert ("-a -t 10.0.0.100:80 -r 10.1.0.4:80 -i -w 1 --tun-type gue --tun-port 6080 "
            "--tun-csum") in saved
    assert ("-a -t 10.0.0.100:80 -r 10.1.0.5:80 -i -w 1 --tun-type gue --tun-port 6081 "
            "--tun-remcsum") in saved
    assert "-a -t 10.0.0.100:80 -r 10.1.0.6:80 -i -w 1 --tun-type gre --tun-nocsum" in saved
    assert "-a -t 10.0.0.100:80 -r 10.1.0.7:80 -i -w 1 --tun-type gre --tun-csum" in saved
    again = Config()
    again.load_rules("\n".join(saved) + "\n")
    assert listing.save_lines(again) == saved
    d = {x.addr: x for x in again.services[next(iter(again.services))].dests}
    assert sorted(x.tun for x in d.values()) == sorted(
        x.tun for x in c.services[next(iter(c.services))].dests)


def test_stats_columns():
    text = listing.list_all(cfg(), numeric=True, stats=True)
    assert "  -> 10.1.0.2:80                         0        0        0        0        0" \
        in text.splitlines()


def test_reload_diff_changes_tunnel_options():
    """A SIGHUP reload (control/diff.py) notices a changed tunnel type."""
    from userlb.control.diff import diff_commands
    cur = cfg()
    new = Config()
    new.load_rules(RULES.replace("--tun-type gre --tun-csum", "--tun-type gre"))
    cmds = diff_commands(cur, new)
    assert len(cmds) == 1 and cmds[0].tun == (2, 0, 0)
    cur.apply_batch(cmds)
    assert listing.save_lines(cur) == listing.save_lines(new)
