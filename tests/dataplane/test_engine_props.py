"""Property tests: for any addresses, ports, flags and payload, the engine's
rewrite (IPv4 fast path, IPv6 general path) equals the packet scapy builds
with the translated fields, checksums included."""
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.engine import engine_with, expect_rewritten, make_service, run, tcp4, tcp6, udp4, udp6
from userlb.dataplane.engine import V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

v4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda a: str(ipaddress.IPv4Address(a)))
v6 = st.binary(min_size=16, max_size=16).map(
    lambda b: str(ipaddress.IPv6Address(b"\x20\x01" + b[2:])))
port = st.integers(1, 65535)


@settings(max_examples=150, deadline=None)
@given(af=st.sampled_from([4, 6]), proto=st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]),
       addrs=st.data(), cport=port, vport=port, dport=port,
       payload=st.binary(max_size=64), flags=st.sampled_from(["A", "PA", "FA", "SA"]))
def test_rewrite_matches_scapy(af, proto, addrs, cport, vport, dport, payload, flags):
    gen = v4 if af == 4 else v6
    cip, vip, rip = addrs.draw(st.lists(gen, min_size=3, max_size=3, unique=True))
    svc = make_service(proto, vip, vport, [(rip, dport, 1)])
    eng = engine_with(svc)
    if proto == IPPROTO_TCP:
        mk = tcp4 if af == 4 else tcp6
        first = mk(cip, cport, vip, vport, "S")
        pin = mk(cip, cport, vip, vport, flags, payload=payload)
        pout = mk(rip, dport, cip, cport, flags, payload=payload)
    else:
        mk = udp4 if af == 4 else udp6
        first = mk(cip, cport, vip, vport, payload=b"first")
        pin = mk(cip, cport, vip, vport, payload=payload)
        pout = mk(rip, dport, cip, cport, payload=payload)
    v, out = run(eng, first, 0.0)
    assert v == V_FORWARD
    expect_rewritten(first, out, dst=rip, dport=dport)
    v, out = run(eng, pin, 0.5)
    assert v == V_FORWARD
    expect_rewritten(pin, out, dst=rip, dport=dport)
    v, out = run(eng, pout, 0.6)
    assert v == V_FORWARD
    expect_rewritten(pout, out, src=vip, sport=vport)
    assert len(eng) == 1
