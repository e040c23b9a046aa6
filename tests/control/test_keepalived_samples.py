"""A corpus of whole keepalived.conf files in the forms keepalived's
documentation and sample configurations use (written for userlb: LVS NAT
with VRRP, old and new keyword spellings, includes, groups, IPv6, UDP), each
read as `userlb check-config --rules` reads it; and `userlb run --keepalived`
refusing a bad file before it touches anything."""
import os
import subprocess
import sys
import textwrap

import pytest

from userlb.cli import check_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLASSIC_NAT = """
! Configuration File for keepalived

global_defs {
   notification_email {
     admin@example.org
   }
   notification_email_from lvs@example.org
   smtp_server 127.0.0.1
   smtp_connect_timeout 30
   router_id LVS_MAIN
}

vrrp_sync_group VG1 {
   group {
      VI_EXT
      VI_INT
   }
}

vrrp_instance VI_EXT {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    virtual_ipaddress {
        192.0.2.10/24 dev eth0
    }
}

vrrp_instance VI_INT {
    state MASTER
    interface eth1
    virtual_router_id 52
    priority 150
    virtual_ipaddress {
        10.20.0.1/24 dev eth1
    }
}

virtual_server 192.0.2.10 80 {
    delay_loop 6
    lb_algo wlc
    lb_kind NAT
    persistence_timeout 600
    protocol TCP

    sorry_server 10.20.0.250 8080

    real_server 10.20.0.11 80 {
        weight 100
        HTTP_GET {
            url {
              path /index.html
              digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
        }
    }

    real_server 10.20.0.12 80 {
        weight 100
        HTTP_GET {
            url {
              path /index.html
              digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
        }
    }
}

virtual_server 192.0.2.10 443 {
    delay_loop 10
    lb_algo rr
    lb_kind NAT
    protocol TCP

    real_server 10.20.0.11 443 {
        weight 1
        SSL_GET {
            url {
              path /health
              status_code 200
            }
            connect_timeout 5
        }
    }
    real_server 10.20.0.12 443 {
        weight 1
        TCP_CHECK {
            connect_port 443
            connect_timeout 5
        }
    }
}
"""

CLASSIC_RULES = """\
-A -t 192.0.2.10:80 -s wlc -p 600
-a -t 192.0.2.10:80 -r 10.20.0.11:80 -m -w 100
-a -t 192.0.2.10:80 -r 10.20.0.12:80 -m -w 100
-A -t 192.0.2.10:443 -s rr
-a -t 192.0.2.10:443 -r 10.20.0.11:443 -m -w 1
-a -t 192.0.2.10:443 -r 10.20.0.12:443 -m -w 1
"""

MODERN_MAIN = """
global_defs {
    router_id lb1
    lvs_timeouts tcp 7200 udp 60
}

include /etc/keepalived/vrrp.conf
include services/*.conf
"""

MODERN_WEB = """
virtual_server_group web6 {
    2001:db8:10::1-2 80
}

virtual_server group web6 {
    delay_loop 2
    lvs_sched mh
    mh-port
    lvs_method NAT
    protocol TCP
    alpha
    quorum 2
    hysteresis 1
    quorum_up "/usr/local/bin/notify quorum up"
    quorum_down "/usr/local/bin/notify quorum down"
    inhibit_on_failure
    retry 2
    delay_before_retry 0.5
    warmup 2

    real_server 2001:db8:20::11 80 {
        weight 2
        notify_up "/usr/local/bin/notify rs up"
        notify_down "/usr/local/bin/notify rs down"
        HTTP_GET {
            url {
                path /healthz
                status_code 200-299
            }
            virtualhost www.example.org
        }
    }
    real_server 2001:db8:20::12 80 {
        weight 2
        HTTP_GET {
            url {
                path /healthz
            }
        }
        MISC_CHECK {
            misc_path "/usr/local/bin/check_app --port 80"
            misc_timeout 3
            misc_dynamic
            user nobody
        }
    }
}
"""

MODERN_DNS = """
# DNS over UDP with one-packet scheduling
virtual_server 198.51.100.53 53 {
    delay_loop 5
    lb_algo sh
    sh-port
    ops
    protocol UDP
    real_server 10.20.0.21 53 {
        MISC_CHECK {
            misc_path "/usr/bin/dig +time=1 @10.20.0.21 example.org"
        }
    }
    real_server 10.20.0.22 53 {
        MISC_CHECK {
            misc_path "/usr/bin/dig +time=1 @10.20.0.22 example.org"
        }
    }
}
"""

