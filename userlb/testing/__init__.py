"""userlb in other projects' tests: a load-balancer lab in network namespaces.

    from userlb.testing import LbLab

    with LbLab(servers=2, scheduler="rr") as lab:
        lab.director.adm("-e -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 0")
        assert lab.client.http_get(lab.vip4).server == "s2"

The lab (userlb.lab underneath) is a client namespace, a director namespace
running `userlb run` -- IPVS masquerading in userspace on a TUN device, no
ip_vs module -- and N real-server namespaces:

    client  10.10.0.2..    fd00:10::2..     (`lab.client`)
    director                                (`lab.director`; VIPs 10.99.0.1, fd00:99::1)
    s1..sN  10.20.0.11..   fd00:20::b..     (`lab.server(i)`), default route via the director

The real servers run the lab's own servers (HTTP on 80 answering
{"server": NAME, "client": ADDR, "port": PORT}, TCP echo on 7 and 7001-7008,
UDP echo on 7) or the user's `server_command`.  Names carry a random suffix
(`lab.tag`), and `close()` removes every namespace and process the lab made
-- only those, by PID.

The pytest plugin (`userlb.testing.plugin`, loaded by the `pytest11` entry
point) gives fixtures over this API: `userlb_lab`, `userlb_lab_factory`.
See docs/testing-with-userlb.md.  Needs root, /dev/net/tun and iproute2;
`unavailable_reason()` says what is missing (the fixtures skip with it).
"""
from ..lab import ECHO, EXTRA_ECHO, HTTP, UDP_ECHO, VIP4, VIP6, LabError
from ..lab.base import server_addr4, server_addr6
from ._lab import LbLab, sweep_stale, unavailable_reason
from .parts import (
    AdmError,
    AdmResult,
    Client,
    Director,
    Flow,
    HttpReply,
    RealServer,
    StreamState,
    TcpStreams,
)

__all__ = ["ECHO", "EXTRA_ECHO", "HTTP", "UDP_ECHO", "VIP4", "VIP6", "AdmError", "AdmResult",
           "Client", "Director", "Flow", "HttpReply", "LabError", "LbLab", "RealServer",
           "StreamState", "TcpStreams", "server_addr4", "server_addr6", "sweep_stale",
           "unavailable_reason"]
