"""Write the seed corpus kept in the repository (fuzz/corpus/<target>/):
a few valid packets, flows and requests for each target, so the fuzzer
starts from the interesting shapes instead of from nothing.  Needs scapy
(the test extra).  Deterministic: rerunning it rewrites the same files.

    python fuzz/make_corpus.py
"""
import hashlib
import json
import os
import sys

from _common import pack_records
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CIP, VIP, VIP_MHS, RIP1, RIP2 = "192.0.2.10", "10.0.0.100", "10.0.0.101", "10.1.0.1", "10.1.0.2"
CIP6, VIP6, RIP6 = "2001:db8:c::10", "2001:db8::100", "2001:db8:1::1"


def packets():
    q4 = bytes(IP(src=VIP, dst=CIP) / TCP(sport=80, dport=40000))
    q6 = bytes(IPv6(src=VIP6, dst=CIP6) / TCP(sport=80, dport=40000))
    out = {
        "tcp4_syn": IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S"),
        "tcp4_opts": IP(src=CIP, dst=VIP, options=[IPOption_NOP()] * 4)
        / TCP(sport=40000, dport=80, flags="PA") / b"data",
        "tcp4_reply": IP(src=RIP1, dst=CIP) / TCP(sport=8080, dport=40000, flags="SA"),
        "udp4": IP(src=CIP, dst=VIP) / UDP(sport=5000, dport=53) / b"query",
        "udp4_reply": IP(src=RIP1, dst=CIP) / UDP(sport=53, dport=5000) / b"answer",
        "icmp4_echo": IP(src=CIP, dst=VIP) / ICMP(type=8, id=7),
        "icmp4_err": IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4) / q4,
        "tcp6_syn": IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S"),
        "udp6": IPv6(src=CIP6, dst=VIP6) / UDP(sport=5000, dport=53) / b"q6",
        "udp6_ext": IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrDestOpt() / UDP(sport=5, dport=53),
        "icmp6_echo": IPv6(src=CIP6, dst=VIP6) / ICMPv6EchoRequest(id=9),
        "icmp6_ptb": IPv6(src="2001:db8:ffff::1", dst=VIP6) / ICMPv6PacketTooBig() / q6,
        "frag6": IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrFragment(id=3, m=1, nh=17) / (b"y" * 64),
        "mhs_syn": IP(src=CIP, dst=VIP_MHS) / TCP(sport=40001, dport=80, flags="S"),
    }
    frags = fragment(IP(src=CIP, dst=VIP, id=5) / UDP(sport=5000, dport=53) / (b"z" * 1200),
                     fragsize=600)
    for i, f in enumerate(frags):
        out[f"frag4_{i}"] = f
    return {k: bytes(v) for k, v in out.items()}


def flows():
    """Record sequences (fuzz/_common.py) that open, use and close flows."""
    def t4(src, sport, dst, dport, flags, payload=b""):
        return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
                     / payload)

    def t6(src, sport, dst, dport, flags):
        return bytes(IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags))

    tcp = [(0, t4(CIP, 40000, VIP, 80, "S")), (2, t4(RIP2, 8080, CIP, 40000, "SA")),
           (2, t4(CIP, 40000, VIP, 80, "A")), (0, t4(CIP, 40000, VIP, 80, "PA", b"GET /")),
           (2, t4(RIP2, 8080, CIP, 40000, "FA")), (2, t4(CIP, 40000, VIP, 80, "FA")),
           (5, t4(CIP, 40000, VIP, 80, "S"))]
    persist = [(0, t4(CIP, 41000 + i, VIP, 443, "S")) for i in range(3)] + \
              [(4, t4(RIP1, 443, CIP, 41000, "SA")), (6, t4(CIP, 41003, VIP, 443, "S"))]
    udp = [(0, bytes(IP(src=CIP, dst=VIP) / UDP(sport=5000, dport=53) / b"q")),
           (2, bytes(IP(src=RIP1, dst=CIP) / UDP(sport=53, dport=5000) / b"a")),
           (3, bytes(IPv6(src=CIP6, dst=VIP6) / UDP(sport=5001, dport=53) / b"q6")),
           (7, bytes(IP(src=CIP, dst=VIP) / UDP(sport=5000, dport=53) / b"q"))]
    v6 = [(0, t6(CIP6, 40000, VIP6, 80, "S")), (2, t6(RIP6, 8080, CIP6, 40000, "SA")),
          (0, t6(CIP6, 40000, VIP6, 80, "R"))]
    mhs = [(0, t4(CIP, 40001, VIP_MHS, 80, "S")), (2, t4(CIP, 40001, VIP_MHS, 80, "A")),
           (2, t4(RIP1, 80, CIP, 40001, "A"))]
    frags = [(0, p) for k, p in sorted(packets().items()) if k.startswith("frag4")]
    icmp = [(0, t4(CIP, 40000, VIP, 80, "S")),
            (2, bytes(IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4)
                      / bytes(IP(src=VIP, dst=CIP) / TCP(sport=80, dport=40000)))),
            (2, bytes(IP(src=RIP1, dst=CIP) / ICMP(type=3, code=3)
                      / bytes(IP(src=CIP, dst=RIP1) / TCP(sport=40000, dport=8080))))]
    return {"tcp": tcp, "persist": persist, "udp": udp, "v6": v6, "mhs": mhs,
            "frags": frags, "icmp": icmp}


