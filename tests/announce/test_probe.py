"""One look at the director (userlb/announce/probe.py): a fake control
socket server in a thread, a fake /sys/class/net in tmp_path."""
import json
import socket
import threading

from userlb.announce import probe

RULES = ("-A -t 10.99.0.1:80 -s mh\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n"
         "-A -u 10.99.0.1:53 -s rr\n-A -t [fd00:99::1]:80 -s mh\n")


def fake_sys(tmp_path, name="ulb0", flags="0x1003", carrier="1"):
    d = tmp_path / "net" / name
    d.mkdir(parents=True)
    (d / "flags").write_text(flags + "\n")
    (d / "carrier").write_text(carrier + "\n")
    return str(tmp_path / "net")


def serve(path, answer):
    """A unix socket answering each request line with answer(request) (None: silence)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                f = c.makefile("rwb")
                line = f.readline()
                out = answer(json.loads(line))
                if out is None:
                    c.recv(1)          # hold it until the client gives up
                    continue
                f.write((json.dumps(out) + "\n").encode())
                f.flush()
    threading.Thread(target=loop, daemon=True).start()
    return srv


def director(state=None):
    def answer(req):
        if "argv" in req:
            return {"ok": True, "output": RULES, "error": "", "status": 0}
        return {"ok": True, "output": json.dumps(state or {"dests": []}), "error": "",
                "status": 0}
    return answer


def test_route_get_output():
    out = ('[{"dst":"10.99.0.1","dev":"ulb0","flags":[]}]\n'
           '[{"type":"local","dst":"10.99.0.2","dev":"lo"}]\n[]\n')
    assert probe.parse_route_get(out) == ["ulb0", "lo", None]
    assert probe.parse_route_get("garbage") == []
    assert probe.unrouted({"10.99.0.1/32": ()}, "ulb0",
                          lambda args, lines: '[{"dev":"up0"}]') == {
        "10.99.0.1/32": "not routed into ulb0 (its route goes to up0; was the device "
                        "set down?)"}

    def broken(args, lines):
        raise OSError("no ip")
    assert probe.unrouted({"10.99.0.1/32": ()}, "ulb0", broken) == {}


def test_tun_states(tmp_path):
    assert probe.tun_down("ulb0", fake_sys(tmp_path)) is None
    assert "does not exist" in probe.tun_down("nope", str(tmp_path / "net"))
    assert "is down" in probe.tun_down("d", fake_sys(tmp_path, "d", flags="0x1002"))
    assert "no carrier" in probe.tun_down("c", fake_sys(tmp_path, "c", carrier="0"))


def test_vips_and_quorum():
    assert probe.vips_of(RULES) == {"10.99.0.1/32": ("TCP 10.99.0.1:80", "UDP 10.99.0.1:53"),
                                    "fd00:99::1/128": ("TCP [fd00:99::1]:80",)}
    state = json.dumps({"dests": [], "quorum": [["tcp", "10.99.0.1:80", False],
                                                ["tcp", "[fd00:99::1]:80", True]]})
    assert probe.lost_of(state) == {"10.99.0.1/32": "TCP 10.99.0.1:80 below its quorum"}
    assert probe.lost_of("not json") == {} and probe.lost_of('{"dests": []}') == {}


def test_look_fit_and_quorum(tmp_path):
    sock = str(tmp_path / "c.sock")
    srv = serve(sock, director({"dests": [], "quorum": [["tcp", "10.99.0.1:80", False]]}))
    try:
        asked = []

        def ip_batch(args, lines):      # 10.99.0.1 into the TUN, fd00:99::1 not
            asked.append((args, lines))
            dev = "ulb0" if args == ["-4"] else "up0"
            return "".join(f'[{{"dst":"x","dev":"{dev}"}}]\n' for _ in lines.splitlines())
        r = probe.look(sock, "ulb0", 2.0, fake_sys(tmp_path), ip_batch=ip_batch)
        assert r.down is None and set(r.vips) == {"10.99.0.1/32", "fd00:99::1/128"}
        assert r.lost == {"10.99.0.1/32": "TCP 10.99.0.1:80 below its quorum"}
        assert asked == [(["-4"], "route get 10.99.0.1 ipproto tcp dport 80\n"),
                         (["-6"], "route get fd00:99::1 ipproto tcp dport 80\n")]
        assert list(r.unrouted) == ["fd00:99::1/128"]
        assert "not routed into ulb0 (its route goes to up0" in r.why_not("fd00:99::1/128")
        r = probe.look(sock, "gone0", 2.0, str(tmp_path / "net"))
        assert r.down == "TUN device gone0 does not exist"
    finally:
        srv.close()


def test_look_gone_and_silent(tmp_path):
    sock = str(tmp_path / "c.sock")
    assert "not running" in probe.look(sock, None, 1.0).down
    srv = serve(sock, lambda req: None)
    try:
        assert "not answering" in probe.look(sock, None, 0.2).down
    finally:
        srv.close()
    srv = socket.socket(socket.AF_UNIX)
    (tmp_path / "d.sock").unlink(missing_ok=True)
    srv.bind(str(tmp_path / "d.sock"))      # bound, never listening: refused
    try:
        assert "not running" in probe.look(str(tmp_path / "d.sock"), None, 1.0).down
    finally:
        srv.close()
