"""keepalived.conf -> configuration: good files give the Config the
equivalent ipvsadm lines give; bad files are refused whole, naming file and
line (userlb/control/keepalived*.py, docs/keepalived.md)."""
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from userlb.cli import check_config
from userlb.control.config import Config
from userlb.control.keepalived import load, load_text
from userlb.control.keepalived_apply import build_config, start_states
from userlb.control.keepalived_parse import KeepalivedError


def rules_of(text):
    return build_config(start_states(load_text(textwrap.dedent(text), "k.conf"))).save()


def ipvsadm(lines):
    cfg = Config()
    cfg.load_rules(textwrap.dedent(lines))
    return cfg.save()


# (name, keepalived.conf, the ipvsadm lines it stands for)
GOOD = [
    ("minimal, comments # and !", """
        ! a comment
        virtual_server 10.99.0.1 80 {   # trailing comment
            lb_algo rr
            real_server 10.20.0.11 80 {
                weight 3
            }
        }
        """, """
        -A -t 10.99.0.1:80 -s rr
        -a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 3
        """),
    ("brace on the next line, defaults wlc, weight 1, RS port = VS port", """
        virtual_server 10.99.0.1 8080
        {
            real_server 10.20.0.11
            {
            }
        }
        """, """
        -A -t 10.99.0.1:8080 -s wlc
        -a -t 10.99.0.1:8080 -r 10.20.0.11:8080 -m -w 1
        """),
    ("mh with keepalived's flag spellings, persistence, NAT", """
        virtual_server 10.99.0.1 80 {
            lb_algo mh
            mh-port
            mh-fallback
            lb_kind NAT
            persistence_timeout 50
            persistence_granularity 255.255.255.0
            protocol TCP
            real_server 10.20.0.11 80 { weight 1 }
            real_server 10.20.0.12 80 { weight 2 }
        }
        """, """
        -A -t 10.99.0.1:80 -s mh -b mh-fallback,mh-port -p 50 -M 255.255.255.0
        -a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1
        -a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 2
        """),
    ("sh flags, lvs_sched/lvs_method spellings, UDP, ops", """
        virtual_server 10.99.0.1 53 {
            lvs_sched sh
            sh-port
            sh-fallback
            lvs_method NAT
            protocol UDP
            ops
            real_server 10.20.0.11 53 { }
        }
        """, """
        -A -u 10.99.0.1:53 -s sh -b sh-fallback,sh-port -o
        -a -u 10.99.0.1:53 -r 10.20.0.11:53 -m -w 1
        """),
    ("flag-1..3 with rr, mhs, persistence without value = 360", """
        virtual_server 10.99.0.1 80 {
            lb_algo rr
            flag-1
            flag-3
            persistence_timeout
        }
        virtual_server 10.99.0.2 80 {
            lb_algo mhs
            real_server 10.20.0.11 80 { uthreshold 10
                                        lthreshold 5 }
        }
        """, """
        -A -t 10.99.0.1:80 -s rr -b flag-1,flag-3 -p 360
        -A -t 10.99.0.2:80 -s mhs
        -a -t 10.99.0.2:80 -r 10.20.0.11:80 -m -w 1 -x 10 -y 5
        """),
    ("IPv6, and a group with a range", """
        virtual_server_group WEB {
            10.99.0.1-3 80
            10.99.0.9 8080
        }
        virtual_server 2001:db8::1 443 {
            real_server 2001:db8::11 443 { }
        }
        virtual_server group WEB {
            lb_algo mh
            real_server 10.20.0.11 80 { }
        }
        """, """
        -A -t [2001:db8::1]:443 -s wlc
        -a -t [2001:db8::1]:443 -r [2001:db8::11]:443 -m -w 1
        -A -t 10.99.0.1:80 -s mh
        -a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1
        -A -t 10.99.0.2:80 -s mh
        -a -t 10.99.0.2:80 -r 10.20.0.11:80 -m -w 1
        -A -t 10.99.0.3:80 -s mh
        -a -t 10.99.0.3:80 -r 10.20.0.11:80 -m -w 1
        -A -t 10.99.0.9:8080 -s mh
        -a -t 10.99.0.9:8080 -r 10.20.0.11:80 -m -w 1
        """),
    ("alpha: servers with checkers start down; inhibit keeps them at 0", """
        virtual_server 10.99.0.1 80 {
            alpha
            quorum 1
            real_server 10.20.0.11 80 { TCP_CHECK { } }
            real_server 10.20.0.12 80 { inhibit_on_failure
                                        TCP_CHECK { } }
            real_server 10.20.0.13 80 { }
        }
        """, """
        -A -t 10.99.0.1:80 -s wlc
        -a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 0
        -a -t 10.99.0.1:80 -r 10.20.0.13:80 -m -w 1
        """),
    ("alpha and a sorry server: the quorum is not met at start", """
        virtual_server 10.99.0.1 80 {
            alpha
            sorry_server 10.20.0.99 80
            inhibit_on_failure
            real_server 10.20.0.11 80 { HTTP_GET { url { path / } } }
        }
        """, """
        -A -t 10.99.0.1:80 -s wlc
        -a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 0
        -a -t 10.99.0.1:80 -r 10.20.0.99:80 -m -w 1
        """),
    ("sorry_server_inhibit: present at weight 0 while the quorum holds; skipped blocks", """
        global_defs {
            router_id LVS_1
            notification_email { root@localhost }
        }
        vrrp_instance VI_1 {
            state MASTER
            virtual_ipaddress {
                10.99.0.1
            }
        }
        static_routes {
            10.0.0.0/8 via 10.1.1.1
        }
        virtual_server 10.99.0.1 80 {
            delay_loop 6
            sorry_server 10.20.0.99 80
            sorry_server_inhibit
            quorum 2
            hysteresis 1
            real_server 10.20.0.11 80 { weight 2
                                        MISC_CHECK { misc_path "/bin/true"
                                                     misc_dynamic } }
        }
        """, """
        -A -t 10.99.0.1:80 -s wlc
        -a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 2
        -a -t 10.99.0.1:80 -r 10.20.0.99:80 -m -w 0
        """),
]


