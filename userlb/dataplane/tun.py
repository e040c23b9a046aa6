"""The TUN driver: the only dataplane module that touches a file descriptor.

Two small pieces, used by `userlb run` (userlb/cli/run.py):

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

What steers traffic into the device (routes, policy rules, sysctls) is
steering.py's job.
"""
import errno
import fcntl
import os
import socket
import struct
import time

import pytun

# the driver only tells "write buf[:out_len]" (V_FORWARD) from "write eng.out"
# (V_REPLY, V_FORWARD_OUT) and "nothing" (V_DROP)
from .engine import V_DROP, V_FORWARD, V_FORWARD_OUT, V_REPLY  # noqa: F401
from .steering import write_sysctl
from .vnet import VNET_HDR_LEN, ZERO_HDR, VnetPath

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
# packets shorter than this are written through a view of the buffer kept per
# length (at most this many views, ~200 bytes each); longer ones slice anew
SHORT_VIEWS = 2048


class TunError(Exception):
    """The device could not be opened or configured (message is for humans)."""


class TunBusy(TunError):
    """Another process already reads this device."""


class TunDevice:
    """An open TUN device.  `fd` is non-blocking; `name` and `index` are set."""

    def __init__(self, name="userlb0", mtu=None, up=True, offload=False, queues=1):
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI
        self.vnet = bool(offload)
        self.offload_flags = 0
        if offload:
            flags |= pytun.IFF_VNET_HDR
        try:
            if queues > 1:
                self._dev = _Queues(name or "", flags, queues)
            else:
                self._dev = pytun.TunTapDevice(name=name or "", flags=flags)
        except (pytun.Error, OSError) as e:
            if isinstance(e, OSError):
                e.args = (e.errno, e.strerror)
            code = e.args[0] if e.args and isinstance(e.args[0], int) else None
            if code == errno.EBUSY:
                raise TunBusy(f"TUN device {name!r} is busy: another process "
                              f"(a second `userlb run`?) already uses it") from None
            raise TunError(f"cannot open TUN device {name!r}: {e.args[-1]} "
                           f"(are you root, and does /dev/net/tun exist?)") from None
        self.fd = self._dev.fileno()
        #: one file descriptor per queue (IFF_MULTI_QUEUE when more than one)
        self.fds = getattr(self._dev, "fds", [self.fd])
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
            for fd in self.fds:
                os.set_blocking(fd, False)
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


TUNSETIFF = 0x400454CA
IFF_MULTI_QUEUE = 0x0100