def vnet_flows():
    from userlb.dataplane.vnet import GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, pack_hdr

    def partial(pkt, gso=0, off=20):
        raw = bytearray(bytes(pkt))
        csum = 16 if pkt.haslayer(TCP) else 6
        raw[off + csum:off + csum + 2] = b"\x12\x34"
        return pack_hdr(1, gso, off + 20, 1400 if gso else 0, off, csum) + bytes(raw)

    plain = pack_hdr()
    out = {}
    for name, recs in flows().items():
        out[name] = [(c, plain + p) for c, p in recs]
    syn = IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    data = IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="PA") / (b"x" * 3000)
    out["gso4"] = [(0, plain + bytes(syn)), (2, partial(data, GSO_TCPV4))]
    d6 = IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80, flags="PA") / (b"x" * 3000)
    out["gso6"] = [(0, plain + bytes(IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80))),
                   (2, partial(d6, GSO_TCPV6, 40))]
    u = IP(src=CIP, dst=VIP) / UDP(sport=5000, dport=53) / (b"u" * 3000)
    out["uso"] = [(0, partial(u, GSO_UDP_L4))]
    out["csum_only"] = [(0, partial(IP(src=CIP, dst=VIP) / UDP(sport=5000, dport=53) / b"q"))]
    return out


RULES = {
    "basic": "-A -t 10.0.0.1:80 -s mh -b mh-fallback,mh-port\n"
             "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 3\n",
    "v6_udp": "-A -u [2001:db8::1]:53 -s sh -b sh-port --sh-tab-bits 6\n"
              "-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -m -x 10 -y 5\n",
    "persist": "-A -t 10.0.0.2:443 -s wlc -p 300 -M 255.255.255.0\n"
               "-a -t 10.0.0.2:443 -r 10.1.0.1 -m\n-e -t 10.0.0.2:443 -r 10.1.0.1:443 -m -w 0\n",
    "mhs": "-A -t 10.0.0.3:80 -s mhs --mh-table-size 251\n-a -t 10.0.0.3:80 -r 10.1.0.9:80 -m\n"
           "-E -t 10.0.0.3:80 -s rr\n-d -t 10.0.0.3:80 -r 10.1.0.9:80\n-D -t 10.0.0.3:80\n",
    "set": "--set 900 120 300\n-Z\n-C\n# a comment\n\n/sbin/ipvsadm -A -t 10.0.0.4:1 -s rr\n",
    "bad": "-A -t 10.0.0.1:80 -s nope\n",
    "quotes": "-A -t '10.0.0.5:80' -s \"wrr\" -o\n-a -t 10.0.0.5:80 -r 10.1.0.1:80 -m -w 65535\n",
}


def control_lines():
    reqs = [
        {"argv": ["-L", "-n"]},
        {"argv": ["-L", "-n", "--stats", "--exact"]},
        {"argv": ["-L", "-n", "-c"]},
        {"argv": ["-S", "-n"]},
        {"argv": ["-A", "-t", "10.0.0.9:80", "-s", "rr"], "id": 1},
        {"argv": ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.5:80", "-m", "-w", "2"]},
        {"argv": ["-R"], "stdin": RULES["basic"]},
        {"rules": RULES["persist"]},
        {"settings": {}},
        {"settings": {"sloppy_tcp": True, "max_entries": 100}},
        {"state": True},
        {"capture": {"count": 1, "seconds": 1}},
        {"argv": ["--set", "10", "5", "3"]},
        {"argv": ["-Z", "-t", "10.0.0.1:80"]},
        {"argv": ["-h"]},
    ]
    out = {f"req{i:02d}": json.dumps(r).encode() for i, r in enumerate(reqs)}
    out["session"] = b"\n".join(json.dumps(r).encode() for r in reqs[4:8] + reqs[:2])
    out["garbage"] = b"\x00\xff{not json\n[1,2]\n\"x\""
    return out


def write(target, items):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    for name, data in sorted(items.items()):
        h = hashlib.sha1(data).hexdigest()[:8]
        with open(os.path.join(d, f"{name}-{h}"), "wb") as f:
            f.write(data)


def main():
    pk = packets()
    write("packet_parse", pk)
    fl = {k: pack_records(v) for k, v in flows().items()}
    fl.update({f"one_{k}": pack_records([(0, p)]) for k, p in pk.items()})
    fl.update({f"sloppy_{k}": b"\x80" + v[1:] for k, v in fl.items() if k in ("tcp", "mhs")})
    write("engine_process", fl)
    write("vnet_path", {k: pack_records(v) for k, v in vnet_flows().items()})
    write("ipvsadm_rules", {k: v.encode() for k, v in RULES.items()})
    write("control_protocol", control_lines())


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
