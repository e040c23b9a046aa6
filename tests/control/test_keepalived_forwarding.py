"""keepalived.conf's lb_kind / lvs_method NAT|DR|TUN (virtual server, real
server, sorry server) as ipvsadm -m / -g / -i."""
import textwrap

from userlb.control.keepalived import load_text
from userlb.control.keepalived_apply import build_config, start_states


def saved(text):
    return build_config(start_states(load_text(textwrap.dedent(text), "k.conf"))).save()


def test_lb_kind_of_virtual_and_real_servers():
    out = saved("""
        virtual_server 10.0.0.1 80 {
            lb_algo rr
            lb_kind DR
            real_server 10.1.0.1 80 {
                weight 1
            }
            real_server 10.1.0.2 80 {
                lvs_method TUN
            }
            real_server 10.1.0.3 8080 {
                lb_kind NAT
            }
        }
        virtual_server 10.0.0.2 80 {
            lvs_method TUN
            real_server 10.1.0.4 80 {
            }
        }
        """)
    assert "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1" in out
    assert "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -i -w 1 --tun-type ipip" in out
    assert "-a -t 10.0.0.1:80 -r 10.1.0.3:8080 -m -w 1" in out
    assert "-a -t 10.0.0.2:80 -r 10.1.0.4:80 -i -w 1 --tun-type ipip" in out


def test_sorry_server_method():
    out = saved("""
        virtual_server 10.0.0.1 80 {
            lb_kind DR
            sorry_server 10.1.0.9 80
            sorry_server_lvs_method NAT
        }
        """)
    assert "-a -t 10.0.0.1:80 -r 10.1.0.9:80 -m -w 1" in out
