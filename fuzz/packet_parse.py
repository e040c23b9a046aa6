"""Fuzz target: userlb.dataplane.packet.parse on arbitrary bytes.

Invariants: it never raises; it returns a reason string or a 19-tuple whose
offsets lie inside the parsed bytes (docs/fuzzing.md); parsing at an offset
inside a larger buffer gives the same answer shifted by that offset.

    python fuzz/packet_parse.py [libFuzzer options] [corpus dirs]
"""

from _common import instrumented, run

with instrumented(__name__ == "__main__"):
    from userlb.dataplane import packet as P

PAD = 13


def _check(r, off, end):
    if type(r) is str:
        return
    assert type(r) is tuple and len(r) == 19, r
    assert r[P.P_AF] in (4, 6)
    assert r[P.P_L3OFF] == off
    pend = off + r[P.P_LEN]
    assert off + 20 <= pend <= end, (r, end)
    assert off < r[P.P_L4OFF] <= pend, r
    assert off <= r[P.P_TTLOFF] < pend
    frag = r[P.P_FRAG]
    assert frag in (P.FRAG_NONE, P.FRAG_FIRST, P.FRAG_LATER)
    if frag == P.FRAG_LATER:
        assert r[P.P_CSUMOFF] == -1 and r[P.P_SPORT] == r[P.P_DPORT] == 0
    else:
        assert r[P.P_L4OFF] < r[P.P_CSUMOFF] + 2 <= pend, r
    for k in (P.P_SPORT, P.P_DPORT):
        assert 0 <= r[k] <= 0xFFFF
    inner = r[P.P_INNER]
    if inner is not None:
        assert type(inner) is tuple and len(inner) == 19 and inner[P.P_INNER] is None
        assert inner[P.P_AF] == r[P.P_AF]
        assert r[P.P_L4OFF] + 8 <= inner[P.P_L3OFF] < inner[P.P_L4OFF] <= pend


def _shift(r, k):
    """The parse result with every offset moved by k."""
    if type(r) is str:
        return r
    out = list(r)
    for i in (P.P_L3OFF, P.P_L4OFF, P.P_TTLOFF):
        out[i] += k
    if out[P.P_CSUMOFF] != -1:
        out[P.P_CSUMOFF] += k
    if out[P.P_INNER] is not None:
        out[P.P_INNER] = _shift(out[P.P_INNER], k)
    return tuple(out)


def one_input(data):
    r = P.parse(data)
    _check(r, 0, len(data))
    # the same packet inside a larger reused buffer, at an offset, with junk after it
    buf = bytearray(b"\xaa" * PAD) + bytearray(data) + bytearray(b"\x55" * PAD)
    r2 = P.parse(buf, PAD, PAD + len(data))
    _check(r2, PAD, PAD + len(data))
    assert r2 == _shift(r, PAD), (r, r2)
    assert P.parse(memoryview(buf), PAD, PAD + len(data)) == r2


if __name__ == "__main__":
    run(one_input)
