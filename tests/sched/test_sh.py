"""userlb.sched.sh: the kernel's `sh` (docs/ipvs.md §3).

Every scenario of tests/vectors/sh_vectors.json replayed through the Python
API (table, first bucket, every lookup under every flag combination), an
independent naive reference on random destination sets, the options, and
the fallback probe quirk.
"""
import json
import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userlb.errors import ConfigError
from userlb.model import (
    IPPROTO_TCP,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Dest,
    Service,
    parse_addr,
    parse_endpoint,
)
from userlb.sched import base, sh

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "sh_vectors.json").read_text())
SCENARIOS = VECTORS["scenarios"]
FLAGS = {"none": 0, "sh-port": SVC_F_SCHED2, "sh-fallback": SVC_F_SCHED1,
         "sh-fallback,sh-port": SVC_F_SCHED1 | SVC_F_SCHED2}


def add_dest(svc, addr, port, weight):
    d = Dest(addr, port, weight=weight)
    d.svc = svc
    svc.dests.insert(0, d)            # kernel: newest first
    svc.sched.add_dest(d)
    return d


def edit_dest(svc, d, weight):
    d.weight = weight
    if weight:
        d.last_weight = weight
    svc.sched.upd_dest(d)


def del_dest(svc, d):
    svc.dests.remove(d)
    svc.sched.del_dest(d)


def replay(lines, options=None):
    svc = None
    added = []
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        tok = shlex.split(line)
        opts = dict(zip(tok[2::2], tok[3::2], strict=False)) if tok[1] == "-A" else {}
        if tok[1] == "-A":
            _, vaddr, vport = parse_endpoint(opts.get("-t") or opts["-u"])
            svc = Service(IPPROTO_TCP, vaddr, vport, "sh", options=options)
            svc.sched = base.create("sh", svc)
            continue
        r = tok[tok.index("-r") + 1]
        w = int(tok[tok.index("-w") + 1]) if "-w" in tok else 1
        _, addr, port = parse_endpoint(r, default_port=svc.port)
        if tok[1] == "-a":
            added.append(add_dest(svc, addr, port, w))
        elif tok[1] == "-e":
            edit_dest(svc, svc.find_dest(addr, port), w)
        else:
            raise AssertionError(line)
    return svc, added


def build_scenario(s):
    svc, added = replay(s["reproduce_with"])
    assert len(added) == len(s["dests"])
    for d, spec in zip(added, s["dests"], strict=True):
        assert (d.addr, d.port, d.weight) == (parse_addr(spec["addr"])[1], spec["port"],
                                              spec["weight"])
        d.overloaded = spec["overloaded"]
    assert [added.index(d) for d in svc.dests] == s["kernel_list_order"]
    return svc, added


@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s["name"])
def test_vector_table(s):
    svc, added = build_scenario(s)
    assert svc.sched.table_size == s["table_size"] == 256
    want = [added[i] if i >= 0 else None for i in s["table"]]
    got = svc.sched.table_endpoints()
    assert [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a is not b] == []
    assert len(got) == len(want)


@pytest.mark.parametrize("flagname", list(FLAGS))
@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s["name"])
def test_vector_lookups(s, flagname):
    svc, added = build_scenario(s)
    svc.flags = FLAGS[flagname]
    for lk in s["lookups"]:
        caddr = parse_addr(lk["client"])[1]
        want = lk[flagname]
        assert svc.sched.schedule(caddr, lk["cport"]) is (None if want is None else added[want])


@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s["name"])
def test_vector_first_bucket(s):
    svc, _ = build_scenario(s)
    for lk in s["lookups"]:
        caddr = parse_addr(lk["client"])[1]
        assert svc.sched.slot_of(caddr, lk["cport"], port=False) == lk["bucket_nport"]
        assert svc.sched.slot_of(caddr, lk["cport"], port=True) == lk["bucket_port"]


# ------------------------------------------------------------------ reference (naive, from §3)

def ref_fold(addr):
    if isinstance(addr, int):
        return addr
    w = [int.from_bytes(addr[i:i + 4], "big") for i in (0, 4, 8, 12)]
    return w[0] ^ w[1] ^ w[2] ^ w[3]