@pytest.mark.parametrize("name,conf,rules", GOOD, ids=[g[0] for g in GOOD])
def test_good_files_give_the_ipvsadm_configuration(name, conf, rules):
    assert rules_of(conf) == ipvsadm(rules)


# (name, keepalived.conf, line, words in the message)
BAD = [
    ("unknown top keyword", "foo bar\n", 1, "unknown keyword 'foo'"),
    ("unknown VS keyword", "virtual_server 10.0.0.1 80 {\n lb_algox rr\n}\n", 2,
     "unknown keyword 'lb_algox' in virtual_server"),
    ("unclosed block", "\nvirtual_server 10.0.0.1 80 {\n delay_loop 3\n", 2, "never closed"),
    ("stray brace", "virtual_server 10.0.0.1 80 {\n}\n}\n", 3, "without a matching"),
    ("ICMP", "virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n", 2,
     "is not TCP, UDP or SCTP"),
    ("bad lb_kind", "virtual_server 10.0.0.1 80 {\n lb_kind FOO\n}\n", 2,
     "'FOO' is not NAT, DR or TUN"),
    ("bad lvs_method on a real server", "virtual_server 10.0.0.1 80 {\n"
     " real_server 10.0.0.2 80 {\n  lvs_method DR TUN\n }\n}\n", 3, "takes NAT, DR or TUN"),
    ("fwmark", "virtual_server fwmark 1 {\n}\n", 1, "fwmark services are not supported"),
    ("fwmark in a group", "virtual_server_group G {\n fwmark 3\n}\n"
     "virtual_server group G {\n}\n", 2, "fwmark"),
    ("unknown group", "virtual_server group NOPE {\n}\n", 1, "no virtual_server_group NOPE"),
    ("unknown scheduler", "virtual_server 10.0.0.1 80 {\n lb_algo xyz\n}\n", 2,
     "Scheduler not found"),
    ("refused scheduler", "virtual_server 10.0.0.1 80 {\n lb_algo lblc\n}\n", 2,
     "not supported by userlb"),
    ("sh flag with mh", "virtual_server 10.0.0.1 80 {\n lb_algo mh\n sh-port\n}\n", 3,
     "incompatible scheduler flag"),
    ("mhs with persistence", "virtual_server 10.0.0.1 80 {\n lb_algo mhs\n"
     " persistence_timeout 60\n}\n", 2, "mhs"),
    ("ops with TCP", "virtual_server 10.0.0.1 80 {\n ops\n}\n", 2, "One-Packet"),
    ("port 0 without persistence", "virtual_server 10.0.0.1 0 {\n}\n", 1, "Zero port"),
    ("bad weight", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  weight 70000\n }\n}\n", 3, "0..65535"),
    ("host name", "virtual_server www.example.com 80 {\n}\n", 1, "not an IP address"),
    ("bad port", "virtual_server 10.0.0.1 http {\n}\n", 1, "not a port"),
    ("duplicate service", "virtual_server 10.0.0.1 80 {\n}\n\nvirtual_server 10.0.0.1 80 {\n}\n",
     4, "defined twice (first at k.conf:1)"),
    ("duplicate real server", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n }\n"
     " real_server 10.0.0.2 80 {\n }\n}\n", 4, "given twice"),
    ("family mix", "virtual_server 10.0.0.1 80 {\n real_server 2001:db8::2 80 {\n }\n}\n", 2,
     "Different address family"),
    ("SMTP_CHECK", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  SMTP_CHECK {\n  }\n }\n}\n", 3, "SMTP_CHECK is not implemented"),
    ("DNS_CHECK type", "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n"
     "  DNS_CHECK {\n   type PTRX\n  }\n }\n}\n", 4, "is not one of A NS"),
    ("DNS_CHECK name", "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n"
     "  DNS_CHECK {\n   name a..b\n  }\n }\n}\n", 4, "not a domain name"),
    ("HTTP_GET without url", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  HTTP_GET {\n  }\n }\n}\n", 3, "needs at least one url"),
    ("url without path", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  HTTP_GET {\n   url {\n    digest 0123\n   }\n  }\n }\n}\n", 5, "not an MD5 digest"),
    ("bad status", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  HTTP_GET {\n   url {\n    path /\n    status_code 299-200\n   }\n  }\n }\n}\n", 6,
     "not an HTTP status"),
    ("regex", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  HTTP_GET {\n   url {\n    path /\n    regex ok\n   }\n  }\n }\n}\n", 6,
     "not regular expressions"),
    ("MISC without path", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  MISC_CHECK {\n   misc_timeout 3\n  }\n }\n}\n", 3, "needs misc_path"),
    ("connect_port in MISC", "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
     "  MISC_CHECK {\n   misc_path /bin/true\n   connect_port 80\n  }\n }\n}\n", 5,
     "unknown keyword 'connect_port' in MISC_CHECK"),
    ("bad delay_loop", "virtual_server 10.0.0.1 80 {\n delay_loop -3\n}\n", 2,
     "not a number of seconds"),
    ("checker outside a real server", "virtual_server 10.0.0.1 80 {\n TCP_CHECK {\n }\n}\n", 2,
     "belongs in a real_server block"),
    ("unterminated quote", "virtual_server 10.0.0.1 80 {\n quorum_up \"/bin/x\n}\n", 2,
     "unterminated"),
    ("parameter", "$PORT=80\n", 1, "parameter definitions"),
    ("conditional", "@lb1 virtual_server 10.0.0.1 80 {\n}\n", 1, "conditional"),
    ("block after a flag", "virtual_server 10.0.0.1 80 {\n alpha {\n }\n}\n", 2,
     "takes no { } block"),
    ("real_server without block value", "virtual_server 10.0.0.1 80 {\n real_server\n}\n", 2,
     "real_server takes IP [PORT]"),
    ("lvs_timeouts", "global_defs {\n router_id x\n lvs_timeouts tcp 9 udp\n}\n", 3,
     "lvs_timeouts takes"),
    ("lvs_timeouts value", "global_defs {\n lvs_timeouts tcpfin 0\n}\n", 2, "seconds 1.."),
    ("persistence engine", "virtual_server 10.0.0.1 80 {\n persistence_engine sip\n}\n", 2,
     "persistence engines"),
    ("granularity with mhs line", "virtual_server 10.0.0.1 80 {\n persistence_timeout 9\n"
     " persistence_granularity 300.0.0.0\n}\n", 3, "persistent mask"),
]


