"""The sans-I/O director: ``process(buf, n, now) -> verdict``; the only entry
point for packets (docs/ipvs.md §4, §5, §7; docs/mhs-spec.md rules 8-13).

The engine keeps the lookup, the life of entries and the verdict; what
depends on the L4 protocol is in proto/ (tcp, udp, icmp), the rewrite of
each forwarding method in xmit/ (masq; dr and tunnel, whose transmit
hooks give the verdicts V_XMIT_L2 / V_XMIT_IP), the IPv4 fast path in fast4.py.

Theory of operation
-------------------
A packet goes through, in order:

1. **IPv4 fast path** (fast4.py: IPv4 without options, not fragmented, TCP
   or UDP with a checksum, ``dec_ttl`` off): an established flow, a new flow
   to a service, a reply from a real server owned by one service, decided
   from two header reads.  Anything unusual (a SYN on a TIME_WAIT entry, an
   expired entry, a removed destination, a packet that needs an answer)
   falls through to the general path, which decides everything again from
   scratch.
2. **General path** (``_general``): ``packet.parse``; malformed packets are
   dropped with the parser's reason.  Fragments addressed to a VIP (or coming from a real
   server's address) are reassembled first (frag.py); the whole datagram then
   takes the general path and leaves as V_FORWARD_OUT.  ICMP errors are
   matched on their quoted packet (§5.4).  Then: entry lookup (both
   directions) -> virtual service lookup (scheduling, entry creation) ->
   a reply from a real server without an entry (translated from the
   configuration when exactly one service owns that real server) -> a VIP
   without that service -> 'not_for_us'.

Entries are created when IPVS would create one: TCP SYN without RST (any
TCP but RST with ``sloppy_tcp``), every UDP datagram, and for a stateless
scheduler (mhs) when its ``schedule_sl`` answers ``need_state``.  A SYN (not
RST) on a TIME_WAIT or CLOSE entry expires it and is scheduled afresh
(conn_reuse_mode = 1).  A packet of an entry whose destination was removed is
dropped ('dest_unavailable'), except for stateless services, whose entries
survive backend removal (docs/mhs-spec.md rule 11).

Choices (differences from the kernel, documented):

* TTL / hop limit is not decremented by default (``dec_ttl=False``): the
  packet already crosses the kernel's forwarding twice around the TUN
  device.  With ``dec_ttl=True`` the general path decrements it and drops
  packets whose TTL would reach 0 ('ttl_expired').
* A UDP checksum of 0 (IPv4 "no checksum") is kept as 0 (nat.py's rule); the
  kernel computes a fresh one.
* A TCP packet without entry to a VIP port that has no service is answered
  like a missing entry (RST, see ``rst_on_no_entry``); a UDP datagram to such
  a port is dropped ('no_service').
* Replies without an entry are translated statelessly (no entry is created).
* ICMP errors without an entry are translated only for stateless services
  (client side: the scheduler's current decision, without creating state)
  and for replies from a real server owned by exactly one service.
* A reassembled IPv6 datagram larger than the outgoing MTU is not
  re-fragmented: the kernel does not fragment forwarded IPv6 and answers
  "packet too big" towards the client instead (IPv4 without DF is
  re-fragmented by the kernel on the way out).
* Entries use one-second expiry granularity in the sweep; the lazy check on
  lookup is exact ("live while now < expires").

Persistence (``-p``, ``-M``): persist.py.  Both paths choose the destination
of a new connection in ``_pick`` (a persistent service's through its
template: ``_persist``) and create its entry in ``link_entry``.

Length: about 550 lines, a third of them this text, the class docstring and
the imports; the rest is one class whose parts (control tables, lookup,
entry life, verdict) share its state, and what could leave it has left
(fast4, proto/, xmit/, persist, tables, conntrack.ConnTable.rows).
"""
from collections import Counter

