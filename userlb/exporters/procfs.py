"""/proc/net/ip_vs and /proc/net/ip_vs_stats in the kernel's formats.

`userlb run --procfs DIR` keeps DIR/net/ip_vs and DIR/net/ip_vs_stats up to
date (rewritten atomically -- temporary file + rename -- once a second), so
that programs written for kernel IPVS read userlb's state: node_exporter with
`--path.procfs=DIR --collector.ipvs`, scripts that `cat /proc/net/ip_vs`.

Formats (those of the kernel's files, fixed by what readers such as node_exporter parse):

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port Forward Weight ActiveConn InActConn
    TCP  0A000064:0050 rr··
      -> 0A000001:0050      Masq    1      0          0·········

addresses and ports in upper-case hex (IPv4 as one 32-bit number, IPv6 in
brackets, all eight groups written out), `persistent TIMEOUT MASK` after a
persistent service, `ops` after a one-packet IPv4 service (IPv4 service lines end in one blank more
than IPv6 ones, as the kernel's; · marks a trailing blank above); destinations in
the kernel's list order.  ip_vs_stats: the totals (conns, in/out packets,
in/out bytes) and the 2-second rate estimates, in hex.
"""
from __future__ import annotations

import os

from .snapshot import Snapshot

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096


def _hex_addr(addr: int | bytes) -> str:
    if isinstance(addr, int):
        return f"{addr:08X}"
    groups = ":".join(f"{addr[i]:02x}{addr[i + 1]:02x}" for i in range(0, 16, 2))
    return f"[{groups}]"


def _ntohl_v6_mask(plen: int) -> int:
    """The kernel prints ntohl(svc->netmask); for IPv6 that field holds the
    prefix length in host order, so it comes out byte-swapped."""
    return int.from_bytes(plen.to_bytes(4, "little"), "big")


def render_ip_vs(snap: Snapshot, size: int = CONN_TAB_SIZE) -> str:
    lines = [f"IP Virtual Server version {IPVS_VERSION} (size={size})",
             "Prot LocalAddress:Port Scheduler Flags",
             "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn"]
    for s in snap.services:
        v4 = isinstance(s.addr, int)
        head = f"{s.proto}  {_hex_addr(s.addr)}:{s.port:04X} {s.sched} "
        if v4:   # "%s %s " with "ops " or "": IPv4 lines carry one more blank
            head += ("ops " if s.onepacket else "") + " "
        if s.persistent:
            mask = s.netmask if v4 else _ntohl_v6_mask(s.netmask)
            head += f"persistent {s.timeout} {mask:08X}"
        lines.append(head)
        for d in s.dests:
            lines.append(f"  -> {_hex_addr(d.addr)}:{d.port:04X}      {d.fwd:<7} "
                         f"{d.weight:<6} {d.active:<10} {d.inactive:<10}")
    return "\n".join(lines) + "\n"


def render_ip_vs_stats(snap: Snapshot) -> str:
    c, ip, op, ib, ob = snap.totals
    r = snap.rates
    return ("   Total Incoming Outgoing         Incoming         Outgoing\n"
            "   Conns  Packets  Packets            Bytes            Bytes\n"
            f"{c:8X} {ip:8X} {op:8X} {ib:16X} {ob:16X}\n\n"
            " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
            f"{r[0]:8X} {r[1]:8X} {r[2]:8X} {r[3]:16X} {r[4]:16X}\n")


def _replace(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ProcfsWriter:
    """Writes DIR/net/ip_vs and DIR/net/ip_vs_stats from snapshots; files that
    did not change are not rewritten.  `remove()` deletes what it wrote."""

    def __init__(self, root: str):
        self.root = root
        self.net = os.path.join(root, "net")
        self._last: dict[str, str] = {}

    def prepare(self) -> None:
        os.makedirs(self.net, mode=0o755, exist_ok=True)

    def write(self, snap: Snapshot) -> None:
        for name, text in (("ip_vs", render_ip_vs(snap)),
                           ("ip_vs_stats", render_ip_vs_stats(snap))):
            if self._last.get(name) != text:
                _replace(os.path.join(self.net, name), text)
                self._last[name] = text

    def remove(self) -> None:
        for name in ("ip_vs", "ip_vs_stats"):
            try:
                os.unlink(os.path.join(self.net, name))
            except FileNotFoundError:
                pass
        for d in (self.net, self.root):
            try:
                os.rmdir(d)
            except OSError:
                pass
