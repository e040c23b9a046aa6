"""SCTP services on the control side (docs/sctp.md): ipvsadm's
--sctp-service through -A/-a, -L, -S; keepalived's `protocol SCTP`."""
from userlb.clock import ManualClock
from userlb.control import listing as L
from userlb.control.config import Config
from userlb.control.ipvsadm import parse_argv
from userlb.control.keepalived import load_text, service_argv
from userlb.model import IPPROTO_SCTP


def test_sctp_service_parse_list_save():
    c = parse_argv(["-A", "--sctp-service", "10.0.0.100:3868", "-s", "mh"])
    assert c.protocol == IPPROTO_SCTP and c.port == 3868
    cfg = Config(ManualClock(0))
    cfg.apply("-A --sctp-service 10.0.0.100:3868 -s rr")
    cfg.apply("-a --sctp-service 10.0.0.100:3868 -r 10.0.0.1:13868 -m -w 2")
    cfg.apply("-A --sctp-service [2001:db8::100]:3868 -s mh")
    text = L.list_all(cfg)
    assert "SCTP 10.0.0.100:3868 rr" in text
    assert "SCTP [2001:db8::100]:3868 mh" in text
    assert cfg.save()[:2] == ["-A --sctp-service 10.0.0.100:3868 -s rr",
                              "-a --sctp-service 10.0.0.100:3868 -r 10.0.0.1:13868 -m -w 2"]
    # saved rules read back to the same configuration
    cfg2 = Config(ManualClock(0))
    for line in cfg.save():
        cfg2.apply(line)
    assert cfg2.save() == cfg.save()
    cfg.apply("-D --sctp-service 10.0.0.100:3868")
    assert "10.0.0.100:3868" not in L.list_all(cfg)


def test_keepalived_protocol_sctp():
    conf = load_text("virtual_server 10.0.0.1 3868 {\n lb_algo rr\n protocol SCTP\n"
                     " real_server 10.0.0.2 3868 {\n }\n}\n")
    (vs,) = conf.virtual_servers
    (key,) = vs.services
    assert key[0] == IPPROTO_SCTP
    argv = service_argv(vs, key)
    assert argv[:3] == ["-A", "--sctp-service", "10.0.0.1:3868"]
    parse_argv(argv)            # and ipvsadm takes it back


def test_sctp_with_several_workers_needs_sloppy_sctp():
    from userlb.cli.workers import refusal
    why = refusal(IPPROTO_SCTP, 0x0A000001, 3868, "mh", 0, True, 2)
    assert why and "needs --sloppy-sctp" in why
    assert refusal(IPPROTO_SCTP, 0x0A000001, 3868, "mh", 0, True, 2, sloppy_sctp=True) is None