from ..model import SVC_F_PERSISTENT, Stats
from . import nat, persist, tables
from .conntrack import (
    TPL_ASSURED,
    ConnTable,
    Entry,
    Xlate,
    make_key,
)
from .defense import R_DEFENSE_DROP, Defense
from .fast4 import Fast4
from .frag import Reassembler
from .packet import (
    FLOW,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    P_DADDR,
    P_DPORT,
    P_FRAG,
    P_INNER,
    P_LEN,
    P_PROTO,
    P_SADDR,
    P_SPORT,
    P_TCPFLAGS,
    TH_RST,
    TH_SYN,
    parse,
)
from .proto import PROTOCOLS, icmp
from .proto.tcp import set_secure
from .sctpstate import S_CLOSED
from .stats import RateEstimators
from .tcpstate import CLOSE, ESTABLISHED, FIN_WAIT, IS_ACTIVE, TIME_WAIT, UDP, make_timeouts
from .verdict import (  # noqa: F401
    R_CONN_LIMIT,
    R_DEST_UNAVAILABLE,
    R_FRAG_NOT_FIRST_PARSE,
    R_ICMP_IGNORED,
    R_ICMP_NO_ENTRY,
    R_NO_DEST,
    R_NO_ENTRY,
    R_NO_SCHEDULER,
    R_NO_SERVICE,
    R_NOT_FOR_US,
    R_REPLY_AMBIGUOUS,
    R_RST_NO_ENTRY,
    R_TTL_EXPIRED,
    V_DROP,
    V_FORWARD,
    V_FORWARD_OUT,
    V_REPLY,
    V_XMIT_IP,
    V_XMIT_L2,
    V_XMIT_L2_OUT,
    VERDICT_NAMES,
)

_M32 = 0xFFFFFFFF


