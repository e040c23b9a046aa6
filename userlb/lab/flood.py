"""A fast UDP generator: sendmmsg(2) through ctypes, from several source
ports (flows), for the throughput benchmark.  Run inside the client namespace:

    python -m userlb.lab.flood --dst 10.21.0.10 --port 5000 --flows 16 \
        --size 18 --seconds 5 [--src 10.10.0.2]

Prints one JSON line: {"sent": N, "seconds": S, "pps": N/S}.  Each flow is a
connected UDP socket; every call sends `--batch` datagrams of `--size`
payload bytes from one socket, round robin over the flows.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import socket
import sys
import time


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]


def flood(dst, port, flows=16, size=18, seconds=5.0, batch=256, src=None):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(mmsghdr), ctypes.c_uint, ctypes.c_int]
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    socks = []
    for _ in range(flows):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if src:
            s.bind((src, 0))
        s.connect((dst, port))
        s.setblocking(True)
        socks.append(s)
    payload = ctypes.create_string_buffer(os.urandom(size), size)
    iov = iovec(ctypes.cast(payload, ctypes.c_void_p), size)
    msgs = (mmsghdr * batch)()
    for m in msgs:
        m.msg_hdr.msg_iov = ctypes.pointer(iov)
        m.msg_hdr.msg_iovlen = 1
    fds = [s.fileno() for s in socks]
    sent = 0
    t0 = time.monotonic()
    end = t0 + seconds
    i = 0
    while True:
        r = sendmmsg(fds[i % flows], msgs, batch, 0)
        if r > 0:
            sent += r
        i += 1
        if not i & 15 and time.monotonic() >= end:
            break
    dt = time.monotonic() - t0
    for s in socks:
        s.close()
    return {"sent": sent, "seconds": dt, "pps": sent / dt}


def main(argv=None):
    p = argparse.ArgumentParser(prog="userlb.lab.flood")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--flows", type=int, default=16)
    p.add_argument("--size", type=int, default=18)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--src")
    a = p.parse_args(argv)
    print(json.dumps(flood(a.dst, a.port, a.flows, a.size, a.seconds, a.batch, a.src)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