def ref_bucket(x, offset, bits, legacy=False):
    size = 2 ** bits
    if legacy:
        return (offset + x * 2654435761) % size
    h = ((x * 0x61C88647) % 2 ** 32) // 2 ** (32 - bits)
    return (offset + h) % size


def ref_table(weights, bits):
    """weights in list order -> bucket -> position (None = empty)."""
    size = 2 ** bits
    if not weights:
        return [None] * size
    table = []
    p = 0
    count = 0
    for _ in range(size):
        table.append(p)
        count += 1
        if count >= weights[p]:        # so a weight-0 destination takes one bucket
            p = (p + 1) % len(weights)
            count = 0
    return table


def ref_lookup(table, bits, avail, caddr, cport, flags, legacy=False):
    size = 2 ** bits
    x = ((cport if flags & 0x10 else 0) + ref_fold(caddr)) % 2 ** 32
    b0 = ref_bucket(x, 0, bits, legacy)
    i = table[b0]
    if i is None:
        return None
    if avail[i]:
        return i
    if not flags & 0x08:
        return None
    for off in range(size):
        roff = (off + b0) % size
        i = table[ref_bucket(x, roff, bits, legacy)]
        if i is None:
            return None
        if avail[i]:
            return i
    return None


@st.composite
def dest_sets(draw):
    af = draw(st.sampled_from([4, 6]))
    addr = st.integers(0, 2**32 - 1) if af == 4 else st.binary(min_size=16, max_size=16)
    weight = st.one_of(st.integers(0, 4), st.integers(0, 300))
    specs = draw(st.lists(st.tuples(addr, st.integers(0, 65535), weight, st.booleans(),
                                    st.integers(0, 6)),
                          max_size=25, unique_by=lambda t: (t[0], t[1])))
    bits = draw(st.one_of(st.just(8), st.integers(4, 12)))
    legacy = draw(st.booleans())
    return af, bits, legacy, specs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dest_sets(), st.randoms(use_true_random=False))
def test_sh_matches_reference(ds, rnd):
    af, bits, legacy, specs = ds
    opts = {"sh_tab_bits": bits}
    if legacy:
        opts["sh_hash"] = "legacy"
    vip = 0x0A0000FE if af == 4 else bytes(15) + b"\xfe"
    svc = Service(IPPROTO_TCP, vip, 80, "sh", options=opts)
    svc.sched = base.create("sh", svc)
    objs = [add_dest(svc, a, p, w) for a, p, w, _, _ in specs]
    for d, (_, _, _, ov, dl) in zip(objs, specs, strict=True):
        d.overloaded = ov
        if dl == 0:
            del_dest(svc, d)
    dests = list(svc.dests)
    ref = ref_table([d.weight for d in dests], bits)
    assert svc.sched.table_endpoints() == [None if i is None else dests[i] for i in ref]
    avail = [d.weight > 0 and not d.overloaded for d in dests]
    for _ in range(8):
        caddr = rnd.getrandbits(32) if af == 4 else rnd.getrandbits(128).to_bytes(16, "big")
        cport = rnd.getrandbits(16)
        for flags in FLAGS.values():
            svc.flags = flags
            want = ref_lookup(ref, bits, avail, caddr, cport, flags, legacy)
            assert svc.sched.schedule(caddr, cport) is (None if want is None else dests[want])


# ------------------------------------------------------------------ hand-checked behaviour

def _svc(options=None):
    svc = Service(IPPROTO_TCP, 0x0A000064, 80, "sh", options=options)
    svc.sched = base.create("sh", svc)
    return svc


def test_fill_walks_kernel_order_with_weights():
    svc = _svc({"sh_tab_bits": 4})
    a = add_dest(svc, 0x0A000001, 80, 3)
    b = add_dest(svc, 0x0A000002, 80, 0)
    c = add_dest(svc, 0x0A000003, 80, 2)
    # list order c, b, a: c c b a a a, then again
    assert svc.sched.table_endpoints() == [c, c, b, a, a, a] * 2 + [c, c, b, a]


def test_large_weight_starves_later_dests():
    svc = _svc()
    a = add_dest(svc, 0x0A000001, 80, 1)
    b = add_dest(svc, 0x0A000002, 80, 300)
    assert svc.sched.table_endpoints() == [b] * 256
    assert a not in svc.sched.table_endpoints()


