"""Small real servers for the lab (run inside a real-server namespace).

    python -m userlb.lab.servers --name s1 [--http 80] [--echo 7] [--hash 9]
                                 [--udp-echo 7] [--lab TAG]

Every service listens on `::` (dual stack) and tells who answered and whom it
saw, so that the lab can check the masquerade (the real server must see the
client's own address and port):

* HTTP (`--http`): any request gets `200 OK` with the JSON body
  {"server": NAME, "client": ADDR, "port": PORT}.
* TCP echo (`--echo`): first a line `NAME ADDR PORT\\n`, then every byte back.
* TCP hash (`--hash`): reads to EOF, then answers
  `NAME ADDR PORT SHA256HEX LENGTH\\n`.
* More TCP echo services (`--more-echo 7001-7008`, off by default): the same
  as `--echo` on each of those ports (tests give each service its own
  real-server port, so that replies without an entry stay unambiguous).
* UDP discard (`--discard`, off by default): a socket that is never read.
* UDP echo (`--udp-echo`): answers each datagram with `NAME ADDR PORT\\n`
  followed by the datagram.
"""
import argparse
import asyncio
import hashlib
import json
import os
import signal
import socket
import sys


def _peer(writer_or_addr):
    addr = writer_or_addr
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def _listen_tcp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def _handler(work):
    """An asyncio stream handler running work(self, reader, writer, host,
    port) -- host/port: the client as this server sees it -- that ends
    quietly when the client goes away and always closes the connection."""
    async def handle(self, reader, writer):
        host, port = _peer(writer.get_extra_info("peername"))
        try:
            await work(self, reader, writer, host, port)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
    return handle


class Servers:
    def __init__(self, name):
        self.name = name.encode()

    @_handler
    async def http(self, reader, writer, host, port):
        while True:
            line = await reader.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
        body = json.dumps({"server": self.name.decode(), "client": host, "port": port}) + "\n"
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body.encode()))
        await writer.drain()

    @_handler
    async def echo(self, reader, writer, host, port):
        writer.write(b"%s %s %d\n" % (self.name, host.encode(), port))
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()

    @_handler
    async def hash(self, reader, writer, host, port):
        h = hashlib.sha256()
        n = 0
        while True:
            data = await reader.read(262144)
            if not data:
                break
            h.update(data)
            n += len(data)
        writer.write(b"%s %s %d %s %d\n" % (self.name, host.encode(), port,
                                            h.hexdigest().encode(), n))
        await writer.drain()


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name):
        self.name = name.encode()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        host, port = _peer(addr)
        self.transport.sendto(b"%s %s %d\n" % (self.name, host.encode(), port) + data, addr)


async def serve(args):
    srv = Servers(args.name)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    more = [(p, srv.echo) for p in _ports(args.more_echo)]
    tcp = [(args.http, srv.http), (args.echo, srv.echo), (args.hash, srv.hash)] + more
    for port, handler in tcp:
        if port:
            servers.append(await asyncio.start_server(handler, sock=_listen_tcp(port)))
    if args.udp_echo:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", args.udp_echo))
        await loop.create_datagram_endpoint(lambda: UdpEcho(args.name), sock=s)
    if args.discard:
        # a sink for packet-rate measurements: never read (the kernel counts
        # and drops once the small buffer is full), so that no ICMP
        # port-unreachable is sent back
        d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        d.bind(("::", args.discard))
        servers.append(d)
    print(f"servers {args.name} ready pid {os.getpid()}", file=sys.stderr, flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def _ports(spec):
    """'7001-7003,7010' -> [7001, 7002, 7003, 7010]."""
    out = []
    for part in (spec or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="userlb.lab.servers")
    p.add_argument("--name", required=True)
    p.add_argument("--http", type=int, default=80)
    p.add_argument("--echo", type=int, default=7)
    p.add_argument("--hash", type=int, default=9)
    p.add_argument("--udp-echo", type=int, default=7)
    p.add_argument("--more-echo", default="", help="more TCP echo ports: 7001-7008,7010")
    p.add_argument("--discard", type=int, default=0, help="UDP port of a sink that is never read")
    p.add_argument("--lab", default="", help="lab tag (lets `lab down` recognise its processes)")
    args = p.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
