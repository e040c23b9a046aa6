"""A lab in network namespaces: client, director, real servers.

    client ns  (ulb-SFX-c)   eth0  10.10.0.2..  fd00:10::2..   (several client addresses)
        |  veth
    director ns (ulb-SFX-d)  c0    10.10.0.1    fd00:10::1
                             br0   10.20.0.1    fd00:20::1     (bridge of the servers' links)
                             ulb0  the TUN device of `userlb run` (VIPs routed into it)
        |  bridge
    server ns i (ulb-SFX-sI) eth0  10.20.0.(10+i) fd00:20::(10+i), default route -> director

Optional (`far_mtu`): one more real server behind a router whose server-side
link has a lowered MTU (the PMTU discovery test):

    director f0 10.20.1.1 -- router (ulb-SFX-r) 10.20.1.2 | 10.20.2.1 (MTU far_mtu)
        -- far (ulb-SFX-f) 10.20.2.2

With `directors` K >= 2 (active-active directors behind ECMP) the
client and the real servers hang off a router instead, and K director
namespaces sit beside it:

    client ns (ulb-SFX-c)    eth0  10.10.0.2..     default via the router
        |
    router ns (ulb-SFX-r)    c0    10.10.0.1       fd00:10::1
                             br0   10.20.0.1       fd00:20::1      (bridge of the servers' links)
                             dK    10.30.K.1       fd00:30:K::1    (one link per director)
        |  dK <-> up0
    director K (ulb-SFX-dK)  up0   10.30.K.2       fd00:30:K::2    default via the router;
                             ulb0  the TUN device of `userlb run` (same rules everywhere)
    server ns i (ulb-SFX-sI) eth0  10.20.0.(10+i)  default via the router

The router (fib_multipath_hash_policy 3 over the 5-tuple, IPv4 and IPv6:
userlb/lab/topology.py) reaches the VIPs through a multipath route over
the live directors, and sends what
comes from the real servers (`iif br0`, rule to table ROUTER_REPLY_TABLE)
to the client networks through the same kind of multipath route: the
replies of a flow are hashed on their own 5-tuple and may reach a director
that never saw the flow's SYN.  A packet whose DSCP is K (TOS byte 4K, e.g.
a client socket with IP_TOS / IPV6_TCLASS = 4K) is pinned to director K
(rule `iif c0 tos 4K` to table ROUTER_PIN_TABLE + K): that is how a test
sends the same flow to each director in turn.  `kill_director(K)` takes
director K out of every route first and then stops it; `revive_director(K)`
starts it again and puts it back.

VIPs: 10.99.0.1 and fd00:99::1.  `userlb run` gets `--reply-from 10.20.0.0/16
--reply-from fd00:20::/44` so that ICMP errors from the router go into the TUN too.

The modules, one job each:

    base.py        the address plan, ports and router tables; LabError, sh()
    rules.py       the rules files (ipvsadm -R) of the lab
    topology.py    namespaces, veths, addresses, routes (both labs; the ECMP routes)
    processes.py   the real servers and the directors: start, stop, signal, ask
    sessions.py    traffic from the client namespace (one-shot and long-lived)
    core.py        `Lab`: names, saved state, up/down, directors out of and back into the routes
    client.py, longlived.py, servers.py, flood.py   programs run inside the namespaces
    demo.py, ecmp.py, experiment.py   what is run against a lab (demo, ECMP checks, mhs experiment)

This package exports the small surface the CLI, the tests and the benchmarks use.
"""

from .base import (
    DISCARD,
    ECHO,
    EXTRA_ECHO,
    HASH,
    HTTP,
    ROUTER_PIN_TABLE,
    ROUTER_REPLY_TABLE,
    UDP_ECHO,
    VIP4,
    VIP6,
    LabError,
)
from .core import Lab
from .rules import rules_text
from .sessions import ClientSession, Streams

__all__ = ["DISCARD", "ECHO", "EXTRA_ECHO", "HASH", "HTTP", "ROUTER_PIN_TABLE",
           "ROUTER_REPLY_TABLE", "UDP_ECHO", "VIP4", "VIP6", "ClientSession", "Lab",
           "LabError", "Streams", "rules_text"]