class _Queues:
    """A multi-queue TUN device (pytun opens one queue only): `n` opens of
    /dev/net/tun attached to the same device with TUNSETIFF | IFF_MULTI_QUEUE.
    The kernel spreads the packets it sends into the device over the queues
    by flow (workers.py says how)."""

    def __init__(self, name, flags, n):
        self.fds = []
        try:
            for _ in range(n):
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
                self.fds.append(fd)
                ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(),
                                                             flags | IFF_MULTI_QUEUE))
                name = ifr[:16].rstrip(b"\0").decode()
        except OSError:
            self.close()
            raise
        self.name = name

    def fileno(self):
        return self.fds[0]

    def close(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


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
        self.hdr = None
        if vnet:
            self.vnet = VnetPath(engine)
            self.hdr = bytearray(VNET_HDR_LEN)
            self._bufs = [self.hdr, self.buf]
        # the write vectors of the vnet device: [header as read | zeroed, packet]
        self._iov = [self.hdr, None]
        self._ziov = [ZERO_HDR, None]
        self._mv = memoryview(self.buf)
        self._views = [None] * SHORT_VIEWS    # length -> self._mv[:length], made on first use
        self.expire_interval = expire_interval
        self.clock = clock
        self.rx = self.tx = self.drops = self.write_errors = self.batches = 0
        # established first (docs/flood-experiment.md): after a wake-up that
        # read a whole batch (the device queue is backing up), at most
        # `batch * syn_share` TCP SYNs (without ACK) of a batch are processed;
        # the others are dropped before the engine sees them ('shed_syn'), so
        # the packets of existing flows keep the reader's time.  0 disables it.
        self.syn_share = 0.25
        self.shed_syn = 0
        self._full = False
        self.loop = None
        self._timer = None
        #: called once (no arguments) when the device was deleted under us
        #: (reads fail with EBADFD); the driver has stopped reading then
        self.on_gone = None
        self.gone = False
        self.l2 = None          # l2out.L2Out for direct routing (set by the director)

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
        if self.l2 is not None:
            self.l2.tick()
        if self.loop is not None:
            self._timer = self.loop.call_later(self.expire_interval, self._tick)

    # -- the hot path
    def on_readable(self):
        """Drain up to `batch` packets: read each into the one buffer, hand it
        to the engine (through `VnetPath` with the virtio-net header), write
        what the verdict says.  Everything is bound to locals first; the two
        device kinds differ by a test of a local per packet."""
        fd = self.fd
        readv = os.readv
        write = os.write
        writev = os.writev
        bufs = self._bufs
        buf = self.buf
        mv = self._mv
        eng = self.engine
        vnet = self.vnet
        if vnet is None:
            process = eng.process
            h4 = b""
        else:
            process, offloaded = vnet.process, vnet.offloaded
            h4, pos4, gso4, fproc = vnet.fast
        hdr, iov, ziov = self.hdr, self._iov, self._ziov
        views = self._views
        n_views = len(views)
        hlen = VNET_HDR_LEN
        limit = len(buf) + hlen
        fwd, drop = V_FORWARD, V_DROP
        now = self.clock()
        n_rx = n_tx = n_drop = n_err = n_shed = n_gso = n_part = 0
        shed = self._full and self.syn_share > 0
        syn_left = int(self.batch * self.syn_share)
        full = True
        for _ in range(self.batch):
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                full = False
                break
            except InterruptedError:
                continue
            except OSError as e:
                # EFAULT/EBADFD when the device vanishes under us
                n_err += 1
                full = False
                if e.errno == errno.EBADFD:
                    self._device_gone()
                break
            n_rx += 1
            if shed:            # a SYN without ACK (IPv4 without options, or IPv6)?
                m = n if vnet is None else n - hlen
                b0 = buf[0]
                if ((b0 == 0x45 and m >= 40 and buf[9] == 6 and buf[33] & 0x12 == 2)
                        or (b0 >> 4 == 6 and m >= 60 and buf[6] == 6 and buf[53] & 0x12 == 2)):
                    syn_left -= 1
                    if syn_left < 0:
                        n_shed += 1
                        n_drop += 1
                        continue
            if vnet is None:
                v = process(buf, n, now)
            elif hlen < n < limit:
                if hdr == h4:
                    # the header bytes VnetPath last gave the engine's fast path
                    # (VnetPath.fast): straight there, counted as VnetPath would
                    v = fproc(buf, n - hlen, now, pos4)
                    if v is None:
                        v = offloaded(hdr, buf, n - hlen, now)
                    elif v == fwd:
                        if gso4:
                            n_gso += 1
                        else:
                            n_part += 1
                else:           # (VnetPath.fast is read again at the next wake-up)
                    v = process(hdr, buf, n - hlen, now)
            else:               # no packet after the header / truncated
                n_drop += 1
                continue
            try:
                if v == fwd:
                    m = eng.out_len
                    if m < n_views:     # (the views of short lengths are kept:
                        out = views[m]  #  a memoryview slice costs ~800 instructions)
                        if out is None:
                            out = views[m] = mv[:m]
                    else:
                        out = mv[:m]
                    if vnet is None:
                        write(fd, out)
                    else:       # with the header as it came
                        iov[1] = out
                        writev(fd, iov)
                    n_tx += 1
                elif v == drop:
                    n_drop += 1
                elif v >= 4:            # V_XMIT_L2(_OUT), V_XMIT_IP: l2out.py
                    rep = self._l2(v, mv, hdr)
                    if rep is None:
                        pass
                    elif vnet is None:
                        write(fd, rep)
                    else:
                        writev(fd, [ZERO_HDR, rep])
                    n_tx += 1
                elif vnet is None:      # V_FORWARD_OUT / V_REPLY: a packet built aside
                    write(fd, eng.out)
                    n_tx += 1
                else:           # ... with a zeroed header: complete checksums, no GSO
                    ziov[1] = eng.out
                    writev(fd, ziov)
                    n_tx += 1
            except OSError:
                n_err += 1
        self._full = full
        if n_gso or n_part:
            vnet.gso += n_gso
            vnet.partial += n_part
        if n_rx:
            self.shed_syn += n_shed
            self.batches += 1
            self.rx += n_rx
            self.tx += n_tx
            self.drops += n_drop
        self.write_errors += n_err

    def _device_gone(self):
        """The device was deleted (`ip link del`): the descriptor stays
        readable (POLLERR) forever, so stop reading it and tell the owner."""
        if self.gone:
            return
        self.gone = True
        if self.loop is not None:
            self.loop.remove_reader(self.fd)
        if self.on_gone is not None:
            self.on_gone()

    def _l2(self, v, mv, hdr):
        """A direct-routing verdict (the packet to the real server's link) or
        a tunnel's outer packet (sent as the director's own), l2out.py;
        returns an answer for the TUN device or None."""
        eng = self.engine
        if self.l2 is None:
            return None
        if v == 4:
            return self.l2.send(eng.out_xl, mv[:eng.out_len], hdr)
        if v == 5:
            return self.l2.send(eng.out_xl, eng.out, None)
        return self.l2.send_ip(eng.out)

    def counters(self):
        out = {"rx": self.rx, "tx": self.tx, "drops": self.drops,
               "write_errors": self.write_errors, "batches": self.batches}
        if self.l2 is not None:
            out.update(self.l2.counters())
        if self.shed_syn:
            out["shed_syn"] = self.shed_syn
        if self.vnet is not None:
            out.update(self.vnet.counters())
        return out