@pytest.mark.parametrize("name,conf,line,words", BAD, ids=[b[0] for b in BAD])
def test_bad_files_are_refused_naming_file_and_line(name, conf, line, words):
    with pytest.raises(KeepalivedError) as ei:
        load_text(conf, "k.conf")
    e = ei.value
    assert (e.file, e.line) == ("k.conf", line), str(e)
    assert words in e.message, str(e)
    assert str(e).startswith(f"k.conf:{line}: ")


def test_checker_settings_inherit_real_server_then_virtual_server_then_defaults():
    conf = load_text(textwrap.dedent("""
        virtual_server 10.99.0.1 80 {
            real_server 10.20.0.11 80 {
                retry 4
                HTTP_GET { url { path /a
                                 status_code 200 301-302
                                 digest 0123456789ABCDEF0123456789abcdef }
                           url { path /b }
                           connect_port 8080
                           connect_timeout 2.5 }
                TCP_CHECK { retry 0 }
                MISC_CHECK { misc_path "/usr/bin/check -p 80"
                             misc_timeout 7 }
            }
            delay_loop 3
            delay_before_retry 0.5
            virtualhost www.example
            connect_timeout 4
        }
        """), "k.conf")
    (vs,) = conf.virtual_servers
    http, tcp, misc = vs.real_servers[0].checkers
    assert (http.delay_loop, http.retry, http.delay_before_retry) == (3.0, 4, 0.5)
    assert (http.connect_port, http.connect_timeout, http.virtualhost) == (8080, 2.5,
                                                                           "www.example")
    assert http.urls[0].status_codes == frozenset({200, 301, 302})
    assert http.urls[0].digest == "0123456789abcdef0123456789abcdef"
    assert http.urls[1].status_codes is None and http.urls[1].path == "/b"
    assert (tcp.retry, tcp.connect_timeout, tcp.line) == (0, 4.0, 11)
    assert (misc.misc_path, misc.misc_timeout, misc.retry) == ("/usr/bin/check -p 80", 7.0, 4)


