"""toyweb's failover behind a load balancer: three real servers run
toyweb.server, the director (userlb, IPVS NAT) spreads requests to the VIP
over them, and toyweb.healthcheck -- run in the director's namespace, as
keepalived would be -- takes a dead server out and puts it back."""
import sys

import pytest

from userlb.testing import VIP4, VIP6
from userlb.testing.plugin import schedulers

PORT = 8080
SERVICE = f"{VIP4}:{PORT}"

pytestmark = pytest.mark.userlb_lab(
    servers=3,
    server_command=[sys.executable, "-m", "toyweb.server", "--name", "{name}",
                    "--port", "{port}"],
    server_port=PORT,
)


def answers(lab, n=30, vip=VIP4):
    """Who answered each of n requests to the VIP (None: the request failed)."""
    return [r.body.split()[-1] if r.ok else None
            for r in lab.client.http_gets(n, vip=vip, port=PORT)]


def healthcheck(lab):
    return lab.run_in(lab.director, [sys.executable, "-m", "toyweb.healthcheck", SERVICE])


def test_every_server_answers_through_the_vip(userlb_lab):
    assert set(answers(userlb_lab)) == {"s1", "s2", "s3"}
    assert set(answers(userlb_lab, vip=VIP6)) == {"s1", "s2", "s3"}


@schedulers("mh", "rr", "wlc")
def test_healthcheck_takes_a_dead_server_out_and_back(userlb_lab):
    lab = userlb_lab
    lab.server(2).stop()
    assert None in answers(lab)                  # the director still sends some to s2

    assert healthcheck(lab).stdout == "10.20.0.12:8080 weight 0\n"
    assert f"-a -t {SERVICE} -r 10.20.0.12:8080 -m -w 0" in lab.director.rules()
    assert set(answers(lab)) == {"s1", "s3"}     # no failures, s2 left out

    lab.server(2).start()
    assert healthcheck(lab).stdout == "10.20.0.12:8080 weight 1\n"
    assert set(answers(lab)) == {"s1", "s2", "s3"}
    assert healthcheck(lab).stdout == ""         # nothing to change any more


def test_connections_are_tracked_per_real_server(userlb_lab):
    replies = userlb_lab.client.http_gets(6, port=PORT)
    flows = {(f.client, f.cport): f.server for f in userlb_lab.flows()}
    for r in replies:
        assert flows[(r.client, r.cport)] == r.body.split()[-1]