def test_int_max_weight_fills_without_materialising_the_weight():
    """ipvsadm takes weights up to INT_MAX: the table takes only the buckets
    it has (a list of 2**31 references would exhaust memory)."""
    svc = _svc()
    add_dest(svc, 0x0A000001, 80, 1)
    b = add_dest(svc, 0x0A000002, 80, 2**31 - 1)
    assert sh.fill([b], 256) == [b] * 256
    assert svc.sched.table_endpoints() == [b] * 256


def test_no_dests_empty():
    svc = _svc()
    assert svc.sched.table_endpoints() == [None] * 256
    svc.flags = SVC_F_SCHED1 | SVC_F_SCHED2
    assert svc.sched.schedule(0x01020304, 99) is None


def test_fallback_probe_starts_at_twice_b0():
    """Bucket b0 unavailable: the kernel's probe looks at (off + 2*b0) mod size."""
    svc = _svc({"sh_tab_bits": 4})
    ds = [add_dest(svc, 0x0A000001 + i, 80, 1) for i in range(16)]
    table = svc.sched.table_endpoints()
    assert len(set(map(id, table))) == 16
    for caddr in range(0, 5000, 7):
        b0 = svc.sched.slot_of(caddr)
        if b0 == 0:
            continue
        table[b0].overloaded = True
        svc.flags = SVC_F_SCHED1
        assert svc.sched.schedule(caddr, 0) is table[(2 * b0) % 16]
        # make the first probe unavailable too: next one is 2*b0 + 1
        if (2 * b0) % 16 != b0:
            table[(2 * b0) % 16].weight = 0
            nxt = table[(2 * b0 + 1) % 16]
            want = nxt if nxt is not table[b0] else table[(2 * b0 + 2) % 16]
            assert svc.sched.schedule(caddr, 0) is want
            table[(2 * b0) % 16].weight = 1
        svc.flags = 0
        assert svc.sched.schedule(caddr, 0) is None
        table[b0].overloaded = False
    assert all(d.weight == 1 and not d.overloaded for d in ds)


def test_weight_edit_rebuilds_with_current_weight():
    svc = _svc({"sh_tab_bits": 4})
    a = add_dest(svc, 0x0A000001, 80, 1)
    b = add_dest(svc, 0x0A000002, 80, 1)
    edit_dest(svc, b, 3)
    assert svc.sched.table_endpoints()[:4] == [b, b, b, a]
    edit_dest(svc, b, 0)                    # current weight, one bucket, unavailable
    assert svc.sched.table_endpoints()[:4] == [b, a, b, a]


@pytest.mark.parametrize("bits", [4, 8, 20, "12"])
def test_tab_bits_option(bits):
    svc = _svc({"sh_tab_bits": bits})
    add_dest(svc, 0x0A000001, 80, 1)
    assert svc.sched.table_size == 2 ** int(bits)


@pytest.mark.parametrize("bad", [3, 21, 0, -8, "x", 8.0, True])
def test_tab_bits_option_rejects(bad):
    with pytest.raises(ConfigError, match="sh_tab_bits"):
        sh.validate_options({"sh_tab_bits": bad})
    with pytest.raises(ConfigError):
        _svc({"sh_tab_bits": bad})


def test_hash_option():
    sh.validate_options({"sh_hash": "legacy"})
    sh.validate_options({"sh_hash": "hash_32"})
    with pytest.raises(ConfigError, match="sh_hash"):
        sh.validate_options({"sh_hash": "jhash"})
    # legacy: bucket = (x * 2654435761) mod 256; 10.0.0.1 -> x = 0x0A000001
    svc = _svc({"sh_hash": "legacy"})
    assert svc.sched.slot_of(0x0A000001) == (0x0A000001 * 2654435761) % 256
    svc2 = _svc()
    assert svc2.sched.slot_of(0x0A000001) == ((0x0A000001 * 0x61C88647) % 2**32) >> 24


def test_publish_by_one_assignment():
    svc = _svc()
    add_dest(svc, 0x0A000001, 80, 1)
    old = svc.sched._state
    snapshot = list(old[0])
    add_dest(svc, 0x0A000002, 80, 1)
    assert svc.sched._state is not old and old[0] == snapshot
