"""The sans-I/O director: ``process(buf, n, now) -> verdict``; the only entry
point for packets (IPVS.md §4, §5, §7; MHS.md rules 8-13).

Theory of operation
-------------------
A packet goes through, in order:

1. **Fast path** (IPv4, no options, not fragmented, TCP or UDP with a
   checksum, ``dec_ttl`` off): two ``unpack_from`` calls read everything
   needed (addresses as one 64-bit word, ports as one 32-bit word, flags,
   both checksums); the key is built from those words and looked up in the
   connection table; the TCP state moves by one tuple index; the rewrite
   adds precomputed constants to the address/port words and applies two
   precomputed RFC 1624 deltas; three ``pack_into`` calls write it back.
   Without an entry the same path handles a new flow to a service
   (``_new4``: scheduling, entry creation, stateless mhs forwarding) and a
   reply from a real server owned by one service (``_miss4``).  Anything
   unusual (a SYN on a TIME_WAIT entry, an expired entry, a removed
   destination, a packet that needs an answer) falls through to the general
   path, which decides everything again from scratch.
2. **General path**: ``packet.parse``; malformed packets are dropped with the
   parser's reason.  Fragments addressed to a VIP (or coming from a real
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
survive backend removal (MHS.md rule 11).

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

Persistence (``-p timeout``, ``-M netmask``; IPVS.md §1.8, §4.1-§4.3, §7)
------------------------------------------------------------------------
For a service with SVC_F_PERSISTENT a new connection is first looked up in
the persistence templates (conntrack.Template), keyed by (protocol, client
address & netmask -- IPv6: the first `netmask` bits --, VIP, vport); the
scheduler (hashing the full client address and port, as always) is only
consulted when there is no live, valid template, and its answer becomes a
new template (timeout = the service's ``-p`` timeout, counted in the
destination's PersistConn and in ``max_entries``; not in ``conns``, ActiveConn
or InActConn).  The connection is created as usual (``conns`` counted) and
controlled by the template (``n_control``), which

* is restarted to its timeout by every connection created through it;
* when its timer runs out while it still controls connections, is retried
  60 s later instead of expiring -- and, as in the kernel, keeps 60 s as its
  timeout from then on (later connections restart it to 60 s, not to ``-p``);
* is marked ASSURED (the ``-L -c`` state; NONE before) when a controlled
  TCP connection reaches ESTABLISHED;
* is *invalid* when its destination is no longer available (deleted from the
  service, or the service deleted), or -- only with the kernel's sysctl
  ``expire_quiescent_template`` (engine option, default off as in the
  kernel) -- when the destination's weight is 0: the default keeps sending a
  client with a template to a weight-0 (quiesced) server.  An invalid
  template is detached (the kernel re-hashes it with vport/dport 0xffff, as
  ``entries()`` shows it), not refreshed, expires on its own, and a new one
  is scheduled.

A SYN on a TIME_WAIT/CLOSE entry that is controlled by a template is not a
new connection (conn_reuse_mode): it moves the existing entry by the state
table, to the same server.  A template's key has the vport of the service,
except for port 21 (the kernel's FTP rule: vport and dport 0).  Switching a
service to non-persistent (``-E``) or changing its netmask leaves the
existing templates to expire.  New connections of persistent services take
``_new4_persist`` on the IPv4 fast path, ``_schedule`` on the general path.
Differences from the kernel: a UDP template is not marked ASSURED by a reply
(the UDP fast path is left alone; only the ``-L -c`` state name differs); a
template is retried while it still counts a controlled connection that has
run out but not yet been swept (at most the sweep's one second).
"""
from collections import Counter
from struct import Struct

from ..model import Stats
from . import nat
from ..model import SVC_F_PERSISTENT
from .conntrack import (TPL_ASSURED, TPL_STATE_NAMES, ConnTable, Entry, Template, Xlate,
                        make_key, mask6, retry_expiry, split_key, tpl_key)
from .frag import Reassembler
from .stats import RateEstimators
from .packet import parse
from .tcpstate import (CLOSE, ESTABLISHED, IS_ACTIVE, NEXT, NONE, TIME_WAIT, UDP, INPUT,
                       OUTPUT, make_timeouts, state_name)

V_DROP = 0
V_FORWARD = 1
V_REPLY = 2
V_FORWARD_OUT = 3
VERDICT_NAMES = ("DROP", "FORWARD", "REPLY", "FORWARD_OUT")

