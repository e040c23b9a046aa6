"""Fuzz target: the virtio-net header path (VnetPath.process) in front of the
engine of fuzz/engine_process.py.  Each record is a 10-byte virtio-net header
followed by the IP packet (a record shorter than 10 bytes is zero-padded).

Invariants: those of engine_process, plus: a packet VnetPath refuses is
counted under one of its reasons; a V_FORWARD_OUT never leaves with a partial
checksum (it is refused instead).

    python fuzz/vnet_path.py [libFuzzer options] [corpus dirs]
"""

from _common import instrumented, run

with instrumented(__name__ == "__main__"):
    import engine_process as E

    from userlb.dataplane import vnet
    from userlb.dataplane.engine import V_DROP, V_FORWARD_OUT


def one_input(data):
    sloppy = bool(data[:1]) and data[0] & 0x80 != 0
    eng, start = E.engine_for(sloppy)
    path = vnet.VnetPath(eng)

    def process(rec, now):
        hdr = bytes(rec[:vnet.VNET_HDR_LEN]).ljust(vnet.VNET_HDR_LEN, b"\0")
        pkt = rec[vnet.VNET_HDR_LEN:]
        n = len(pkt)
        E.BUF[:n] = pkt
        before = sum(eng.drops.values())
        vbefore = sum(path.drops.values())
        v = path.process(hdr, E.BUF, n, now)
        if sum(path.drops.values()) != vbefore:
            assert v == V_DROP and path.drops[path.last_reason] > 0
            assert path.last_reason in vnet.ALL_REASONS
            assert sum(path.drops.values()) == vbefore + 1
        else:
            assert v != V_FORWARD_OUT or not hdr[0] & vnet.F_NEEDS_CSUM
            E.check_verdict(eng, v, n, before)

    now = E.feed(eng, data, process, start)
    E.done_with(eng, sloppy, E.finish(eng, now))


if __name__ == "__main__":
    run(one_input)