def test_misc_check_retry_default_is_zero_others_one():
    conf = load_text("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
                     "  MISC_CHECK {\n   misc_path /bin/true\n  }\n  TCP_CHECK {\n  }\n"
                     " }\n}\n")
    misc, tcp = conf.virtual_servers[0].real_servers[0].checkers
    assert (misc.retry, tcp.retry, tcp.delay_loop, tcp.connect_timeout) == (0, 1, 60.0, 5.0)


def test_notes_for_what_userlb_does_differently():
    conf = load_text("virtual_server 10.0.0.1 80 {\n ha_suspend\n hashed\n smtp_alert\n}\n"
                     "global_defs {\n lvs_sync_daemon eth0 VI_1\n}\n", "k.conf")
    assert [n.split(": ")[0:2] for n in conf.notes] == [
        ["k.conf:2", "ha_suspend"], ["k.conf:3", "hashed"], ["k.conf:4", "smtp_alert"],
        ["k.conf:7", "lvs_sync_daemon"]]
    assert conf.timeouts is None


# ----------------------------------------------------------------- includes

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_includes_with_globs_relative_to_the_including_file(tmp_path):
    main = write(tmp_path / "keepalived.conf", """
        global_defs {
        }
        include conf.d/*.conf
        include {extra,more}/vs.conf
        """)
    write(tmp_path / "conf.d" / "b.conf", """
        virtual_server 10.99.0.2 80 {
            include ../rs/*.inc
        }
        """)
    write(tmp_path / "conf.d" / "a.conf", "virtual_server 10.99.0.1 80 {\n}\n")
    write(tmp_path / "rs" / "s1.inc", "real_server 10.20.0.11 80 {\n}\n")
    write(tmp_path / "extra" / "vs.conf", "virtual_server 10.99.0.3 80 {\n}\n")
    conf = load(main)
    assert [vs.name for vs in conf.virtual_servers] == [
        "TCP 10.99.0.1:80", "TCP 10.99.0.2:80", "TCP 10.99.0.3:80"]
    assert conf.virtual_servers[1].real_servers[0].file == str(tmp_path / "rs" / "s1.inc")


