"""Review of userlb/control and userlb/cli: bad input gets a clear message,
never a traceback, and changes nothing."""
import io

import pytest

from userlb.cli import adm, run, simulate
from userlb.control import protocol as P
from userlb.control.config import Config
from userlb.control.server import ControlServer
from userlb.dataplane.engine import Engine
from userlb.errors import ConfigError

RULES = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m\n"


# ------------------------------------------------ control socket: deep JSON

@pytest.mark.parametrize("line", [b"[" * 100000 + b"\n",
                                  b'{"argv":' + b"[" * 100000 + b"\n",
                                  b'{"id":' + b'{"a":' * 100000 + b"\n"])
def test_deeply_nested_json_is_a_protocol_error(line):
    with pytest.raises(P.ProtocolError):
        P.decode(line)
    cfg = Config()
    cfg.load_rules(RULES)
    before = cfg.save()
    srv = ControlServer("/nonexistent/x.sock", cfg, Engine(), log=lambda m: None)
    resp = srv.handle_line(line)
    assert resp["ok"] is False and resp["status"] == P.STATUS_SYNTAX
    assert "JSON" in resp["error"]
    assert cfg.save() == before
    # and the next request on the same server is answered normally
    assert srv.handle_line(b'{"argv":["-S"]}\n')["ok"] is True


# ------------------------------------------------ non-UTF-8 files and input

@pytest.fixture
def files(tmp_path):
    ok = tmp_path / "ok.rules"
    ok.write_text(RULES)
    binary = tmp_path / "bin.rules"
    binary.write_bytes(b"\xff\xfe-A -t 10.0.0.1:80\n")
    return ok, binary


@pytest.mark.parametrize("which", ["rules", "against", "flows"])
def test_simulate_non_utf8_file_is_a_clear_error(files, which):
    ok, binary = files
    argv = {"rules": ["--rules", str(binary)],
            "against": ["--rules", str(ok), "--against", str(binary)],
            "flows": ["--rules", str(ok), "--flows", str(binary)]}[which]
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(argv, stdin=io.StringIO(""), stdout=out, stderr=err)
    assert rc == 1
    assert out.getvalue() == ""
    assert str(binary) in err.getvalue() and "UTF-8" in err.getvalue()


def test_simulate_non_utf8_stdin_is_a_clear_error(files):
    ok, _ = files
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff tcp 1.2.3.4:5 10.0.0.1:80\n"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(["--rules", str(ok)], stdin=stdin, stdout=out, stderr=err)
    assert rc == 1 and out.getvalue() == ""
    assert "UTF-8" in err.getvalue()


def test_run_read_rules_non_utf8_is_a_config_error(files):
    _, binary = files
    with pytest.raises(ConfigError) as e:
        run.read_rules(str(binary))
    assert "UTF-8" in e.value.message


def test_run_sighup_reload_non_utf8_keeps_config(files):
    ok, binary = files

    class D:
        pass
    d = D()
    d.args = type("A", (), {"config": str(binary)})()
    d.cfg = Config()
    d.cfg.load_rules(RULES)
    before = d.cfg.save()
    run.Director.reload(d)          # logged, no exception
    assert d.cfg.save() == before


def test_adm_restore_non_utf8_stdin_is_a_clear_error(tmp_path):
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff-A -t 10.0.0.1:80\n"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    rc = adm.main(["--control", str(tmp_path / "none.sock"), "-R"],
                  stdin=stdin, stdout=out, stderr=err)
    assert rc == P.STATUS_SYNTAX
    assert "UTF-8" in err.getvalue()


# ------------------------------------------------ numbers int() cannot take

HUGE = "9" * 5000      # beyond Python's int-from-string digit limit


@pytest.mark.parametrize("argv", [
    ["-A", "-t", "10.0.0.1:80", "-s", "rr", "-p", HUGE],
    ["-A", "-t", "10.0.0.1:" + HUGE],
    ["-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2", "-w", HUGE],
    ["-A", "-t", "10.0.0.1:80", "-s", "mh", "--mh-table-size", HUGE],
    ["--set", HUGE, "1", "1"],
])
def test_huge_numbers_are_syntax_errors(argv):
    from userlb.control import ipvsadm as ia
    with pytest.raises(ConfigError):
        ia.parse_argv(argv)
    cfg = Config()
    cfg.load_rules(RULES)
    before = cfg.save()
    srv = ControlServer("/nonexistent/x.sock", cfg, Engine(), log=lambda m: None)
    resp = srv.handle({"argv": argv})
    assert resp["ok"] is False and resp["status"] == P.STATUS_SYNTAX, resp
    assert cfg.save() == before
    err = io.StringIO()
    assert adm.main(argv, stdin=io.StringIO(""), stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue()


@pytest.mark.parametrize("port", [HUGE, "\u00b2"])
def test_simulate_bad_port_in_flow_and_table(files, port):
    ok, _ = files
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(["--rules", str(ok)], stdin=io.StringIO(f"tcp 1.2.3.4:5 10.0.0.1:{port}\n"),
                       stdout=out, stderr=err)
    assert rc == 1 and out.getvalue() == "" and "invalid port" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(["--rules", str(ok), "--table", f"10.0.0.1:{port}"],
                       stdin=io.StringIO(""), stdout=out, stderr=err)
    assert rc == 1 and "invalid port" in err.getvalue()


# ------------------------------------------------ an idle client at shutdown

def test_idle_client_at_shutdown_is_not_an_error(tmp_path):
    """A client that connected and never sent anything when the director
    stops: its handler is cancelled; that must not be reported as an
    exception ("Exception in callback ... CancelledError", Python 3.11)."""
    import asyncio
    import socket
    path = str(tmp_path / "c.sock")
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        srv = await ControlServer(path, Config(), Engine()).start()
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        await asyncio.sleep(0.05)        # the handler is now waiting for a line
        srv.close()
        return s

    s = asyncio.run(main())
    s.close()
    assert errors == []


# ------------------------------------------------ userlb run: --mtu, SIGUSR1

@pytest.mark.parametrize("mtu", ["-5", "10", "70000", "99999999999"])
def test_run_bad_mtu_is_refused_before_the_device(mtu, capsys):
    import signal
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = run.main(["--no-routes", "--tun", "rvbad0", "--mtu", mtu])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert rc == 2
    assert "--mtu" in capsys.readouterr().err


def test_run_sigusr1_unwritable_stats_file_is_logged(tmp_path, capsys):
    class D:
        listing_text = staticmethod(lambda: "listing\n")
    d = D()
    path = str(tmp_path / "missing-dir" / "stats")
    d.args = type("A", (), {"stats_file": path})()
    run.Director.dump_stats(d)           # no exception out of the signal handler
    assert path in capsys.readouterr().err
