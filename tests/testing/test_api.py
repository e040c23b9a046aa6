"""userlb.testing's API in this process, with real namespaces and traffic:
what the plugin's fixtures hand out (tests/testing/test_plugin.py covers the
fixtures themselves)."""
import os
import subprocess
import sys
import time

import pytest

from helpers.netns import needs_root
from userlb.testing import VIP4, VIP6, AdmError, LabError, LbLab, unavailable_reason

pytestmark = [needs_root, pytest.mark.root]

STATE = os.environ.get("USERLB_LAB_DIR", "/run/userlb-lab")


def namespaces():
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                              text=True).stdout.split())


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    from userlb.lab import core
    monkeypatch.setattr(core, "STATE_ROOT", tmp_path)
    return tmp_path


def test_available_here():
    assert unavailable_reason() is None


def test_bad_rules_fail_up_and_leave_nothing(state_dir, monkeypatch):
    from userlb.testing import _lab
    tags = []
    up = _lab._Lab.up

    def recording_up(self):
        tags.append(self.tag)
        return up(self)

    monkeypatch.setattr(_lab._Lab, "up", recording_up)
    lab = LbLab(servers=1, rules="-A -t 10.99.0.1:80 -s nosuch\n")
    with pytest.raises(LabError, match="nosuch"):
        lab.up()
    assert len(tags) == 1 and [ns for ns in namespaces() if ns.startswith(tags[0])] == []
    assert list(state_dir.iterdir()) == []
    with pytest.raises(LabError, match="not up"):
        lab.director.adm("-L -n")


def test_keepalived_conf_text_is_refused_until_its_parser_exists():
    conf = "virtual_server 10.99.0.1 80 {\n    lb_algo rr\n    lb_kind NAT\n}\n"
    with pytest.raises(LabError, match="keepalived.conf text is not read yet"):
        LbLab(servers=1, rules=conf).up()


def test_rules_text_weights_and_adm_results():
    rules = ("-A -t 10.99.0.1:80 -s wrr\n"
             "-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 3\n"
             "-a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 1\n")
    with LbLab(servers=2, rules=rules) as lab:
        servers = [r.server for r in lab.client.http_gets(8)]
        assert (servers.count("s1"), servers.count("s2")) == (6, 2)
        assert lab.director.rules() == rules
        assert lab.director.ipvsadm("-L", "-n", "--bogus").returncode == 2
        refused = lab.director.ipvsadm("ipvsadm -d -t 10.99.0.1:80 -r 10.20.0.13:80")
        assert refused.returncode == 255 and refused.stderr.strip()
        with pytest.raises(AdmError) as e:
            lab.director.adm("-d -t 10.99.0.1:80 -r 10.20.0.13:80")
        assert e.value.status == 255
        lab.director.restore("-A -u 10.99.0.1:7 -s rr\n-a -u 10.99.0.1:7 -r 10.20.0.12:7 -m\n")
        assert lab.director.rules().startswith("-A -u 10.99.0.1:7 -s rr")
        assert lab.client.http_get(timeout=1.0).error        # TCP 80 is gone


def test_weight_zero_keeps_established_connections():
    """IPVS semantics through the API: established streams go on at weight 0,
    new connections avoid the server."""
    with LbLab(servers=2, scheduler="rr") as lab:
        with lab.client.tcp_stream(count=4) as streams:
            on_s1 = [s for s in streams.flows if s.server == "s1"]
            assert on_s1
            lab.director.adm(f"-e -t {VIP4}:7 -r {lab.server(1).addr4}:7 -m -w 0")
            with lab.client.tcp_stream(count=4) as fresh:
                assert {s.server for s in fresh.flows} == {"s2"}
            assert {r.server for r in lab.client.http_gets(4)} == {"s1", "s2"}   # other service
            time.sleep(0.3)
            live = {(f.client, f.cport) for f in lab.flows()
                    if f.server == "s1" and f.state == "ESTABLISHED"}
            assert live == {(s.client, s.cport) for s in on_s1}
            final = streams.finish()
        assert all(s.intact and s.done and s.rounds > 0 for s in final), final


def test_user_server_command_stopped_with_its_children():
    cmd = ["sh", "-c", "sleep 300 & exec " + sys.executable + " -m http.server --bind :: {port}"]
    with LbLab(servers=1, server_command=cmd, server_port=8000) as lab:
        s1 = lab.server(1)
        assert lab.client.http_get(VIP4, 8000).status == 200
        assert lab.client.http_get(VIP6, 8000).status == 200
        tree = subprocess.run(["ip", "netns", "pids", s1.namespace], capture_output=True,
                              text=True).stdout.split()
        assert len(tree) == 3                  # supervisor, sleep, http.server
        s1.stop()
        assert not s1.running
        assert subprocess.run(["ip", "netns", "pids", s1.namespace], capture_output=True,
                              text=True).stdout.split() == []
        assert "Connection refused" in lab.client.http_get(VIP4, 8000).error
        s1.start()
        assert lab.client.http_get(VIP4, 8000, tries=3).status == 200


def test_director_stop_start_and_run_in():
    with LbLab(servers=1) as lab:
        assert lab.director.running
        out = lab.run_in(lab.director, "ipvsadm -L -n | grep -c Masq").stdout
        assert out.strip() == "6"             # TCP 80, TCP 7, UDP 7 on both VIPs
        lab.director.stop()
        assert not lab.director.running
        assert lab.director.ipvsadm("-L -n").returncode == 2
        assert lab.client.http_get(timeout=1.0).error
        lab.director.start()
        assert lab.client.http_get(tries=3).server == "s1"
        assert lab.run_in(lab.server(1), ["ip", "-br", "addr"]).stdout.count("10.20.0.11") == 1
        p = lab.run_in(lab.client, "exit 3", check=False)
        assert p.returncode == 3
        with pytest.raises(LabError, match="exit 3"):
            lab.run_in(lab.client, "exit 3")


def test_two_directors_failover_keeps_streams():
    """directors=2 (ECMP, no shared state) with sloppy TCP: both directors
    carry flows; director 1 stops mid-stream and every stream goes on
    through director 2, byte for byte; it comes back into the routes."""
    with LbLab(servers=3, directors=2, sloppy_tcp=True, clients=8) as lab:
        d1, d2 = lab.all_directors
        assert lab.router and d1.namespace != d2.namespace
        assert all(r.ok for r in lab.client.http_gets(16))
        assert {f.director for f in lab.flows()} == {1, 2}
        with lab.client.tcp_stream(count=8) as streams:
            time.sleep(0.2)
            d1.stop()
            assert not d1.running and d2.running
            time.sleep(0.3)
            final = streams.finish()
        assert all(s.intact and s.done for s in final), final
        assert {f.director for f in lab.flows()} == {2}
        d1.start()
        assert lab.run_in(d1, "ipvsadm -S -n").stdout == d2.rules()
        assert all(r.ok for r in lab.client.http_gets(8))


def test_close_is_idempotent_and_leaves_nothing(state_dir):
    lab = LbLab(servers=2).up()
    tag = lab.tag
    mine = {ns for ns in namespaces() if ns.startswith(tag)}
    assert len(mine) == 4
    pids = [lab.director.pid] + [s.pid for s in lab.real_servers]
    assert lab.close() == []
    assert lab.close() == []
    assert [ns for ns in namespaces() if ns.startswith(tag)] == []
    assert list(state_dir.iterdir()) == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(LabError):
        LbLab(servers=0).up()