MODERN_RULES = """\
--set 7200 120 60
-A -t [2001:db8:10::1]:80 -s mh -b mh-port
-a -t [2001:db8:10::1]:80 -r [2001:db8:20::11]:80 -m -w 0
-a -t [2001:db8:10::1]:80 -r [2001:db8:20::12]:80 -m -w 0
-A -t [2001:db8:10::2]:80 -s mh -b mh-port
-a -t [2001:db8:10::2]:80 -r [2001:db8:20::11]:80 -m -w 0
-a -t [2001:db8:10::2]:80 -r [2001:db8:20::12]:80 -m -w 0
-A -u 198.51.100.53:53 -s sh -o -b sh-port
-a -u 198.51.100.53:53 -r 10.20.0.21:53 -m -w 1
-a -u 198.51.100.53:53 -r 10.20.0.22:53 -m -w 1
"""


def check(path, capsys):
    rc = check_config.main(["--rules", path])
    out, err = capsys.readouterr()
    return rc, out, err


def sort_rules(text):
    """-S sorts services; compare as sets of lines per service."""
    return sorted(text.splitlines())


def test_classic_lvs_nat_with_vrrp(tmp_path, capsys):
    p = tmp_path / "keepalived.conf"
    p.write_text(CLASSIC_NAT)
    rc, out, err = check(str(p), capsys)
    assert rc == 0, err
    assert sort_rules(out) == sort_rules(CLASSIC_RULES)
    assert "2 virtual server(s), 2 service(s), 4 real server(s), 4 checker(s)" in err
    for block in ("global_defs", "vrrp_sync_group", "vrrp_instance"):
        assert f": {block}" in err


def test_modern_layout_with_includes_groups_ipv6_and_udp(tmp_path, capsys):
    etc = tmp_path / "etc" / "keepalived"
    (etc / "services").mkdir(parents=True)
    main = MODERN_MAIN.replace("/etc/keepalived/", str(etc) + "/")
    (etc / "keepalived.conf").write_text(main)
    (etc / "vrrp.conf").write_text(textwrap.dedent("""
        vrrp_instance VI_1 {
            state BACKUP
            interface eth0
            virtual_router_id 7
            priority 100
            track_process {
                userlb
            }
            virtual_ipaddress {
                2001:db8:10::1/64
            }
        }
        vrrp_track_process userlb {
            process userlb
        }
        """))
    (etc / "services" / "10-web.conf").write_text(MODERN_WEB)
    (etc / "services" / "20-dns.conf").write_text(MODERN_DNS)
    rc, out, err = check(str(etc / "keepalived.conf"), capsys)
    assert rc == 0, err
    # alpha: the web servers start down, kept at weight 0 (inhibit_on_failure)
    assert sort_rules(out) == sort_rules(MODERN_RULES)
    assert "2 virtual server(s), 3 service(s), 4 real server(s), 5 checker(s)" in err
    assert f"{etc}/vrrp.conf:2: vrrp_instance" in err


def test_a_typo_in_an_included_service_file_names_it(tmp_path, capsys):
    etc = tmp_path / "k"
    (etc / "services").mkdir(parents=True)
    (etc / "keepalived.conf").write_text("include services/*.conf\n")
    (etc / "services" / "10-web.conf").write_text(MODERN_WEB.replace("misc_timeout 3",
                                                                     "misc_timeuot 3"))
    rc, out, err = check(str(etc / "keepalived.conf"), capsys)
    line = MODERN_WEB.splitlines().index("            misc_timeout 3") + 1
    assert rc == 1 and out == ""
    assert f"{etc}/services/10-web.conf:{line}: unknown keyword 'misc_timeuot' in " \
           "MISC_CHECK" in err


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("args,rc,words", [
    (["run", "--keepalived", "BAD", "--tun", "never0"], 1, "BAD:3: protocol: 'ICMP'"),
    (["run", "--keepalived", "BAD", "--config", "x.rules"], 2, "exclude each other"),
    (["check-config", "BAD"], 1, "BAD:3: protocol: 'ICMP'"),
])
def test_cli_refuses_a_bad_file_before_doing_anything(tmp_path, args, rc, words):
    bad = tmp_path / "bad.conf"
    bad.write_text("virtual_server 10.0.0.1 80 {\n  lb_algo rr\n  protocol ICMP\n}\n")
    p = run_cli(*[str(bad) if a == "BAD" else a for a in args])
    assert p.returncode == rc, p.stderr
    assert words.replace("BAD", str(bad)) in p.stderr
