"""The TUN driver: the only dataplane module that touches a file descriptor.

Three small pieces, used by `userlb run` (userlb/cli/run.py):

* `TunDevice` opens a layer-3 TUN device (pytun, IFF_TUN | IFF_NO_PI), sets
  its offload mask (always: a persistent device keeps the previous owner's
  mask, and a reader without the virtio-net header would then get packets
  with partial checksums), makes it non-blocking and brings the link up.
  With ``offload=True`` (the default of `userlb run`) it adds IFF_VNET_HDR,
  sets TUNSETVNETHDRSZ to 10 (struct virtio_net_hdr without num_buffers) and
  TUNSETOFFLOAD to TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 |
  TUN_F_USO6, falling back to the mask without USO when the kernel refuses
  it (before 6.2); ``offload_names`` says what was accepted.  Without
  offloads the mask is 0.  A second reader of the same device is refused by
  the kernel with EBUSY; we turn that into `TunBusy`.

* `TunDriver` runs an engine on an asyncio (uvloop) loop: `loop.add_reader`
  wakes it, it drains the device in batches of reads into one preallocated
  `bytearray` (`os.readv`), takes `now` once per batch, hands each packet to
  `engine.process(buf, n, now)` and writes what the verdict says with
  `os.write`.  A 1 s timer (`loop.call_later`) calls `engine.expire(now)`.
  The engine is anything with that interface (userlb.dataplane.engine.Engine
  in production; tests inject fakes, and the benchmark a bare patch loop).
  With ``vnet=True`` (a device opened with offloads) each read scatters into
  [10-byte virtio-net header, packet buffer] and the packet goes through
  `vnet.VnetPath` (partial checksums, GSO super-packets: see vnet.py); the
  forwarded packet is written back with its header unchanged (`os.writev`),
  answers built by the engine with a zeroed one.

* `TunRoutes` installs with pyroute2 what sends traffic into the device and
  removes exactly that again: a route per VIP (/32 or /128) via the TUN; for
  the real servers' replies a policy rule per source (each real server
  address, plus optional extra prefixes) pointing to a dedicated table whose
  default route is the TUN, guarded by two rules that keep locally generated
  traffic (`iif lo`) and what the engine writes back (`iif TUN`) in the main
  table; forwarding sysctls on, reverse-path filtering off for the device.
"""
import errno
import fcntl
import os
import socket
import struct
import time

import pytun

TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
OFFLOAD_TSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
OFFLOAD_ALL = OFFLOAD_TSO | TUN_F_USO4 | TUN_F_USO6
_OFFLOAD_NAMES = ((TUN_F_CSUM, "csum"), (TUN_F_TSO4, "tso4"), (TUN_F_TSO6, "tso6"),
                  (TUN_F_USO4, "uso4"), (TUN_F_USO6, "uso6"))

# the driver only tells "write buf[:out_len]" (V_FORWARD) from "write eng.out"
# (V_REPLY, V_FORWARD_OUT) and "nothing" (V_DROP)
from .engine import V_DROP, V_FORWARD, V_FORWARD_OUT, V_REPLY  # noqa: F401
from .vnet import VNET_HDR_LEN, ZERO_HDR, VnetPath


class TunError(Exception):
    """The device could not be opened or configured (message is for humans)."""


class TunBusy(TunError):
    """Another process already reads this device."""


