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
ip_vs_conn: one line per connection entry and persistence template (the rows
of `userlb adm -L -c -n`):

    Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
    TCP 0A000102 9C40 0A000064 0050 0A000001 0050 ESTABLISHED     899

IPv4 addresses as one upper-case hex number, IPv6 ones as eight lower-case
groups of four digits (no brackets); ports in hex; the protocol left-aligned
in 3 columns, the state in 11, expires (whole seconds left) right-aligned in 7;
no persistence engine, so the PEName/PEData columns stay empty.
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


def _conn_addr(addr: int | bytes) -> str:
    if isinstance(addr, int):
        return f"{addr:08X}"
    return ":".join(f"{addr[i]:02x}{addr[i + 1]:02x}" for i in range(0, 16, 2))


CONN_PROTO = {6: "TCP", 17: "UDP", 132: "SCTP", 0: "IP"}


def render_ip_vs_conn(snap: Snapshot) -> str:
    lines = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"]
    for (p, ca, cp, va, vp, da, dp, state, left) in snap.conns:
        lines.append(f"{CONN_PROTO.get(p, 'UNK'):<3} {_conn_addr(ca)} {cp:04X} "
                     f"{_conn_addr(va)} {vp:04X} {_conn_addr(da)} {dp:04X} "
                     f"{state:<11} {int(left):7d}")
    return "\n".join(lines) + "\n"


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
                           ("ip_vs_stats", render_ip_vs_stats(snap)),
                           ("ip_vs_conn", render_ip_vs_conn(snap))):
            if self._last.get(name) != text:
                _replace(os.path.join(self.net, name), text)
                self._last[name] = text

    def remove(self) -> None:
        for name in ("ip_vs", "ip_vs_stats", "ip_vs_conn"):
            try:
                os.unlink(os.path.join(self.net, name))
            except FileNotFoundError:
                pass
        for d in (self.net, self.root):
            try:
                os.rmdir(d)
            except OSError:
                pass
