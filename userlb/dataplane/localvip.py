"""Local addresses of the director's namespace, and a watch on them (a
driver-layer module beside steering.py, which uses it for VIPs that are
local addresses; see docs/steering.md).

`local_addresses()` dumps the addresses of every interface (IPv4 and IPv6)
as normalised text.  `AddressWatch` listens on a netlink socket bound to the
kernel's address groups (RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) in a small
daemon thread and calls `on_change()` after every burst of address or link
messages (RTMGRP_LINK too) and after a lost-message ENOBUFS: the caller
re-reads the addresses and checks its routes; the messages themselves are
not parsed.
"""
import errno
import ipaddress
import socket
import threading

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


def local_addresses():
    """Every address configured on an interface of this namespace: a set of
    normalised text addresses ('10.99.0.1', 'fd00:99::1')."""
    from pyroute2 import IPRoute
    out = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text:
                try:
                    out.add(str(ipaddress.ip_address(text.split("%")[0])))
                except ValueError:
                    pass
    return out


class AddressWatch:
    """Calls `on_change()` (in the watch's thread) whenever an address of
    this namespace appears or disappears.  `stop()` ends the thread."""

    def __init__(self, on_change, poll=0.5):
        self.on_change = on_change
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        # links too: a device set down and up again loses its routes
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self._sock.settimeout(poll)
        self._stop = threading.Event()
        self.events = 0
        self._thread = threading.Thread(target=self._run, name="userlb-addrwatch", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if self._stop.is_set():
                    break
                if e.errno != errno.ENOBUFS:     # ENOBUFS: messages lost, re-read all
                    continue
            # drain the burst (an address brings several messages)
            self._sock.setblocking(False)
            try:
                while True:
                    self._sock.recv(65536)
            except OSError:
                pass
            finally:
                if not self._stop.is_set():
                    self._sock.settimeout(0.5)
            if self._stop.is_set():
                break
            self.events += 1
            try:
                self.on_change()
            except Exception:   # noqa: BLE001 - the callback reports; keep watching
                pass

    def stop(self):
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._sock.close()
