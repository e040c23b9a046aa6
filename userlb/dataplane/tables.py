"""The engine's dispatch tables, built from the configured services in one
go (``Engine.set_services`` swaps them in; entries are never flushed).

* ``svc_tab``: (proto, vaddr, vport) -> Service;
* ``vips``: every VIP address;
* ``rs_tab``: (proto, daddr, dport) -> the Xlate of the one service that
  owns that real server, or None when several services do (a reply without
  entry is then ambiguous);
* ``rs_addrs``: every real server address (fragments from them are
  reassembled);
* ``xl_cache``: Dest -> its Xlate (a Dest object belongs to one service);
  an Xlate of the previous tables is kept while its service and
  statelessness are unchanged.
"""
from .conntrack import Xlate


class Tables:
    __slots__ = ("svc_tab", "vips", "rs_tab", "rs_addrs", "xl_cache")

    def __init__(self):
        self.svc_tab = {}
        self.vips = set()
        self.rs_tab = {}
        self.rs_addrs = set()
        self.xl_cache = {}


def build(services, old_cache, dec_ttl, gstats):
    """The Tables of `services` (Xlates built with `dec_ttl`, counting in the
    global Stats `gstats`)."""
    t = Tables()
    cache = t.xl_cache
    owners = {}
    for svc in services:
        t.svc_tab[(svc.protocol, svc.addr, svc.port)] = svc
        t.vips.add(svc.addr)
        sched = svc.sched
        stateless = sched is not None and sched.stateless

        def own(d, svc=svc, stateless=stateless):
            xl = old_cache.get(d)
            if (xl is None or xl.svc is not svc or xl.stateless != stateless
                    or xl.sig != (d.fwd, d.tun)):
                xl = Xlate(svc, d, dec_ttl, gstats)
            cache[d] = xl
            if xl.fwd.REPLIES:     # direct routing, tunnels: replies bypass the director
                owners.setdefault((svc.protocol, d.addr, xl.dport), []).append(xl)

        for d in svc.dests:
            own(d)
        # a stateless (mhs) service keeps forwarding to removed backends
        # while its old table refers to them: their replies must still be
        # translated on a director without an entry for the flow
        if sched is not None:
            for d in sched.referenced_dests():
                if d not in cache and d.af == svc.af:
                    own(d)
    for k, xls in owners.items():
        t.rs_tab[k] = xls[0] if len({id(x.svc) for x in xls}) == 1 else None
    t.rs_addrs = {k[1] for k in owners}
    return t
