"""Steering: what sends traffic into the TUN device, installed with pyroute2
and removed again exactly (a module of the driver layer, beside tun.py).

`TunRoutes` installs a route per VIP (/32 or /128) via the TUN; for the real
servers' replies a policy rule per source (each real server address, plus
optional extra prefixes) pointing to a dedicated table whose default route is
the TUN, guarded by two rules that keep locally generated traffic (`iif lo`)
and what the engine writes back (`iif TUN`) in the main table; forwarding
sysctls on, reverse-path filtering off for the device.  `update()` changes
the sets in place without a moment without the routes that stay; `remove()`
deletes exactly what was added (never what was there before) and restores
the sysctls it changed.
"""
import errno
import ipaddress
import socket

MAIN_TABLE = 254
# the kernel's answers to deleting a route or rule that is gone already
# (e.g. with its device)
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)


class SteeringError(Exception):
    """A route or rule could not be added or removed (message is for humans)."""


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
        self.vips = _prefixes(vips)
        self.sources = _prefixes(sources)
        self.table = table if table is not None else 20000 + ifindex
        self.priority = priority if priority is not None else 10000
        self._done = []          # undo log: (kind, kwargs)
        self._sysctls = []       # (name, old value)

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
                out.append(("rule", dict(family=fam, iifname=iif, table=MAIN_TABLE,
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
        new_vips, new_sources = _prefixes(vips), _prefixes(sources)
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
                err = _delete(ipr, kind, kw)
                if err:
                    raise SteeringError(f"cannot remove {err}")
            self._done = keep
        return True

    def _do(self, ipr, kind, **kw):
        try:
            getattr(ipr, kind)("add", **kw)
        except Exception as e:
            if getattr(e, "code", None) == errno.EEXIST:
                # present already (not ours): leave it alone, never remove it
                return
            raise SteeringError(f"cannot add {kind} {kw}: {e}") from None
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
                err = _delete(ipr, kind, kw)
                if err:
                    errors.append(err)
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
        for _fam, addr, plen in self.vips:
            out.append(f"route {addr}/{plen} dev {self.ifname}")
        for _fam, addr, plen in self.sources:
            out.append(f"rule from {addr}/{plen} lookup {self.table}")
        return out


def _delete(ipr, kind, kw):
    """Delete one route or rule; gone already is fine.  The error, or None."""
    try:
        getattr(ipr, kind)("del", **kw)
    except Exception as e:   # noqa: BLE001 - pyroute2 raises NetlinkError and others
        if getattr(e, "code", None) not in _GONE:
            return f"{kind} {kw}: {e}"
    return None


def _prefixes(items):
    """The distinct prefixes of items (see _prefix), in order."""
    out = []
    for item in items:
        p = _prefix(item)
        if p not in out:
            out.append(p)
    return out


def _prefix(item):
    """address | (address, plen) | 'a.b.c.d/n' -> (family, text, plen)."""
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
