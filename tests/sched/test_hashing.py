"""userlb.sched.hashing against the kernel's hsiphash vectors (docs/ipvs.md §2.3)
and the spec's worked examples (§1.3, §1.4, §3)."""
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from userlb.sched import hashing as h

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "hsiphash_vectors.json").read_text())
KEYS = VECTORS["keys"]


def _data(v):
    if "words" in v:
        return b"".join(w.to_bytes(4, "little") for w in v["words"])
    return bytes.fromhex(v["input_hex"])


def _ids(vs):
    return [f"{v['bits']}-{v['key']}-{v.get('func', 'bytes')}-{v['len']}-{i}"
            for i, v in enumerate(vs)]


V64 = [v for v in VECTORS["vectors"] if v["bits"] == 64]
V32 = [v for v in VECTORS["vectors"] if v["bits"] == 32]


def test_vector_counts():
    assert len(V64) + len(V32) == len(VECTORS["vectors"]) == 352
    assert len(V64) >= 64 + 4 * 32


@pytest.mark.parametrize("v", V64, ids=_ids(V64))
def test_hsiphash_64bit(v):
    data = _data(v)
    assert len(data) == v["len"]
    k0, k1 = KEYS[v["key"]]
    key = h.key16(k0, k1)
    assert h.hsiphash(data, key) == v["output"]
    if v.get("func") == "hsiphash_1u32":
        assert h.hsiphash_1u32(v["words"][0], key) == v["output"]
        assert h.hsiphash_u32(v["words"][0], key) == v["output"]


@pytest.mark.parametrize("v", V32, ids=_ids(V32))
def test_hsiphash_32bit(v):
    k0, k1 = KEYS[v["key"]]
    assert h.hsiphash32(_data(v), k0, k1) == v["output"]


def test_mh_keys_match_vector_file():
    mk = VECTORS["mh_keys"]
    assert h.MH_KEY1 == h.key16(*mk["hash1"])
    assert h.MH_KEY2 == h.key16(*mk["hash2"])


def test_spec_worked_examples():
    # docs/ipvs.md §1.4: 10.0.0.1:80 -> v 0x0A000051
    assert h.mh_hashkey(0x0A000001, 80, h.MH_KEY1) == 0x439C0CBE
    assert h.mh_hashkey(0x0A000001, 80, h.MH_KEY2) == 0x97B3DC47
    # §1.8: client 192.168.1.100 without / with port 12345
    assert h.mh_hashkey(0xC0A80164, 0, h.MH_KEY1) == 0xC15D2CF8
    assert h.mh_hashkey(0xC0A80164, 12345, h.MH_KEY1) == 0xA583C111
    # offset argument is added like the port
    assert h.mh_hashkey(0xC0A80164, 12000, h.MH_KEY1, 345) == 0xA583C111


def test_fold():
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    assert h.fold(v6) == 0x20010DB9
    assert h.fold(0x0A000001) == 0x0A000001
    assert h.fold_af(v6, 6) == 0x20010DB9
    assert h.fold_af(v6, 4) == 0x20010DB8          # IPv6 dest in an IPv4 service: first word
    assert h.fold_af(0x0A000001, 6) == 0x0A000001  # IPv4 dest in an IPv6 service


def test_mh_hashkey_wraps_mod_2_32():
    assert h.mh_hashkey(0xFFFFFFFF, 1, h.MH_KEY1) == h.mh_hashkey(0, 0, h.MH_KEY1)


@given(st.integers(0, 2**32 - 1), st.integers(4, 32))
def test_hash_32_definition(x, bits):
    r = h.hash_32(x, bits)
    assert 0 <= r < 2**bits
    assert r == ((x * 0x61C88647) % 2**32) // 2**(32 - bits)


@given(st.binary(min_size=16, max_size=16))
def test_fold_is_xor_of_words(b):
    words = [int.from_bytes(b[i:i + 4], "big") for i in range(0, 16, 4)]
    assert h.fold(b) == words[0] ^ words[1] ^ words[2] ^ words[3]
