"""The direct-routing and tunnel paths of the driver (docs/forwarding.md): a
driver module beside tun.py and steering.py, the only place that sends
frames on a link.

* Direct routing (verdicts V_XMIT_L2 / V_XMIT_L2_OUT of the engine,
  xmit/dr.py): the packet goes out unchanged in an Ethernet frame to the
  link-layer address of the next hop towards the real server (the server
  itself on its link; a gateway when the route has one, as the kernel's
  route lookup would do), on the interface the route uses, through one
  ``AF_PACKET`` socket.  With the TUN device's offloads the virtio-net
  header comes along (``PACKET_VNET_HDR``, offsets moved by the Ethernet
  header), so the kernel completes checksums and segments GSO packets on
  that link.
* Tunnels (xmit/tunnel.py): the engine needs, per real server, the
  director's source address on the way to it and the path MTU; they are
  looked up here and handed over in ``Engine.tun_paths``.  The outer packets
  (verdict V_XMIT_IP) leave through a raw IP socket as the director's own.

Look-ups (pyroute2: the route, the link, the neighbour entry) never run on
the packet path: a packet whose server is not resolved yet is dropped
('l2_unresolved', counted in ``drops``) and a look-up starts on a worker
thread; an unknown or failed neighbour is probed through the kernel
(``NTF_USE``: the kernel's own ARP / neighbour discovery) and polled for up
to a second.  Resolved paths are looked up again in the background every
``refresh`` seconds (the kernel keeps a used neighbour fresh).  Other drop
reasons: 'l2_no_route' (no route, or a route that is not unicast),
'l2_not_ethernet' (the route's link has no 6-byte address), 'l2_too_big'
(a packet that cannot be answered or cut), 'l2_send_error'.  An IPv4 packet
without DF above the link MTU is sent in fragments (`fragment4`; counted as
'l2_fragmented').  A packet above the link MTU with DF (or IPv6) is answered,
as IPVS does, with ICMP "fragmentation needed" / ICMPv6 "packet too big"
from the VIP; the caller writes that answer to the TUN device.
"""
import socket
import threading
import time
from collections import Counter
from struct import Struct

from . import nat
from .csum import checksum
from .packet import parse

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_VNET_HDR = 15
NTF_USE = 0x01
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80   # REACHABLE STALE DELAY PROBE NOARP PERMANENT
_VHDR = Struct("<BBHHHH")

R_UNRESOLVED = "l2_unresolved"
R_NO_ROUTE = "l2_no_route"
R_NOT_ETHERNET = "l2_not_ethernet"
R_TOO_BIG = "l2_too_big"
R_SEND = "l2_send_error"


def _addr_text(a):
    if type(a) is int:
        return socket.inet_ntop(socket.AF_INET, a.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, bytes(a))


def _addr_value(text, af):
    raw = socket.inet_pton(af, text)
    return int.from_bytes(raw, "big") if af == socket.AF_INET else raw


class Path:
    """Where packets for one real server go."""
    __slots__ = ("ifname", "ifindex", "mtu", "frame4", "frame6", "src", "error", "when")

    def __init__(self):
        self.ifname = None
        self.ifindex = 0
        self.mtu = 1500
        self.frame4 = self.frame6 = None   # Ethernet header (dst, src, type) per family
        self.src = None                    # the director's source address towards it
        self.error = None                  # a drop reason while it cannot be used
        self.when = 0.0


def lookup(ipr, addr, probe_wait=1.0):
    """A Path for `addr` (pyroute2 IPRoute `ipr`; blocking, worker thread)."""
    p = Path()
    p.when = time.monotonic()
    fam = socket.AF_INET if type(addr) is int else socket.AF_INET6
    text = _addr_text(addr)
    try:
        rt = ipr.route("get", dst=text)[0]
    except Exception:   # noqa: BLE001 - no route: netlink error
        p.error = R_NO_ROUTE
        return p
    if rt["type"] != 1:                    # RTN_UNICAST only
        p.error = R_NO_ROUTE
        return p
    oif = rt.get_attr("RTA_OIF")
    gw = rt.get_attr("RTA_GATEWAY")
    src = rt.get_attr("RTA_PREFSRC")
    if src is not None:
        p.src = _addr_value(src, fam)
    link = ipr.get_links(oif)[0]
    p.ifindex = oif
    p.ifname = link.get_attr("IFLA_IFNAME")
    p.mtu = link.get_attr("IFLA_MTU") or 1500
    metrics = rt.get_attr("RTA_METRICS")
    if metrics is not None:
        m = metrics.get_attr("RTAX_MTU")
        if m:
            p.mtu = min(p.mtu, m)
    lladdr = link.get_attr("IFLA_ADDRESS")
    if not lladdr or len(lladdr.split(":")) != 6:
        p.error = R_NOT_ETHERNET
        return p
    nh = gw or text
    mac = _neighbour(ipr, nh, oif, probe_wait)
    if mac is None:
        p.error = R_UNRESOLVED
        return p
    head = bytes.fromhex(mac.replace(":", "")) + bytes.fromhex(lladdr.replace(":", ""))
    p.frame4 = head + ETH_P_IP.to_bytes(2, "big")
    p.frame6 = head + ETH_P_IPV6.to_bytes(2, "big")
    return p


