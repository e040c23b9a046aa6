"""`userlb run --pcap FILE`: what the director received and what it sent,
before and after the rewrite, as a pcapng file (Wireshark, tshark).

Two interfaces in the file: 0 "in" (each packet as the engine got it from the
TUN device) and 1 "out" (what it wrote back: the rewritten packet, or the RST
/ ICMP it built).  Link type raw IP (101), so IPv4 and IPv6 share the file.
With the TUN offloads on, a GSO super-packet appears once, as one large
packet (up to 64 KiB) -- as the engine saw it.

The tap wraps the engine the TUN driver calls (the driver's `engine` and its
virtio-net path's); without --pcap nothing is wrapped and the packet path is
unchanged.  Bounded: after --pcap-max-mb megabytes (default 100) it stops
writing and counts what it left out (`userlb run` logs it on exit).
"""
from __future__ import annotations

import asyncio
import io
import struct
import time
from typing import Any

from ..dataplane.verdict import (
    V_FORWARD,
    V_FORWARD_OUT,
    V_REPLY,
    V_XMIT_IP,
    V_XMIT_L2,
    V_XMIT_L2_OUT,
)

LINKTYPE_RAW = 101
SNAPLEN = 262144
_BYTE_ORDER_MAGIC = 0x1A2B3C4D


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def section_header(app: str = "userlb") -> bytes:
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    body += _option(4, app.encode()) + _option(0, b"")       # shb_userappl
    return _block(0x0A0D0D0A, body)


def interface(name: str, comment: str) -> bytes:
    body = struct.pack("<HHI", LINKTYPE_RAW, 0, SNAPLEN)
    body += _option(2, name.encode()) + _option(1, comment.encode()) + _option(0, b"")
    return _block(1, body)


def packet(ifid: int, data: bytes, ts: float) -> bytes:
    us = int(ts * 1_000_000)
    cap = data[:SNAPLEN]
    body = struct.pack("<IIIII", ifid, us >> 32, us & 0xFFFFFFFF, len(cap), len(data))
    return _block(6, body + _pad4(bytes(cap)))


class PcapWriter:
    """A pcapng file with the two interfaces; `path` None writes to memory
    (`getvalue()`, for `userlb adm --capture`)."""

    def __init__(self, path: str | None, max_bytes: int = 100 << 20):
        self.path = path
        self.max_bytes = max_bytes
        self.f: Any = io.BytesIO() if path is None else open(path, "wb")  # noqa: SIM115
        head = (section_header() + interface("in", "received by the director, before the rewrite")
                + interface("out", "sent by the director, after the rewrite"))
        self.f.write(head)
        self.size = len(head)
        self.packets = 0
        self.left_out = 0

    def write(self, ifid: int, data: Any) -> None:
        if self.size >= self.max_bytes:
            self.left_out += 1
            return
        rec = packet(ifid, bytes(data), time.time())
        self.f.write(rec)
        self.size += len(rec)
        self.packets += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()

    def getvalue(self) -> bytes:
        """The file so far (in-memory writers only)."""
        return bytes(self.f.getvalue())


class Tap:
    """Stands in for the engine in the TUN driver: records the packet, calls
    the engine, records what the verdict makes the driver write."""

    def __init__(self, engine: Any, writer: PcapWriter):
        self._engine = engine
        self._w = writer

    def process(self, buf: Any, n: int, now: float) -> int:
        w = self._w
        w.write(0, memoryview(buf)[:n])
        eng = self._engine
        v = eng.process(buf, n, now)
        if v == V_FORWARD or v == V_XMIT_L2:
            w.write(1, memoryview(buf)[:eng.out_len])
        elif v == V_REPLY or v == V_FORWARD_OUT or v == V_XMIT_L2_OUT or v == V_XMIT_IP:
            for p in eng.out if type(eng.out) is list else (eng.out,):   # a cut GSO packet
                w.write(1, p)
        return v

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # vnet.py hands the engine a partial checksum's place (partial_csum)
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._engine, name, value)


def _wrap(driver: Any, tap: Tap) -> None:
    driver.engine = tap
    if getattr(driver, "vnet", None) is not None:
        driver.vnet.engine = tap


def attach(driver: Any, writer: PcapWriter) -> None:
    """Put a Tap writing to an open `writer` between `driver` and its engine
    (`userlb run --pcap`; with workers, each worker's own writer)."""
    _wrap(driver, Tap(driver.engine, writer))


def summary(writer: PcapWriter) -> str:
    """The line `userlb run` logs for a file when it closes it."""
    return (f"pcap {writer.path}: {writer.packets} packet(s)"
            + (f", {writer.left_out} left out (--pcap-max-mb)" if writer.left_out else ""))


class _CountingTap(Tap):
    """A Tap that records `count` received packets (each with what the
    director sent for it), then takes itself out of the driver."""

    def __init__(self, driver: Any, writer: PcapWriter, count: int,
                 done: asyncio.Future[None]):
        super().__init__(driver.engine, writer)
        self._driver, self._left, self._done = driver, count, done

    def process(self, buf: Any, n: int, now: float) -> int:
        if self._left <= 0:             # the rest of the burst that was reading
            return int(self._engine.process(buf, n, now))
        self._left -= 1
        v = super().process(buf, n, now)
        if self._left == 0:
            self.remove()
        return v

    def remove(self) -> None:
        """Out of the driver (idempotent); the waiter is woken."""
        d = self._driver
        if d.engine is self:
            d.engine = self._engine
            if getattr(d, "vnet", None) is not None:
                d.vnet.engine = self._engine
        if not self._done.done():
            self._done.set_result(None)


class CaptureBusy(Exception):
    """Another `--capture` is running on this director."""


async def capture(driver: Any, count: int, seconds: float,
                  max_bytes: int = 64 << 20) -> tuple[bytes, int]:
    """`userlb adm --capture`: record the next `count` packets the director
    receives (and what it sends for each), for at most `seconds`, in memory;
    -> (the pcapng file, packets received in it).  Only one at a time
    (CaptureBusy); without a capture running the packet path is unchanged."""
    if isinstance(driver.engine, _CountingTap):
        raise CaptureBusy("a capture is already running on this director")
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writer = PcapWriter(None, max_bytes)
    tap = _CountingTap(driver, writer, count, done)
    _wrap(driver, tap)
    try:
        await asyncio.wait_for(asyncio.shield(done), seconds)
    except TimeoutError:
        pass
    finally:
        tap.remove()
    return writer.getvalue(), count - max(tap._left, 0)