class TunDevice:
    """An open TUN device.  `fd` is non-blocking; `name` and `index` are set."""

    def __init__(self, name="userlb0", mtu=None, up=True, offload=False):
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI
        self.vnet = bool(offload)
        self.offload_flags = 0
        if offload:
            flags |= pytun.IFF_VNET_HDR
        try:
            self._dev = pytun.TunTapDevice(name=name or "", flags=flags)
        except pytun.Error as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else None
            if code == errno.EBUSY:
                raise TunBusy(f"TUN device {name!r} is busy: another process "
                              f"(a second `userlb run`?) already uses it") from None
            raise TunError(f"cannot open TUN device {name!r}: {e.args[-1]} "
                           f"(are you root, and does /dev/net/tun exist?)") from None
        self.fd = self._dev.fileno()
        self.name = self._dev.name
        if isinstance(self.name, bytes):
            self.name = self.name.decode()
        try:
            if self.vnet:
                try:
                    fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                    self.offload_flags = set_offload(self.fd)
                except OSError as e:
                    raise TunError(f"cannot set up offloads on TUN device {self.name!r}: "
                                   f"{e.strerror} (try --no-offload)") from None
            else:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
            os.set_blocking(self.fd, False)
            self.index = socket.if_nametoindex(self.name)
            # no IPv6 link-local address on the device: fewer packets of the
            # director's own kernel (router solicitations, MLD) go into it
            try:
                write_sysctl(f"net.ipv6.conf.{self.name}.addr_gen_mode", "1")
            except OSError:
                pass
            if mtu or up:
                from pyroute2 import IPRoute
                with IPRoute() as ipr:
                    kw = {}
                    if mtu:
                        kw["mtu"] = mtu
                    if up:
                        kw["state"] = "up"
                    ipr.link("set", index=self.index, **kw)
        except Exception:
            self.close()
            raise

    @property
    def offload_names(self):
        return [nm for bit, nm in _OFFLOAD_NAMES if self.offload_flags & bit]

    def close(self):
        if self._dev is not None:
            try:
                self._dev.close()
            finally:
                self._dev = None
                self.fd = -1


def set_offload(fd):
    """TUNSETOFFLOAD with checksum + TSO + USO; without USO if the kernel
    refuses it (EINVAL before 6.2).  Returns the mask that was set."""
    for mask in (OFFLOAD_ALL, OFFLOAD_TSO):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, mask)
            return mask
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    return 0


class TunDriver:
    """Pumps packets between a TUN file descriptor and an engine.

    Counters: rx (packets read), tx (packets written), drops (V_DROP),
    write_errors, batches (wake-ups that read at least one packet); with
    ``vnet``: also those of `VnetPath` (gso, partial, vnet_* drop reasons).
    """

    def __init__(self, fd, engine, batch=256, bufsize=None, expire_interval=1.0,
                 clock=time.monotonic, vnet=False):
        self.fd = fd
        self.engine = engine
        self.batch = batch
        self.vnet = None
        if bufsize is None:
            # a GSO super-packet is up to 64 KiB + headers; one spare byte
            # tells a truncated read
            bufsize = (1 << 17) if vnet else 65535
        self.buf = bytearray(bufsize)
        self._bufs = [self.buf]
        if vnet:
            self.vnet = VnetPath(engine)
            self.hdr = bytearray(VNET_HDR_LEN)
            self._bufs = [self.hdr, self.buf]
            self.on_readable = self.on_readable_vnet
        self._mv = memoryview(self.buf)
        self.expire_interval = expire_interval
        self.clock = clock
        self.rx = self.tx = self.drops = self.write_errors = self.batches = 0
        self.loop = None
        self._timer = None

    # -- event loop glue
    def attach(self, loop):
        self.loop = loop
        loop.add_reader(self.fd, self.on_readable)
        self._timer = loop.call_later(self.expire_interval, self._tick)

    def detach(self):
        if self.loop is not None:
            self.loop.remove_reader(self.fd)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.loop = None

    def _tick(self):
        self.engine.expire(self.clock())
        if self.loop is not None:
            self._timer = self.loop.call_later(self.expire_interval, self._tick)

    # -- the hot path
    def on_readable(self):
        fd = self.fd
        readv = os.readv
        write = os.write
        bufs = self._bufs
        buf = self.buf
        mv = self._mv
        eng = self.engine
        process = eng.process
        fwd, drop = V_FORWARD, V_DROP
        now = self.clock()
        n_rx = n_tx = n_drop = n_err = 0
        for _ in range(self.batch):
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                # EFAULT/EBADFD when the device vanishes under us
                n_err += 1
                break
            n_rx += 1
            v = process(buf, n, now)
            try:
                if v == fwd:
                    write(fd, mv[:eng.out_len])
                    n_tx += 1
                elif v == drop:
                    n_drop += 1
                else:   # V_FORWARD_OUT / V_REPLY: a packet built aside
                    write(fd, eng.out)
                    n_tx += 1
            except OSError:
                n_err += 1
        if n_rx:
            self.batches += 1
            self.rx += n_rx
            self.tx += n_tx
            self.drops += n_drop
        self.write_errors += n_err

    def on_readable_vnet(self):
        """`on_readable` for a device with the virtio-net header."""
        fd = self.fd
        readv = os.readv
        writev = os.writev
        bufs = self._bufs
        hdr = self.hdr
        buf = self.buf
        limit = len(buf) + VNET_HDR_LEN
        mv = self._mv
        eng = self.engine
        process = self.vnet.process
        fwd, drop = V_FORWARD, V_DROP
        iov = [hdr, None]
        ziov = [ZERO_HDR, None]
        now = self.clock()
        n_rx = n_tx = n_drop = n_err = 0
        for _ in range(self.batch):
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                n_err += 1
                break
            n_rx += 1
            if n <= VNET_HDR_LEN or n >= limit:     # no packet / truncated
                n_drop += 1
                continue
            v = process(hdr, buf, n - VNET_HDR_LEN, now)
            try:
                if v == fwd:
                    iov[1] = mv[:eng.out_len]
                    writev(fd, iov)
                    n_tx += 1
                elif v == drop:
                    n_drop += 1
                else:   # V_FORWARD_OUT / V_REPLY: complete checksums, no GSO
                    ziov[1] = eng.out
                    writev(fd, ziov)
                    n_tx += 1
            except OSError:
                n_err += 1
        if n_rx:
            self.batches += 1
            self.rx += n_rx
            self.tx += n_tx
            self.drops += n_drop
        self.write_errors += n_err

    def counters(self):
        out = {"rx": self.rx, "tx": self.tx, "drops": self.drops,
               "write_errors": self.write_errors, "batches": self.batches}
        if self.vnet is not None:
            out.update(self.vnet.counters())
        return out