# drop reasons of the engine (the parser's own reasons are packet.ALL_REASONS;
# fragments: frag.py)
R_NOT_FOR_US = "not_for_us"
R_NO_ENTRY = "no_entry"                 # mid-stream TCP without entry, rst_on_no_entry=False
R_RST_NO_ENTRY = "rst_no_entry"         # a RST without entry (never answered)
R_NO_DEST = "no_dest"                   # scheduler found no destination, no reply possible
R_CONN_LIMIT = "conn_limit"
R_DEST_UNAVAILABLE = "dest_unavailable"
R_NO_SERVICE = "no_service"             # UDP to a VIP port without service
R_REPLY_AMBIGUOUS = "reply_ambiguous"   # reply w/o entry, several services own the server
R_ICMP_IGNORED = "icmp_ignored"         # ICMP that is not an error (echo, ...)
R_ICMP_NO_ENTRY = "icmp_no_entry"
R_TTL_EXPIRED = "ttl_expired"
R_NO_SCHEDULER = "no_scheduler"
R_FRAG_NOT_FIRST_PARSE = "frag_bad"

_IP4F = Struct("!2xH2xH1xBHQ")   # tot_len, frag, proto, csum, saddr<<32|daddr
_TCPF = Struct("!I8xBB2xH")      # sport<<16|dport, data offset, flags, csum
_UDPF = Struct("!IHH")           # sport<<16|dport, length, csum
_pack_HQ = Struct("!HQ").pack_into
_pack_I = Struct("!I").pack_into
_pack_H = Struct("!H").pack_into
_K_TCP = 6 << 96
_K_UDP = 17 << 96
_NEXT_IN = NEXT[INPUT]
_NEXT_OUT = NEXT[OUTPUT]
_TH_SYN = 0x02
_TH_RST = 0x04
_FTP_PORT = 21      # persistence templates of a port-21 service: vport 0 (kernel FTPPORT)