def _neighbour(ipr, nh, oif, wait):
    deadline = time.monotonic() + wait
    probed = False
    while True:
        for m in ipr.get_neighbours(dst=nh, ifindex=oif):
            mac = m.get_attr("NDA_LLADDR")
            if mac and m["state"] & NUD_VALID:
                if not m["state"] & 0x02 and not probed:   # STALE etc.: let the kernel confirm
                    _probe(ipr, nh, oif)
                return mac
        if not probed:
            _probe(ipr, nh, oif)
            probed = True
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _probe(ipr, nh, oif):
    """Have the kernel resolve `nh` (an ARP request / neighbour solicitation)."""
    try:
        ipr.neigh("replace", dst=nh, ifindex=oif, flags=NTF_USE, state=0)
    except Exception:   # noqa: BLE001 - the poll reports what came of it
        pass


def fragment4(data, mtu, hdr=None):
    """The fragments of an IPv4 packet without DF for a link of `mtu` bytes
    (RFC 791: 8-byte units, MF on all but the last, the header -- options
    included -- copied into each, header checksums new).  A partial L4
    checksum (virtio-net NEEDS_CSUM in `hdr`) is completed first.  None if
    the header leaves no room."""
    buf = bytearray(data)
    ihl = (buf[0] & 15) << 2
    n = (buf[2] << 8 | buf[3])
    if hdr is not None and hdr[0] & 1:
        # the field holds the pseudo-header sum (vnet.py restored it)
        cs, co = _VHDR.unpack_from(hdr)[4:6]
        pos = cs + co
        f = buf[pos] << 8 | buf[pos + 1]
        buf[pos] = buf[pos + 1] = 0
        c = checksum(buf, cs, n, f)
        if c == 0 and co == 6:
            c = 0xFFFF
        buf[pos], buf[pos + 1] = c >> 8, c & 0xFF
    step = (mtu - ihl) & ~7
    if step <= 0 or n <= ihl:
        return None
    base = (buf[6] << 8 | buf[7])
    off0 = (base & 0x1FFF) << 3
    mf0 = base & 0x2000
    out = []
    for start in range(ihl, n, step):
        end = min(start + step, n)
        f = bytearray(buf[:ihl]) + buf[start:end]
        last = end == n
        word = ((off0 + start - ihl) >> 3) | (0x2000 if (not last or mf0) else 0)
        f[2], f[3] = len(f) >> 8, len(f) & 0xFF
        f[6], f[7] = word >> 8, word & 0xFF
        f[10] = f[11] = 0
        c = checksum(f, 0, ihl)
        f[10], f[11] = c >> 8, c & 0xFF
        out.append(f)
    return out