# ---------------------------------------------------------------- routes

def _sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name):
    with open(_sysctl_path(name)) as f:
        return f.read().strip()


def write_sysctl(name, value):
    with open(_sysctl_path(name), "w") as f:
        f.write(str(value))


class TunRoutes:
    """Routes and rules that steer VIP traffic and real-server replies into a
    TUN device; `remove()` deletes exactly what `install()` added and restores
    the sysctls it changed.

    vips: addresses (IPv4 int / IPv6 16 bytes, model.py convention);
    sources: addresses or (address, prefixlen) tuples whose packets (the real
    servers' replies, ICMP errors from routers on the server side) go into the
    device.  table/priority default to values derived from the device index so
    that two instances on two devices do not collide.
    """

    def __init__(self, ifname, ifindex, vips=(), sources=(), table=None, priority=None):
        self.ifname = ifname
        self.ifindex = ifindex
        self.vips = []
        self.sources = []
        for v in vips:
            self._add_unique(self.vips, _prefix(v))
        for s in sources:
            self._add_unique(self.sources, _prefix(s))
        self.table = table if table is not None else 20000 + ifindex
        self.priority = priority if priority is not None else 10000
        self._done = []          # undo log: (kind, kwargs)
        self._sysctls = []       # (name, old value)

    @staticmethod
    def _add_unique(lst, item):
        if item not in lst:
            lst.append(item)

    def _desired(self):
        """What should be installed for the current vips/sources, in order."""
        out = []
        for fam, addr, plen in self.vips:
            out.append(("route", dict(family=fam, dst=addr, dst_len=plen, oif=self.ifindex)))
        for fam in sorted({fam for fam, _a, _p in self.sources}):
            dflt = "0.0.0.0" if fam == socket.AF_INET else "::"
            out.append(("route", dict(family=fam, dst=dflt, dst_len=0, oif=self.ifindex,
                                      table=self.table)))
            # guards: what the engine writes back, and what this host sends
            # itself, use the main table
            for iif in (self.ifname, "lo"):
                out.append(("rule", dict(family=fam, iifname=iif, table=254,
                                         priority=self.priority)))
        for fam, addr, plen in self.sources:
            out.append(("rule", dict(family=fam, src=addr, src_len=plen, table=self.table,
                                     priority=self.priority + 1)))
        return out

    def install(self):
        from pyroute2 import IPRoute
        try:
            self._set_sysctls()
            with IPRoute() as ipr:
                for kind, kw in self._desired():
                    self._do(ipr, kind, **kw)
        except Exception:
            self.remove()
            raise

    def update(self, vips=(), sources=()):
        """Change the VIP / source sets in place: what is new is added first,
        then what is gone is removed -- no moment without the routes that stay."""
        new_vips, new_sources = [], []
        for v in vips:
            self._add_unique(new_vips, _prefix(v))
        for x in sources:
            self._add_unique(new_sources, _prefix(x))
        if (new_vips, new_sources) == (self.vips, self.sources):
            return False
        self.vips, self.sources = new_vips, new_sources
        want = self._desired()
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for kind, kw in want:
                if (kind, kw) not in self._done:
                    self._do(ipr, kind, **kw)
            keep = []
            for kind, kw in self._done:
                if (kind, kw) in want:
                    keep.append((kind, kw))
                    continue
                try:
                    getattr(ipr, kind)("del", **kw)
                except Exception as e:   # noqa: BLE001 - already gone
                    if getattr(e, "code", None) not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                        raise TunError(f"cannot remove {kind} {kw}: {e}") from None
            self._done = keep
        return True

    def _do(self, ipr, kind, **kw):
        try:
            getattr(ipr, kind)("add", **kw)
        except Exception as e:
            if getattr(e, "code", None) == errno.EEXIST:
                # present already (not ours): leave it alone, never remove it
                return
            raise TunError(f"cannot add {kind} {kw}: {e}") from None
        self._done.append((kind, kw))

    def _set_sysctls(self):
        wanted = [("net.ipv4.ip_forward", "1"),
                  ("net.ipv6.conf.all.forwarding", "1"),
                  (f"net.ipv4.conf.{self.ifname}.rp_filter", "0")]
        try:
            if read_sysctl("net.ipv4.conf.all.rp_filter") == "1":
                wanted.append(("net.ipv4.conf.all.rp_filter", "2"))   # loose
        except OSError:
            pass
        for name, value in wanted:
            try:
                old = read_sysctl(name)
            except OSError:
                continue
            if old != value:
                write_sysctl(name, value)
                self._sysctls.append((name, old))

    def remove(self):
        from pyroute2 import IPRoute
        errors = []
        with IPRoute() as ipr:
            while self._done:
                kind, kw = self._done.pop()
                try:
                    getattr(ipr, kind)("del", **kw)
                except Exception as e:   # already gone (device deleted): fine
                    if getattr(e, "code", None) not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                        errors.append(f"{kind} {kw}: {e}")
        while self._sysctls:
            name, old = self._sysctls.pop()
            try:
                write_sysctl(name, old)
            except OSError as e:
                if not name.startswith(f"net.ipv4.conf.{self.ifname}."):
                    errors.append(f"sysctl {name}: {e}")
        return errors

    def describe(self):
        """Human-readable list of what is (to be) installed."""
        out = []
        for fam, addr, plen in self.vips:
            out.append(f"route {addr}/{plen} dev {self.ifname}")
        for fam, addr, plen in self.sources:
            out.append(f"rule from {addr}/{plen} lookup {self.table}")
        return out


def _prefix(item):
    """address | (address, plen) | 'a.b.c.d/n' -> (family, text, plen)."""
    import ipaddress
    if isinstance(item, tuple):
        addr, plen = item
    elif isinstance(item, str):
        net = ipaddress.ip_network(item, strict=False)
        return ((socket.AF_INET if net.version == 4 else socket.AF_INET6),
                str(net.network_address), net.prefixlen)
    else:
        addr, plen = item, None
    if isinstance(addr, int):
        text = str(ipaddress.IPv4Address(addr))
        return socket.AF_INET, text, 32 if plen is None else plen
    text = str(ipaddress.IPv6Address(bytes(addr)))
    return socket.AF_INET6, text, 128 if plen is None else plen