class Engine(Fast4):
    """The director.  See the module docstring; the public contract:

    ``process(buf, n, now)`` -> V_DROP / V_FORWARD / V_REPLY / V_FORWARD_OUT,
    with ``out_len`` (V_FORWARD: send ``buf[0:out_len]``), ``out`` (V_REPLY,
    V_FORWARD_OUT: send these bytes) and ``last_reason`` (V_DROP; counted in
    ``drops``; for V_REPLY it names why the packet was answered -- 'no_entry'
    for a RST, 'no_dest' for an ICMP unreachable -- and the answer is counted
    in ``replies`` ('rst', 'icmp_unreach'), not in ``drops``).

    Direct routing and tunnels (xmit/dr.py, tunnel.py) add V_XMIT_L2 (send
    ``buf[:out_len]`` on the link to ``out_xl``'s real server), V_XMIT_L2_OUT
    (the same with ``out``) and V_XMIT_IP (send ``out``, or each packet of
    it when it is a list, as the director's own); the driver side is
    l2out.py, which also fills ``tun_paths`` and answers ``path_miss``.

    Options: ``sloppy_tcp``, ``sloppy_sctp`` (settable at run time), ``rst_on_no_entry``,
    ``max_entries`` (settable), ``dec_ttl`` (construction only: decrement
    TTL / hop limit on the general path and drop at 0), ``frag_high_thresh``
    and ``frag_timeout`` (reassembly limits), ``expire_quiescent_template``
    (settable; the kernel sysctl: a persistence template whose destination
    has weight 0 is invalid; default False).

    Control: ``set_services``, ``set_timeouts``/``timeouts``, ``expire``
    (every second), ``zero``, ``entries``/``entry_objects``/``entry_counts``;
    counters: ``stats`` (global model.Stats), ``rates`` (RateEstimators over
    the global, service and destination Stats), ``drops``, ``replies``,
    ``frags`` (the Reassembler).
    """

    def __init__(self, sloppy_tcp=False, rst_on_no_entry=True, max_entries=1_000_000,
                 dec_ttl=False, frag_high_thresh=4 * 1024 * 1024, frag_timeout=30.0,
                 expire_quiescent_template=False, sloppy_sctp=False):
        self.sloppy_tcp = sloppy_tcp      # settable at run time
        self.sloppy_sctp = sloppy_sctp    # settable at run time (proto/sctp.py)
        self.expire_quiescent_template = expire_quiescent_template   # settable
        self.rst_on_no_entry = rst_on_no_entry
        self._dec_ttl = bool(dec_ttl)     # fixed at construction (the NAT plans depend on it)
        self._fast = not dec_ttl          # the IPv4 fast path never touches the TTL
        self.ct = ConnTable(max_entries)
        self._conns = self.ct.map
        self.defense = Defense(self.ct, set_secure)     # drop_entry, drop_packet, secure_tcp
        self.frags = Reassembler(frag_high_thresh, frag_timeout)
        self.stats = Stats()              # global totals
        self.rates = RateEstimators()     # 2 s estimators, stepped by expire()
        self.rates.track(self.stats)
        self.drops = Counter()            # reason -> count
        self.replies = Counter()          # 'rst' / 'icmp_unreach' -> count
        self.out = b""
        self.out_len = 0
        self.out_xl = None                # V_XMIT_L2*: the pair whose real server gets it
        self.partial_csum = 0             # vnet.py: (csum_start, field, gso type, gso size)
        self.tun_paths = {}               # tunnel server -> (outer source, path MTU): the driver's
        self.path_miss = None             # the driver's callback for a server without a path
        self.last_reason = None
        # per state, in float seconds: `last + timeout` then adds two floats,
        # which CPython specializes (fast4.py); `timeouts()` shows them as ints
        self._tmo = [float(t) for t in make_timeouts()]
        self._services = ()
        self._svc_tab = {}                # (proto, vaddr, vport) -> Service
        self._vips = set()                # every VIP address
        self._rs_tab = {}                 # (proto, daddr, dport) -> Xlate, or None if ambiguous
        self._rs_addrs = set()
        self._xl_cache = {}               # Dest -> Xlate (of its service)

    # ---------------------------------------------------------------- control

    @property
    def dec_ttl(self):
        return self._dec_ttl

    @property
    def max_entries(self):
        return self.ct.max_entries

    @max_entries.setter
    def max_entries(self, n):
        self.ct.max_entries = n

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        """``ipvsadm --set tcp tcpfin udp`` (0 = unchanged).  Existing entries
        take the new value at their next packet."""
        self._tmo[:] = [float(t) for t in make_timeouts(tcp, tcpfin, udp, base=self._tmo)]

    def timeouts(self):
        """(tcp, tcpfin, udp) as ``ipvsadm -L --timeout`` shows them."""
        return (int(self._tmo[ESTABLISHED]), int(self._tmo[FIN_WAIT]), int(self._tmo[UDP]))

    def set_services(self, services):
        """Rebuild the dispatch tables (tables.py) from an iterable of
        Services and swap them in.  Entries are never flushed."""
        services = tuple(services)
        t = tables.build(services, self._xl_cache, self._dec_ttl, self.stats)
        tracked = [self.stats]
        for svc in services:
            tracked.append(svc.stats)
            tracked.extend(d.stats for d in svc.dests)
        self.rates.retain(tracked)
        self._xl_cache = t.xl_cache
        self._rs_tab = t.rs_tab
        self._rs_addrs = t.rs_addrs
        self._vips = t.vips
        self._svc_tab = t.svc_tab
        self._services = services

    def services(self):
        return self._services

    def _xlate(self, svc, dest):
        """The Xlate of (svc, dest), cached by destination (a Dest object
        belongs to one service)."""
        xl = self._xl_cache.get(dest)
        if xl is None or xl.svc is not svc:
            xl = self._xl_cache[dest] = Xlate(svc, dest, self._dec_ttl, self.stats)
        return xl

    # ---------------------------------------------------------------- periodic

    def zero(self, svc=None):
        """``ipvsadm -Z [service]`` on the engine's side: without a service,
        zero the global totals and restart every rate estimator; with one,
        restart the estimators of that service and its destinations.  (The
        service and destination counters themselves are reset by
        ``Config.zero``.)"""
        if svc is None:
            self.stats.zero()
            self.rates.reset()
        else:
            self.rates.reset(svc.stats)
            for d in svc.dests:
                self.rates.reset(d.stats)

    def expire(self, now):
        """Coarse periodic sweep (call every second): expired entries, stale
        fragment queues, the rate estimators (every 2 s) and the stateless
        schedulers' timers.  Returns the number of entries removed."""
        n = self.ct.sweep(now)
        self.defense.tick(now)
        self.frags.expire(now)
        self.rates.tick(now)
        for svc in self._services:
            s = svc.sched
            if s is not None and s.stateless:
                s.sweep(now)
        return n

    def entries(self, now=None):
        """Live entries for ``ipvsadm -L -c``: conntrack.EntryRow tuples
        (``ConnTable.rows``)."""
        return self.ct.rows(now)

    def entry_counts(self, now=None):
        """{service key (proto, vaddr, vport): number of live entries} (for
        listings; docs/mhs-spec.md rule 13).  O(entries): not for the packet
        path."""
        out = {}
        for e in self.ct.live_entries(now):
            k = e.xl.svc.key
            out[k] = out.get(k, 0) + 1
        return out

    def entry_objects(self, now=None):
        """The Entry objects (live at `now` if given; else every linked one)."""
        return list(self.ct.live_entries(now))

    def __len__(self):
        return self.ct.count

    # ---------------------------------------------------------------- entries

    def link_entry(self, key, xl, st, now, tpl=None):
        """Create and link the entry of a new connection (packet key `key`,
        first state `st`), controlled by the template `tpl` if given: the one
        place that accounts a new connection (ActiveConn/InActConn, the
        overload threshold, ``conns``; the template's ``n_control`` and its
        ASSURED mark).  The caller checked the room."""
        if type(key) is int:
            # the reply key: proto, daddr, caddr, dport, cport
            okey = xl.okey4 | (key >> 32) & (_M32 << 32) | (key >> 16) & 0xFFFF
        else:
            okey = (key[0], xl.daddr, xl.dport, key[1], key[2])
        e = Entry(key, okey, xl, st, now, self._tmo[st])
        if tpl is not None:
            e.control = tpl
            tpl.n_control += 1
            if st == ESTABLISHED:
                tpl.state = TPL_ASSURED
        dest = xl.dest
        if IS_ACTIVE[st]:
            dest.activeconns += 1
        else:
            dest.inactconns += 1
        if dest.u_threshold:
            dest.conn_bound()
        self.ct.add(e)
        ds, ss, gs = xl.counted
        ds.conns += 1
        ss.conns += 1
        gs.conns += 1
        return e

    def _transition(self, e, st, ns, now):
        """State change of a linked entry: ActiveConn/InActConn accounting,
        new timeout, and an earlier sweep bucket if the expiry moved in."""
        a = IS_ACTIVE[ns]
        if a != IS_ACTIVE[st]:
            d = e.xl.dest
            if a:
                d.activeconns += 1
                d.inactconns -= 1
            else:
                d.activeconns -= 1
                d.inactconns += 1
        old_exp = e.last + e.timeout
        e.state = ns
        e.timeout = self._tmo[ns]
        e.last = now
        if now + e.timeout < old_exp:
            self.ct.schedule(e)
        if ns == ESTABLISHED and e.control is not None:
            e.control.state = TPL_ASSURED

    def _pick(self, svc, proto, caddr, cport, flags, now):
        """The destination of a new flow to `svc` (both paths): ``(dest,
        need_state, template or None)``, or a drop reason (R_NO_DEST: answer
        with an ICMP unreachable).  A persistent service's comes from the
        client's template (`_persist`).  The scheduler is not None."""
        sched = svc.sched
        ct = self.ct
        if sched.stateless:
            # docs/mhs-spec.md rules 9, 10: every packet without a live entry
            dest, need = sched.schedule_sl(caddr, cport, proto != IPPROTO_UDP, flags & TH_SYN,
                                           now)
            if dest is None:
                return R_NO_DEST
            if need and ct.count >= ct.max_entries:
                return R_CONN_LIMIT
            if need and self.defense.drop_rate and self.defense.todrop():
                return R_DEFENSE_DROP
            return dest, need, None
        if ct.count >= ct.max_entries:
            return R_CONN_LIMIT
        if self.defense.drop_rate and self.defense.todrop():     # drop_packet (defense.py)
            return R_DEFENSE_DROP
        if svc.flags & SVC_F_PERSISTENT:
            return self._persist(svc, proto, caddr, cport, now)
        dest = sched.schedule(caddr, cport)
        if dest is None:
            return R_NO_DEST
        return dest, True, None

    # ---------------------------------------------------------------- persistence

    def _persist(self, svc, proto, caddr, cport, now):
        """`_pick` for a persistent service: the destination of the client's
        live, valid template, else the scheduler's (then a new template)."""
        ct = self.ct
        tkey = persist.template_key(svc, proto, caddr)
        tpl = persist.valid_template(ct, tkey, now, self.expire_quiescent_template)
        if tpl is None:
            if ct.count + 1 >= ct.max_entries:     # room for a template and the entry
                return R_CONN_LIMIT
            dest = svc.sched.schedule(caddr, cport)
            if dest is None:
                return R_NO_DEST
            tpl = persist.new_template(ct, tkey, self._xlate(svc, dest), now, svc.timeout)
        return tpl.xl.dest, True, tpl

    # ---------------------------------------------------------------- general path

    def _general(self, buf, n, now):
        r = parse(buf, 0, n)
        if type(r) is str:
            return self._drop(r)
        if r[P_FRAG]:
            return self._fragment(buf, r, now)
        return self._handle(buf, r, now)

    def _drop(self, reason):
        self.last_reason = reason
        self.drops[reason] += 1
        return V_DROP

    def _fragment(self, buf, r, now):
        if r[P_DADDR] not in self._vips and r[P_SADDR] not in self._rs_addrs:
            return self._drop(R_NOT_FOR_US)
        res = self.frags.add(buf, r, now)
        if type(res) is str:
            return self._drop(res)
        r2 = parse(res, 0, len(res))
        if type(r2) is str:
            return self._drop(r2)
        if r2[P_FRAG]:
            return self._drop(R_FRAG_NOT_FIRST_PARSE)
        return self._handle(res, r2, now, True)

    def _handle(self, buf, r, now, reasm=False):
        proto = r[P_PROTO]
        if proto not in PROTOCOLS:
            return self._icmp(buf, r, now, reasm)
        saddr = r[P_SADDR]
        sport = r[P_SPORT]
        daddr = r[P_DADDR]
        dport = r[P_DPORT]
        key = make_key(proto, saddr, sport, daddr, dport)
        e = self._conns.get(key)
        if e is not None:
            if now >= e.last + e.timeout:
                self.ct.unlink(e)
                e = None
            elif key == e.ikey:
                # conn_reuse_mode 1: a SYN (TCP; other protocols' flags are 0)
                # on a closed entry not controlled by a template: schedule afresh
                # (SCTP: an INIT, whose code is 2, on a CLOSED entry)
                if (r[P_TCPFLAGS] & 6 == 2 and (e.state == TIME_WAIT or e.state == CLOSE
                                                or e.state == S_CLOSED)
                        and e.control is None):
                    self.ct.unlink(e)
                    e = None
                else:
                    return self._forward_entry(buf, r, e, True, now, reasm)
            else:
                return self._forward_entry(buf, r, e, False, now, reasm)
        svc = self._svc_tab.get((proto, daddr, dport))
        if svc is not None:
            return self._schedule(buf, r, svc, key, now, reasm)
        rs = self._rs_tab.get((proto, saddr, sport), 0)
        if rs != 0:
            if rs is None:
                return self._drop(R_REPLY_AMBIGUOUS)
            return self._xmit(buf, r, rs, False, reasm)
        if daddr in self._vips:
            if proto == IPPROTO_TCP:
                return self._no_entry_tcp(buf, r)
            return self._drop(R_NO_SERVICE)
        return self._drop(R_NOT_FOR_US)

    def _no_entry_tcp(self, buf, r):
        if r[P_TCPFLAGS] & TH_RST:
            return self._drop(R_RST_NO_ENTRY)
        if not self.rst_on_no_entry:
            return self._drop(R_NO_ENTRY)
        rst = nat.build_tcp_rst(buf, r)
        if rst is None:
            return self._drop(R_NO_ENTRY)
        self.out = bytes(rst)
        self.replies["rst"] += 1
        self.last_reason = R_NO_ENTRY
        return V_REPLY

    def _no_dest(self, buf, r):
        self.last_reason = R_NO_DEST
        rep = nat.build_port_unreachable(buf, r)
        if rep is None:
            return self._drop(R_NO_DEST)
        self.out = bytes(rep)
        self.replies["icmp_unreach"] += 1
        return V_REPLY

    def _xmit(self, buf, r, xl, inbound, reasm):
        """Forward a packet of the pair `xl` by its forwarding method (an ICMP
        error by its ICMP step), count it, and give the verdict."""
        fwd = xl.fwd
        if r[P_INNER] is None:
            ok = fwd.xmit(buf, r, xl, inbound, self._dec_ttl)
        else:
            ok = fwd.icmp_xmit(buf, r, xl, inbound, self._dec_ttl)
        if not ok:
            return self._drop(R_TTL_EXPIRED)
        nbytes = r[P_LEN]
        if ok is not True:
            # another method's transmit hook (xmit/dr.py, tunnel.py): counted
            # first, as IPVS counts before it transmits
            self._count(xl, inbound, nbytes)
            return ok(self, buf, nbytes, reasm)
        self._count(xl, inbound, nbytes)
        if reasm:
            self.out = bytes(buf[:nbytes])
            return V_FORWARD_OUT
        self.out_len = nbytes
        return V_FORWARD

    def _count(self, xl, inbound, nbytes):
        if inbound:
            for s in xl.counted:
                s.inpkts += 1
                s.inbytes += nbytes
        else:
            for s in xl.counted:
                s.outpkts += 1
                s.outbytes += nbytes

    def _forward_entry(self, buf, r, e, inbound, now, reasm):
        xl = e.xl
        if not (xl.dest.available or xl.stateless):
            return self._drop(R_DEST_UNAVAILABLE)
        v = self._xmit(buf, r, xl, inbound, reasm)
        if v != V_DROP:
            ops = PROTOCOLS[r[P_PROTO]]
            st = e.state
            t = (ops.next_in_only if xl.in_only else ops.next_in) if inbound else ops.next_out
            ns = t[r[P_TCPFLAGS] << 4 | st]
            if ns != st:
                self._transition(e, st, ns, now)
            else:
                e.timeout = self._tmo[ns]
                e.last = now
        return v

    def _schedule(self, buf, r, svc, key, now, reasm):
        """A packet without entry to the service `svc`."""
        sched = svc.sched
        if sched is None:
            return self._drop(R_NO_SCHEDULER)
        proto = r[P_PROTO]
        flags = r[P_TCPFLAGS]
        ops = PROTOCOLS[proto]
        if proto == IPPROTO_SCTP:
            if not (sched.stateless or ops.conn_schedule(flags, self.sloppy_sctp)):
                return self._drop(R_NO_ENTRY)       # IPVS leaves it to the local stack
        elif not (sched.stateless or ops.conn_schedule(flags, self.sloppy_tcp)):
            return self._no_entry_tcp(buf, r)
        got = self._pick(svc, proto, r[P_SADDR], r[P_SPORT], flags, now)
        if type(got) is str:
            return self._no_dest(buf, r) if got is R_NO_DEST else self._drop(got)
        dest, need, tpl = got
        xl = self._xlate(svc, dest)
        v = self._xmit(buf, r, xl, True, reasm)
        if v != V_DROP:
            if need:
                t = ops.next_in_only if xl.in_only else ops.next_in
                self.link_entry(key, xl, t[flags << 4], now, tpl)
            svc.forwarded = True
        return v

    # ---------------------------------------------------------------- ICMP

    def _icmp(self, buf, r, now, reasm):
        """An ICMP / ICMPv6 message: an error is forwarded on the connection
        of the packet it quotes (proto/icmp.py)."""
        why = icmp.refuse(r)
        if why is not None:
            return self._drop(why)
        # the quoted packet travelled the other way: flip it
        iproto, qsaddr, qsport, qdaddr, qdport = r[P_INNER][FLOW]
        key = make_key(iproto, qdaddr, qdport, qsaddr, qsport)
        e = self._conns.get(key)
        if e is not None and now < e.last + e.timeout:
            xl = e.xl
            if not (xl.dest.available or xl.stateless):
                return self._drop(R_DEST_UNAVAILABLE)
            return self._xmit(buf, r, xl, key == e.ikey, reasm)
        # no entry: a stateless service's flow (client side) ...
        svc = self._svc_tab.get((iproto, qsaddr, qsport))
        if svc is not None and svc.sched is not None and svc.sched.stateless:
            dest, _ = svc.sched.schedule_sl(qdaddr, qdport, iproto != IPPROTO_UDP, 0, now)
            if dest is None:
                return self._drop(R_ICMP_NO_ENTRY)
            return self._xmit(buf, r, self._xlate(svc, dest), True, reasm)
        # ... or the server side of a real server owned by one service
        xl = self._rs_tab.get((iproto, qdaddr, qdport))
        if xl is not None:
            return self._xmit(buf, r, xl, False, reasm)
        return self._drop(R_ICMP_NO_ENTRY)