class L2Out:
    """Sends direct-routing verdicts and keeps the engine's tunnel paths.

    ``send(xl, data, hdr)``: `data` (a memoryview or bytes of one IP
    packet) to `xl`'s real server; `hdr` the virtio-net header it came with
    (None without offloads).  Returns None, or bytes to write to the TUN
    device (an ICMP answer to the client).  Counters: ``tx``, ``drops``.
    """

    def __init__(self, engine=None, vnet=False, refresh=10.0, probe_wait=1.0,
                 ipr_factory=None):
        self.engine = engine
        self.vnet = vnet
        self.refresh = refresh
        self.probe_wait = probe_wait
        self.paths = {}            # address -> Path
        self.tx = 0
        self.drops = Counter()
        self._pending = set()
        self._queue = []
        self._working = False
        self._lock = threading.Lock()
        self._ipr_factory = ipr_factory
        self.sock = None           # the AF_PACKET socket, opened at the first frame
        self._zero = bytes(10)
        self._raw = {}             # family -> raw IP socket (tunnels' outer packets)
        if engine is not None:
            engine.path_miss = self.want

    def _open(self):
        """The packet socket (needs CAP_NET_RAW; opened only when direct
        routing is used, so a masquerading-only director never needs it)."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        if self.vnet:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        self.sock = s
        return s

    def close(self):
        if self.sock is not None:
            self.sock.close()
        for s in self._raw.values():
            s.close()

    # -- look-ups, off the packet path
    def want(self, addr):
        """Look `addr` up in the background."""
        self.want_many((addr,))

    def want_many(self, addrs):
        """Queue addresses for the one worker thread (started when needed)."""
        with self._lock:
            new = [a for a in addrs if a not in self._pending]
            self._pending.update(new)
            self._queue.extend(new)
            if not new or self._working:
                return
            self._working = True
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self):
        from pyroute2 import IPRoute
        try:
            with (self._ipr_factory or IPRoute)() as ipr:
                while True:
                    with self._lock:
                        if not self._queue:
                            self._working = False
                            return
                        a = self._queue.pop(0)
                    try:
                        self._store(a, lookup(ipr, a, self.probe_wait))
                    finally:
                        with self._lock:
                            self._pending.discard(a)
        except Exception:   # noqa: BLE001 - no netlink: packets stay 'l2_unresolved'
            with self._lock:
                self._working = False
                self._pending.difference_update(self._queue)
                self._queue.clear()

    def resolve_now(self, addrs):
        """Look addresses up and wait for the answers (tests); on a worker
        thread, as pyroute2 cannot run beside a running event loop."""
        from pyroute2 import IPRoute

        def work():
            with (self._ipr_factory or IPRoute)() as ipr:
                for a in addrs:
                    self._store(a, lookup(ipr, a, self.probe_wait))
        addrs = list(addrs)
        if addrs:
            t = threading.Thread(target=work, daemon=True)
            t.start()
            t.join()

    def _store(self, a, p):
        self.paths[a] = p
        if self.engine is not None:
            if p.src is not None and p.error in (None, R_UNRESOLVED, R_NOT_ETHERNET):
                self.engine.tun_paths[a] = (p.src, p.mtu)
            else:
                self.engine.tun_paths.pop(a, None)

    def tick(self, now=None):
        """Every second or so: look stale paths up again in the background."""
        t = time.monotonic()
        stale = []
        for a, p in list(self.paths.items()):
            if t - p.when >= self.refresh:
                p.when = t
                stale.append(a)
        if stale:
            self.want_many(stale)

    # -- the packet path
    def _drop(self, reason):
        self.drops[reason] += 1
        return None

    def send(self, xl, data, hdr=None):
        addr = xl.daddr
        p = self.paths.get(addr)
        if p is None:
            self.want(addr)
            return self._drop(R_UNRESOLVED)
        if p.error is not None:
            if p.error == R_UNRESOLVED:
                self.want(addr)
            return self._drop(p.error)
        v6 = data[0] >> 4 == 6
        n = len(data)
        if n > p.mtu:
            if hdr is not None and hdr[1]:
                # a GSO super-packet: its segments (headers + gso_size) must fit
                gs = hdr[6] | hdr[7] << 8
                l4 = 40 if v6 else (data[0] & 15) << 2
                hl = l4 + ((data[l4 + 12] >> 4) << 2 if hdr[1] & 0x7F != 5 else 8)
                if hl + gs > p.mtu:
                    return self._too_big(data, p.mtu)
            elif v6 or data[6] & 0x40:
                return self._too_big(data, p.mtu)
            else:
                # IPv4 without DF: cut into fragments, as the kernel's output would
                frags = fragment4(data, p.mtu, hdr)
                if frags is None:
                    return self._drop(R_TOO_BIG)
                for f in frags:
                    self.send(xl, f, None)
                self.drops["l2_fragmented"] += 1
                return None
        frame = p.frame6 if v6 else p.frame4
        try:
            sock = self.sock or self._open()
            if self.vnet:
                if hdr is None or not (hdr[0] or hdr[1]):
                    vh = self._zero
                else:
                    flags, gt, hl, gs, cs, co = _VHDR.unpack_from(hdr)
                    vh = _VHDR.pack(flags, gt, hl + 14 if hl else 0, gs,
                                    cs + 14 if flags & 1 else cs, co)
                sock.sendmsg([vh, frame, data], (), 0, (p.ifname, 0))
            else:
                sock.sendmsg([frame, data], (), 0, (p.ifname, 0))
        except OSError:
            return self._drop(R_SEND)
        self.tx += 1
        return None

    def send_ip(self, data):
        """A tunnel's outer packet (xmit/tunnel.py; a list of them for a cut
        GSO packet), sent as the director's own through a raw IP socket
        (IP_HDRINCL): routed by the kernel like the packets IPVS sends,
        whatever the forwarding sysctls."""
        if type(data) is list:
            for d in data:
                self.send_ip(d)
            return None
        v6 = data[0] >> 4 == 6
        try:
            s = self._raw.get(v6)
            if s is None:
                s = self._raw[v6] = socket.socket(
                    socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                    socket.IPPROTO_RAW)
            if v6:
                dst = socket.inet_ntop(socket.AF_INET6, bytes(data[24:40]))
            else:
                dst = socket.inet_ntop(socket.AF_INET, bytes(data[16:20]))
            s.sendto(data, (dst, 0))
        except OSError:
            return self._drop(R_SEND)
        self.tx += 1
        return None

    def _too_big(self, data, mtu):
        buf = bytes(data)
        r = parse(buf, 0, len(buf))
        if type(r) is str:
            return self._drop(R_TOO_BIG)
        if r[0] == 4:
            rep = nat.build_icmp_error(buf, r, 3, 4, None, mtu & 0xFFFF)
        else:
            rep = nat.build_icmp_error(buf, r, 2, 0, None, mtu)
        if rep is None:
            return self._drop(R_TOO_BIG)
        self.drops["l2_icmp_too_big"] += 1
        return bytes(rep)

    def counters(self):
        out = {"l2_tx": self.tx}
        out.update(sorted(self.drops.items()))
        return out