def test_errors_in_an_included_file_name_that_file(tmp_path):
    main = write(tmp_path / "k.conf", "virtual_server 10.99.0.1 80 {\n include x.inc\n}\n")
    inc = write(tmp_path / "x.inc", "\n\n  weight_of 3\n")
    with pytest.raises(KeepalivedError) as ei:
        load(main)
    assert (ei.value.file, ei.value.line) == (inc, 3)


@pytest.mark.parametrize("text,line,words", [
    ("include nothing/*.conf\n", 1, "no file matches"),
    ("\ninclude k.conf\n", 2, "include loop"),
    ("include\n", 1, "exactly one file pattern"),
])
def test_bad_includes(tmp_path, text, line, words):
    main = write(tmp_path / "k.conf", text)
    with pytest.raises(KeepalivedError) as ei:
        load(main)
    assert (ei.value.file, ei.value.line) == (main, line) and words in ei.value.message


def test_binary_file_is_refused(tmp_path):
    p = tmp_path / "k.conf"
    p.write_bytes(b"virtual_server 10.0.0.1 80 {\n\xff\xfe\n}\n")
    with pytest.raises(KeepalivedError) as ei:
        load(str(p))
    assert ei.value.line == 2 and "not UTF-8" in ei.value.message


# -------------------------------------------------------------- check-config

def test_check_config_exit_codes_and_messages(tmp_path, capsys):
    good = write(tmp_path / "good.conf", """
        vrrp_instance V { state BACKUP
        }
        virtual_server 10.99.0.1 80 {
            lb_algo mh
            real_server 10.20.0.11 80 { TCP_CHECK { } }
        }
        """)
    assert check_config.main(["--rules", good]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["-A -t 10.99.0.1:80 -s mh",
                                "-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1"]
    assert f"{good}: OK: 1 virtual server(s), 1 service(s), 1 real server(s), 1 checker(s)" \
        in err
    assert f"skipped (keepalived's part): {good}:2: vrrp_instance" in err
    bad = write(tmp_path / "bad.conf", "virtual_server 10.99.0.1 80 {\n lb_kind TUNNEL\n}\n")
    assert check_config.main([bad]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0].startswith(f"userlb check-config: {bad}:2: lb_kind: ")
    assert check_config.main([str(tmp_path / "missing.conf")]) == 1
    assert "cannot read" in capsys.readouterr().err


# ------------------------------------------------------- never a crash

_CORPUS = "\n".join(textwrap.dedent(g[1]) for g in GOOD) + "\n".join(b[1] for b in BAD)
_WORDS = sorted(set(_CORPUS.split())) + ["{", "}", "\"", "#", "!", "-", "", "\x00", "é",
                                         "99999999999999999999", "1e309", "nan", "::", "-1"]


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.lists(hs.sampled_from(_WORDS), max_size=6), max_size=30))
def test_random_files_are_accepted_or_refused_with_a_line_never_a_crash(lines):
    text = "\n".join(" ".join(ws) for ws in lines)
    try:
        conf = load_text(text, "k.conf")
    except KeepalivedError as e:
        assert e.file == "k.conf" and (e.line is None or 1 <= e.line <= len(lines))
        return
    build_config(start_states(conf))      # an accepted file always configures


@settings(max_examples=200, deadline=None)
@given(hs.sampled_from([textwrap.dedent(g[1]) for g in GOOD]), hs.data())
def test_mutated_good_files_never_crash(text, data):
    lines = text.splitlines()
    for _ in range(data.draw(hs.integers(1, 4))):
        if not lines:
            break
        i = data.draw(hs.integers(0, len(lines) - 1))
        op = data.draw(hs.sampled_from(["drop", "dup", "word"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines[i] += " " + data.draw(hs.sampled_from(_WORDS))
    try:
        conf = load_text("\n".join(lines), "k.conf")
    except KeepalivedError as e:
        assert e.line is None or 1 <= e.line <= len(lines)
        return
    build_config(start_states(conf))


def test_dns_check_defaults():
    conf = load_text("virtual_server 10.0.0.1 53 {\n protocol UDP\n real_server 10.0.0.2 53 {\n"
                     "  DNS_CHECK {\n   connect_port 5353\n  }\n }\n}\n")
    (dns,) = conf.virtual_servers[0].real_servers[0].checkers
    assert (dns.dns_type, dns.dns_name, dns.connect_port, dns.retry) == ("A", ".", 5353, 1)