class Engine:
    """The director.  See the module docstring; the public contract:

    ``process(buf, n, now)`` -> V_DROP / V_FORWARD / V_REPLY / V_FORWARD_OUT,
    with ``out_len`` (V_FORWARD: send ``buf[0:out_len]``), ``out`` (V_REPLY,
    V_FORWARD_OUT: send these bytes) and ``last_reason`` (V_DROP; counted in
    ``drops``; for V_REPLY it names why the packet was answered -- 'no_entry'
    for a RST, 'no_dest' for an ICMP unreachable -- and the answer is counted
    in ``replies`` ('rst', 'icmp_unreach'), not in ``drops``).

    Options: ``sloppy_tcp`` (settable at run time), ``rst_on_no_entry``,
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
                 expire_quiescent_template=False):
        self.sloppy_tcp = sloppy_tcp      # settable at run time
        self.expire_quiescent_template = expire_quiescent_template   # settable
        self.rst_on_no_entry = rst_on_no_entry
        self._dec_ttl = bool(dec_ttl)     # fixed at construction (the NAT plans depend on it)
        self._fast = not dec_ttl          # the IPv4 fast paths never touch the TTL
        self.ct = ConnTable(max_entries)
        self._conns = self.ct.map
        self.frags = Reassembler(frag_high_thresh, frag_timeout)
        self.stats = Stats()              # global totals
        self.rates = RateEstimators()     # 2 s estimators, stepped by expire()
        self.rates.track(self.stats)
        self.drops = Counter()            # reason -> count
        self.replies = Counter()          # 'rst' / 'icmp_unreach' -> count
        self.out = b""
        self.out_len = 0
        self.last_reason = None
        self._tmo = make_timeouts()
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
        self._tmo[:] = make_timeouts(tcp, tcpfin, udp, base=self._tmo)

    def timeouts(self):
        """(tcp, tcpfin, udp) as ``ipvsadm -L --timeout`` shows them."""
        from .tcpstate import ESTABLISHED, FIN_WAIT
        return (self._tmo[ESTABLISHED], self._tmo[FIN_WAIT], self._tmo[UDP])

    def set_services(self, services):
        """Rebuild the dispatch tables from an iterable of Services and swap
        them in.  Entries are never flushed."""
        services = tuple(services)
        svc_tab = {}
        vips = set()
        owners = {}
        cache = {}
        old_cache = self._xl_cache
        for svc in services:
            svc_tab[(svc.protocol, svc.addr, svc.port)] = svc
            vips.add(svc.addr)
            for d in svc.dests:
                xl = old_cache.get(d)
                if (xl is None or xl.svc is not svc
                        or xl.stateless != bool(getattr(svc.sched, "stateless", False))):
                    xl = Xlate(svc, d, self._dec_ttl)
                cache[d] = xl
                k = (svc.protocol, d.addr, xl.dport)
                owners.setdefault(k, []).append(xl)
            # a stateless (mhs) service keeps forwarding to removed backends
            # while its old table refers to them: their replies must still be
            # translated on a director without an entry for the flow
            referenced = getattr(svc.sched, "referenced_dests", None)
            if referenced is not None:
                for d in referenced():
                    if d in cache or d.af != svc.af:
                        continue
                    xl = old_cache.get(d)
                    if xl is None or xl.svc is not svc or not xl.stateless:
                        xl = Xlate(svc, d, self._dec_ttl)
                    cache[d] = xl
                    owners.setdefault((svc.protocol, d.addr, xl.dport), []).append(xl)
        rs_tab = {}
        for k, xls in owners.items():
            rs_tab[k] = xls[0] if len({id(x.svc) for x in xls}) == 1 else None
        self._xl_cache = cache
        tracked = [self.stats]
        for svc in services:
            tracked.append(svc.stats)
            tracked.extend(d.stats for d in svc.dests)
        self.rates.retain(tracked)
        self._rs_tab = rs_tab
        self._rs_addrs = {k[1] for k in owners}
        self._vips = vips
        self._svc_tab = svc_tab
        self._services = services

    def services(self):
        return self._services

    def _xlate(self, svc, dest):
        """The Xlate of (svc, dest), cached by destination (a Dest object
        belongs to one service)."""
        xl = self._xl_cache.get(dest)
        if xl is None or xl.svc is not svc:
            xl = self._xl_cache[dest] = Xlate(svc, dest, self._dec_ttl)
        return xl

    # ---------------------------------------------------------------- periodic

    def zero(self, svc=None):
        """``ipvsadm -Z [service]`` on the engine's side: without a service,
        zero the global totals and restart every rate estimator; with one,
        restart the estimators of that service and its destinations.  (The
        service and destination counters themselves are reset by
        ``Config.zero``.)"""
        if svc is None:
            st = self.stats
            st.conns = st.inpkts = st.outpkts = st.inbytes = st.outbytes = 0
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
        self.frags.expire(now)
        self.rates.tick(now)
        for svc in self._services:
            s = svc.sched
            if s is not None and getattr(s, "stateless", False):
                s.sweep(now)
        return n

    def entries(self, now=None):
        """Live entries for ``ipvsadm -L -c``: tuples (protocol, caddr, cport,
        vaddr, vport, daddr, dport, state name, expires); connections, then
        persistence templates as the kernel lists them: masked client address,
        cport 0, state NONE or ASSURED (a detached one: vport and dport
        65535; a port-21 service's: vport and dport 0)."""
        out = []
        for e in self.ct.live_entries(now):
            p, ca, cp, va, vp = split_key(e.ikey)
            xl = e.xl
            if e.okey is not None:
                out.append((p, ca, cp, va, vp, xl.daddr, xl.dport, state_name(e.state),
                            e.last + e.timeout))
                continue
            exp = e.last + e.timeout
            if now is not None and now >= exp:
                exp = retry_expiry(e, now)          # still controlling: due for a retry
            if e.detached:
                vp = dp = 0xFFFF
            else:
                dp = xl.dport if vp else 0
            out.append((p, ca, 0, va, vp, xl.daddr, dp, TPL_STATE_NAMES[e.state], exp))
        return out

    def entry_counts(self, now=None):
        """{service key (proto, vaddr, vport): number of live entries} (for
        listings; MHS.md rule 13).  O(entries): not for the packet path."""
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

    # ---------------------------------------------------------------- packets

    def process(self, buf, n, now):
        if n > len(buf):
            n = len(buf)                   # as packet.parse: never read past the buffer
        # ---- fast path: IPv4 without options, unfragmented TCP/UDP, live entry
        if n >= 28 and buf[0] == 0x45 and self._fast:
            tlen, frag, proto, ipc, sd = _IP4F.unpack_from(buf, 0)
            if proto == 6:
                if not frag & 0x3FFF and 40 <= tlen <= n:
                    pp, doff, flags, l4c = _TCPF.unpack_from(buf, 20)
                    if doff >= 0x50 and (doff >> 4) << 2 <= tlen - 20:
                        key = sd << 32 | pp | _K_TCP
                        e = self._conns.get(key)
                        if e is not None and now < e.last + e.timeout:
                            xl = e.xl
                            st = e.state
                            dest = xl.dest
                            if dest.available or xl.stateless:
                                if key == e.ikey:
                                    if not (flags & 6 == 2 and (st == TIME_WAIT or st == CLOSE)):
                                        ns = _NEXT_IN[flags << 4 | st]
                                        x = (ipc ^ 0xFFFF) + xl.ipd_in
                                        _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF,
                                                 sd + xl.sd_in)
                                        x = (l4c ^ 0xFFFF) + xl.l4d_in
                                        _pack_I(buf, 20, pp + xl.pp_in)
                                        _pack_H(buf, 36, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF)
                                        s = xl.dstats
                                        s.inpkts += 1
                                        s.inbytes += tlen
                                        s = xl.sstats
                                        s.inpkts += 1
                                        s.inbytes += tlen
                                        s = self.stats
                                        s.inpkts += 1
                                        s.inbytes += tlen
                                        if ns != st:
                                            self._transition(e, st, ns, now)
                                        else:
                                            e.timeout = self._tmo[ns]
                                            e.last = now
                                        self.out_len = tlen
                                        return 1
                                else:
                                    ns = _NEXT_OUT[flags << 4 | st]
                                    x = (ipc ^ 0xFFFF) + xl.ipd_out
                                    _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF,
                                             sd + xl.sd_out)
                                    x = (l4c ^ 0xFFFF) + xl.l4d_out
                                    _pack_I(buf, 20, pp + xl.pp_out)
                                    _pack_H(buf, 36, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF)
                                    s = xl.dstats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                    s = xl.sstats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                    s = self.stats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                    if ns != st:
                                        self._transition(e, st, ns, now)
                                    else:
                                        e.timeout = self._tmo[ns]
                                        e.last = now
                                    self.out_len = tlen
                                    return 1
                        elif e is None:
                            v = self._miss4(buf, n, key, sd, pp, flags, ipc, l4c, 36, tlen, now)
                            if v is not None:
                                return v
            elif proto == 17:
                if not frag & 0x3FFF and tlen <= n:
                    pp, ulen, l4c = _UDPF.unpack_from(buf, 20)
                    if 8 <= ulen <= tlen - 20 and l4c:
                        key = sd << 32 | pp | _K_UDP
                        e = self._conns.get(key)
                        if e is None:
                            v = self._miss4(buf, n, key, sd, pp, 0, ipc, l4c, 26, tlen, now)
                            if v is not None:
                                return v
                        elif now < e.last + e.timeout:
                            xl = e.xl
                            if xl.dest.available or xl.stateless:
                                if key == e.ikey:
                                    x = (ipc ^ 0xFFFF) + xl.ipd_in
                                    _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF,
                                             sd + xl.sd_in)
                                    x = (l4c ^ 0xFFFF) + xl.l4d_in
                                    x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
                                    _pack_I(buf, 20, pp + xl.pp_in)
                                    _pack_H(buf, 26, x or 0xFFFF)
                                    s = xl.dstats
                                    s.inpkts += 1
                                    s.inbytes += tlen
                                    s = xl.sstats
                                    s.inpkts += 1
                                    s.inbytes += tlen
                                    s = self.stats
                                    s.inpkts += 1
                                    s.inbytes += tlen
                                else:
                                    x = (ipc ^ 0xFFFF) + xl.ipd_out
                                    _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF,
                                             sd + xl.sd_out)
                                    x = (l4c ^ 0xFFFF) + xl.l4d_out
                                    x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
                                    _pack_I(buf, 20, pp + xl.pp_out)
                                    _pack_H(buf, 26, x or 0xFFFF)
                                    s = xl.dstats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                    s = xl.sstats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                    s = self.stats
                                    s.outpkts += 1
                                    s.outbytes += tlen
                                e.timeout = self._tmo[UDP]
                                e.last = now
                                self.out_len = tlen
                                return 1
        # ---- general path
        r = parse(buf, 0, n)
        if type(r) is str:
            return self._drop(r)
        if r[12]:                          # P_FRAG
            return self._fragment(buf, r, now)
        return self._handle(buf, r, now)

    # ---------------------------------------------------------------- helpers

    def _drop(self, reason):
        self.last_reason = reason
        self.drops[reason] += 1
        return V_DROP

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

    def _miss4(self, buf, n, key, sd, pp, flags, ipc, l4c, coff, tlen, now):
        """IPv4 fast path without an entry: a new flow to a service (TCP SYN,
        any TCP but RST with sloppy_tcp, any TCP for a stateless scheduler,
        UDP), or a reply from a real server owned by one service.  None:
        take the general path (RST answers, drops, ...)."""
        proto = 6 if coff == 36 else 17
        svc = self._svc_tab.get((proto, sd & 0xFFFFFFFF, pp & 0xFFFF))
        if svc is not None:
            sched = svc.sched
            if (proto == 17 or flags & 6 == 2 or (sched is not None and sched.stateless)
                    or (self.sloppy_tcp and not flags & 4)):
                return self._new4(buf, n, svc, key, sd, pp, flags, ipc, l4c, coff, tlen, now)
            return None
        xl = self._rs_tab.get((proto, sd >> 32, pp >> 16))
        if xl is None:
            return None
        x = (ipc ^ 0xFFFF) + xl.ipd_out
        _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF, sd + xl.sd_out)
        x = (l4c ^ 0xFFFF) + xl.l4d_out
        x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
        _pack_I(buf, 20, pp + xl.pp_out)
        _pack_H(buf, coff, x or 0xFFFF if coff == 26 else x)
        s = xl.dstats
        s.outpkts += 1
        s.outbytes += tlen
        s = xl.sstats
        s.outpkts += 1
        s.outbytes += tlen
        s = self.stats
        s.outpkts += 1
        s.outbytes += tlen
        self.out_len = tlen
        return V_FORWARD

    def _new4(self, buf, n, svc, key, sd, pp, flags, ipc, l4c, coff, tlen, now):
        """A new flow on the IPv4 fast path (no options, not fragmented):
        TCP SYN without RST, or a UDP datagram with a checksum, to a service."""
        sched = svc.sched
        if sched is None:
            return self._drop(R_NO_SCHEDULER)
        ct = self.ct
        if sched.stateless:
            dest, need = sched.schedule_sl(sd >> 32, pp >> 16, coff == 36, flags & _TH_SYN, now)
            if dest is None:
                return self._no_dest(buf, parse(buf, 0, n))
            if need and ct.count >= ct.max_entries:
                return self._drop(R_CONN_LIMIT)
        else:
            if svc.flags & SVC_F_PERSISTENT:
                return self._new4_persist(buf, n, svc, key, sd, pp, flags, ipc, l4c, coff,
                                          tlen, now)
            if ct.count >= ct.max_entries:
                return self._drop(R_CONN_LIMIT)
            dest = sched.schedule(sd >> 32, pp >> 16)
            if dest is None:
                return self._no_dest(buf, parse(buf, 0, n))
            need = True
        xl = self._xl_cache.get(dest)
        if xl is None or xl.svc is not svc:
            xl = self._xlate(svc, dest)
        x = (ipc ^ 0xFFFF) + xl.ipd_in
        _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF, sd + xl.sd_in)
        x = (l4c ^ 0xFFFF) + xl.l4d_in
        x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
        _pack_I(buf, 20, pp + xl.pp_in)
        _pack_H(buf, coff, x or 0xFFFF if coff == 26 else x)
        svc.forwarded = True
        ds = xl.dstats
        ss = xl.sstats
        gs = self.stats
        if need:
            # the reply key: proto, daddr, caddr, dport, cport
            okey = xl.okey4 | (sd >> 32) << 32 | pp >> 16
            st = _NEXT_IN[flags << 4] if coff == 36 else UDP   # first transition from NONE
            e = Entry(key, okey, xl, st, now, self._tmo[st])
            if IS_ACTIVE[st]:
                dest.activeconns += 1
            else:
                dest.inactconns += 1
            if dest.u_threshold:
                dest.conn_bound()
            ct.add(e)
            ds.conns += 1
            ss.conns += 1
            gs.conns += 1
        ds.inpkts += 1
        ds.inbytes += tlen
        ss.inpkts += 1
        ss.inbytes += tlen
        gs.inpkts += 1
        gs.inbytes += tlen
        self.out_len = tlen
        return V_FORWARD

    def _new4_persist(self, buf, n, svc, key, sd, pp, flags, ipc, l4c, coff, tlen, now):
        """`_new4` for a persistent service: the destination of the client's
        template, or the scheduler's (then a new template); the entry is
        controlled by the template.  (`_schedule` does the same on the
        general path.)"""
        ct = self.ct
        if ct.count >= ct.max_entries:
            return self._drop(R_CONN_LIMIT)
        caddr = sd >> 32
        proto = 6 if coff == 36 else 17
        tkey = self._tpl_key(svc, proto, caddr)
        tpl = self._template(svc, tkey, now)
        if tpl is None:
            if ct.count + 1 >= ct.max_entries:     # room for a template and the entry
                return self._drop(R_CONN_LIMIT)
            dest = svc.sched.schedule(caddr, pp >> 16)
            if dest is None:
                return self._no_dest(buf, parse(buf, 0, n))
            tpl = self._new_template(svc, tkey, dest, now)
        else:
            dest = tpl.xl.dest
        xl = self._xl_cache.get(dest)
        if xl is None or xl.svc is not svc:
            xl = self._xlate(svc, dest)
        x = (ipc ^ 0xFFFF) + xl.ipd_in
        _pack_HQ(buf, 10, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF, sd + xl.sd_in)
        x = (l4c ^ 0xFFFF) + xl.l4d_in
        x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
        _pack_I(buf, 20, pp + xl.pp_in)
        _pack_H(buf, coff, x or 0xFFFF if coff == 26 else x)
        svc.forwarded = True
        if coff == 36:
            st = _NEXT_IN[flags << 4]                      # first transition from NONE
            if st == ESTABLISHED:
                tpl.state = TPL_ASSURED
        else:
            st = UDP
        e = Entry(key, xl.okey4 | caddr << 32 | pp >> 16, xl, st, now, self._tmo[st])
        e.control = tpl
        tpl.n_control += 1
        if IS_ACTIVE[st]:
            dest.activeconns += 1
        else:
            dest.inactconns += 1
        if dest.u_threshold:
            dest.conn_bound()
        ct.add(e)
        s = xl.dstats
        s.conns += 1
        s.inpkts += 1
        s.inbytes += tlen
        s = xl.sstats
        s.conns += 1
        s.inpkts += 1
        s.inbytes += tlen
        s = self.stats
        s.conns += 1
        s.inpkts += 1
        s.inbytes += tlen
        self.out_len = tlen
        return V_FORWARD

    def _verdict_forward(self, buf, r, reasm):
        if reasm:
            self.out = bytes(buf[:r[9]])
            return V_FORWARD_OUT
        self.out_len = r[9]
        return V_FORWARD

    def _fragment(self, buf, r, now):
        if r[4] not in self._vips and r[2] not in self._rs_addrs:
            return self._drop(R_NOT_FOR_US)
        res = self.frags.add(buf, r, now)
        if type(res) is str:
            return self._drop(res)
        r2 = parse(res, 0, len(res))
        if type(r2) is str:
            return self._drop(r2)
        if r2[12]:
            return self._drop(R_FRAG_NOT_FIRST_PARSE)
        return self._handle(res, r2, now, True)

    def _handle(self, buf, r, now, reasm=False):
        proto = r[1]
        if proto != 6 and proto != 17:
            if r[18] is not None:
                return self._icmp_error(buf, r, now, reasm)
            return self._drop(R_ICMP_IGNORED)
        saddr = r[2]
        sport = r[3]
        daddr = r[4]
        dport = r[5]
        key = make_key(proto, saddr, sport, daddr, dport)
        e = self._conns.get(key)
        if e is not None:
            if now >= e.last + e.timeout:
                self.ct.unlink(e)
                e = None
            elif key == e.ikey:
                if (proto == 6 and r[6] & 6 == 2 and (e.state == TIME_WAIT or e.state == CLOSE)
                        and e.control is None):
                    self.ct.unlink(e)              # conn_reuse_mode 1: schedule afresh
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
            return self._forward_stateless(buf, r, rs, False, reasm)
        if daddr in self._vips:
            if proto == 6:
                return self._no_entry_tcp(buf, r)
            return self._drop(R_NO_SERVICE)
        return self._drop(R_NOT_FOR_US)

    def _no_entry_tcp(self, buf, r):
        if r[6] & _TH_RST:
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

    def _rewrite(self, buf, r, plan):
        """General-path rewrite; False if the TTL would expire."""
        if self._dec_ttl and nat.ttl_expired(buf, r):
            return False
        nat.rewrite(buf, r, plan)
        return True

    def _count_in(self, xl, nbytes):
        s = xl.dstats
        s.inpkts += 1
        s.inbytes += nbytes
        s = xl.sstats
        s.inpkts += 1
        s.inbytes += nbytes
        s = self.stats
        s.inpkts += 1
        s.inbytes += nbytes

    def _count_out(self, xl, nbytes):
        s = xl.dstats
        s.outpkts += 1
        s.outbytes += nbytes
        s = xl.sstats
        s.outpkts += 1
        s.outbytes += nbytes
        s = self.stats
        s.outpkts += 1
        s.outbytes += nbytes

    def _forward_entry(self, buf, r, e, inbound, now, reasm):
        xl = e.xl
        if not (xl.dest.available or xl.stateless):
            return self._drop(R_DEST_UNAVAILABLE)
        if not self._rewrite(buf, r, xl.plan_in if inbound else xl.plan_out):
            return self._drop(R_TTL_EXPIRED)
        st = e.state
        if st == UDP:
            e.timeout = self._tmo[UDP]
            e.last = now
        else:
            ns = (_NEXT_IN if inbound else _NEXT_OUT)[r[6] << 4 | st]
            if ns != st:
                self._transition(e, st, ns, now)
            else:
                e.timeout = self._tmo[ns]
                e.last = now
        if inbound:
            self._count_in(xl, r[9])
        else:
            self._count_out(xl, r[9])
        return self._verdict_forward(buf, r, reasm)

    def _forward_stateless(self, buf, r, xl, inbound, reasm):
        if not self._rewrite(buf, r, xl.plan_in if inbound else xl.plan_out):
            return self._drop(R_TTL_EXPIRED)
        if inbound:
            self._count_in(xl, r[9])
            xl.svc.forwarded = True
        else:
            self._count_out(xl, r[9])
        return self._verdict_forward(buf, r, reasm)

    def _schedule(self, buf, r, svc, key, now, reasm):
        proto = r[1]
        flags = r[6]
        sched = svc.sched
        if sched is None:
            return self._drop(R_NO_SCHEDULER)
        caddr = r[2]
        cport = r[3]
        if sched.stateless:
            # MHS.md rules 9, 10: every packet without a live entry
            dest, need = sched.schedule_sl(caddr, cport, proto == 6, flags & _TH_SYN, now)
            if dest is None:
                return self._no_dest(buf, r)
            xl = self._xlate(svc, dest)
            if not need:
                return self._forward_stateless(buf, r, xl, True, reasm)
            if self.ct.full():
                return self._drop(R_CONN_LIMIT)
        else:
            if proto == 6:
                if flags & _TH_RST:
                    return self._drop(R_RST_NO_ENTRY)
                if not (flags & _TH_SYN or self.sloppy_tcp):
                    return self._no_entry_tcp(buf, r)
            if self.ct.full():
                return self._drop(R_CONN_LIMIT)
            if svc.flags & SVC_F_PERSISTENT:
                tkey = self._tpl_key(svc, proto, caddr)
                tpl = self._template(svc, tkey, now)
                if tpl is None:
                    ct = self.ct
                    if ct.count + 1 >= ct.max_entries:     # room for a template and the entry
                        return self._drop(R_CONN_LIMIT)
                    dest = sched.schedule(caddr, cport)
                    if dest is None:
                        return self._no_dest(buf, r)
                    tpl = self._new_template(svc, tkey, dest, now)
                else:
                    dest = tpl.xl.dest
                return self._schedule_controlled(buf, r, svc, key, dest, tpl, now, reasm)
            dest = sched.schedule(caddr, cport)
            if dest is None:
                return self._no_dest(buf, r)
            xl = self._xlate(svc, dest)
        if not self._rewrite(buf, r, xl.plan_in):
            return self._drop(R_TTL_EXPIRED)
        # the new entry: first transition from NONE happens now
        if proto == 6:
            st = _NEXT_IN[flags << 4 | NONE]
            okey = make_key(6, xl.daddr, xl.dport, caddr, cport)
        else:
            st = UDP
            okey = make_key(17, xl.daddr, xl.dport, caddr, cport)
        e = Entry(key, okey, xl, st, now, self._tmo[st])
        if IS_ACTIVE[st]:
            dest.activeconns += 1
        else:
            dest.inactconns += 1
        dest.conn_bound()
        self.ct.add(e)
        svc.forwarded = True
        xl.dstats.conns += 1
        xl.sstats.conns += 1
        self.stats.conns += 1
        self._count_in(xl, r[9])
        return self._verdict_forward(buf, r, reasm)

    # ---------------------------------------------------------------- persistence

    @staticmethod
    def _tpl_key(svc, proto, caddr):
        """(proto, client & netmask, 0, VIP, vport -- 0 for port 21) as a key."""
        m = svc.netmask
        c = caddr & m if type(caddr) is int else mask6(caddr, m)
        vport = svc.port
        return tpl_key(proto, c, svc.addr, 0 if vport == _FTP_PORT else vport)

    def _template(self, svc, tkey, now):
        """The client's live, valid template (key `tkey`), restarted to its
        timeout (kernel ip_vs_sched_persist + ip_vs_check_template), or None."""
        ct = self.ct
        tpl = ct.template(tkey, now)
        if tpl is None:
            return None
        d = tpl.xl.dest
        if not d.available or (self.expire_quiescent_template and d.weight <= 0):
            ct.detach(tpl)                  # invalid: left to expire, not restarted
            return None
        tpl.last = now
        return tpl

    def _new_template(self, svc, tkey, dest, now):
        t = Template(tkey, self._xlate(svc, dest), now, svc.timeout)
        dest.persistconns += 1
        dest.conn_bound()
        self.ct.add_template(t)
        return t

    def _schedule_controlled(self, buf, r, svc, key, dest, tpl, now, reasm):
        """The new connection of a persistent service, bound to `dest` and
        controlled by `tpl` (conns counted; the template is not)."""
        xl = self._xlate(svc, dest)
        if not self._rewrite(buf, r, xl.plan_in):
            return self._drop(R_TTL_EXPIRED)
        proto = r[1]
        caddr = r[2]
        cport = r[3]
        if proto == 6:
            st = _NEXT_IN[r[6] << 4 | NONE]
            if st == ESTABLISHED:
                tpl.state = TPL_ASSURED
        else:
            st = UDP
        e = Entry(key, make_key(proto, xl.daddr, xl.dport, caddr, cport), xl, st, now,
                  self._tmo[st])
        e.control = tpl
        tpl.n_control += 1
        if IS_ACTIVE[st]:
            dest.activeconns += 1
        else:
            dest.inactconns += 1
        dest.conn_bound()
        self.ct.add(e)
        svc.forwarded = True
        xl.dstats.conns += 1
        xl.sstats.conns += 1
        self.stats.conns += 1
        self._count_in(xl, r[9])
        return self._verdict_forward(buf, r, reasm)

    # ---------------------------------------------------------------- ICMP

    def _icmp_error(self, buf, r, now, reasm):
        if r[16] == 12 and r[0] == 4:
            # IPv4 Parameter Problem: not one of the errors IPVS handles (§5.4)
            return self._drop(R_ICMP_IGNORED)
        inner = r[18]
        iproto = inner[1]
        if (iproto != 6 and iproto != 17) or inner[12] == 2:
            return self._drop(R_ICMP_NO_ENTRY)
        # the quoted packet travelled the other way: flip it
        qsaddr, qsport, qdaddr, qdport = inner[2], inner[3], inner[4], inner[5]
        key = make_key(iproto, qdaddr, qdport, qsaddr, qsport)
        e = self._conns.get(key)
        if e is not None and now < e.last + e.timeout:
            xl = e.xl
            if not (xl.dest.available or xl.stateless):
                return self._drop(R_DEST_UNAVAILABLE)
            if key == e.ikey:
                return self._icmp_fwd(buf, r, xl, True, reasm)
            return self._icmp_fwd(buf, r, xl, False, reasm)
        # no entry: a stateless service's flow (client side) ...
        svc = self._svc_tab.get((iproto, qsaddr, qsport))
        if svc is not None and svc.sched is not None and svc.sched.stateless:
            dest, _ = svc.sched.schedule_sl(qdaddr, qdport, iproto == 6, 0, now)
            if dest is None:
                return self._drop(R_ICMP_NO_ENTRY)
            return self._icmp_fwd(buf, r, self._xlate(svc, dest), True, reasm)
        # ... or the server side of a real server owned by one service
        xl = self._rs_tab.get((iproto, qdaddr, qdport))
        if xl is not None:
            return self._icmp_fwd(buf, r, xl, False, reasm)
        return self._drop(R_ICMP_NO_ENTRY)

    def _icmp_fwd(self, buf, r, xl, inbound, reasm):
        if self._dec_ttl and nat.ttl_expired(buf, r):
            return self._drop(R_TTL_EXPIRED)
        if inbound:
            nat.icmp_in(buf, r, xl.daddr, xl.dport, self._dec_ttl)
            self._count_in(xl, r[9])
        else:
            nat.icmp_out(buf, r, xl.vaddr, xl.vport, self._dec_ttl)
            self._count_out(xl, r[9])
        return self._verdict_forward(buf, r, reasm)
