"""ExaBGP's text API lines and answers (userlb/announce/exabgp.py)."""
import pytest

from userlb.announce import exabgp as X


def test_announce_and_withdraw_lines():
    assert X.announce_line("10.99.0.1/32") == "announce route 10.99.0.1/32 next-hop self"
    assert X.withdraw_line("fd00:99::1/128") == "withdraw route fd00:99::1/128 next-hop self"
    a = X.Attrs(med=10, communities=((65000, 1), (65000, 2)))
    assert X.announce_line("10.99.0.1/32", a) == \
        "announce route 10.99.0.1/32 next-hop self med 10 community [65000:1 65000:2]"
    assert X.announce_line("10.99.0.1/32", X.Attrs(communities=((1, 2),)), "10.30.1.2") == \
        "announce route 10.99.0.1/32 next-hop 10.30.1.2 community 1:2"


@pytest.mark.parametrize("text, want", [
    ("10.99.0.1", "10.99.0.1/32"), ("fd00:99:0::1", "fd00:99::1/128"),
    ("[fd00:99::1]", "fd00:99::1/128"), ("10.10.0.0/24", "10.10.0.0/24"),
    ("FD00:10::/64", "fd00:10::/64")])
def test_prefixes(text, want):
    assert X.prefix(text) == want


@pytest.mark.parametrize("bad", ["10.10.0.1/24", "10.99.0", "vip", ""])
def test_bad_prefixes(bad):
    with pytest.raises(ValueError):
        X.prefix(bad)


@pytest.mark.parametrize("line, want", [
    ("done", X.DONE), ("error", X.ERROR), ("done\n", X.DONE), ("shutdown 12 1", X.SHUTDOWN),
    ("neighbor 10.30.1.1 up", None), ("", None), ("done twice", None)])
def test_answers(line, want):
    assert X.answer(line) == want


def test_attribute_options_common_and_per_prefix():
    common, table = X.attrs_table(["5", "10.99.0.1=20"],
                                  ["65000:1", "10.10.0.0/24=65000:200"])
    assert common == X.Attrs(5, ((65000, 1),))
    assert table["10.99.0.1/32"] == X.Attrs(20, ((65000, 1),))
    assert table["10.10.0.0/24"] == X.Attrs(5, ((65000, 1), (65000, 200)))


@pytest.mark.parametrize("meds, comms, words", [
    (["-1"], [], "med"), (["4294967296"], [], "med"), ([], ["65536:1"], "0..65535"),
    ([], ["65000"], "ASN:VALUE"), ([], ["vip=1:2"], "not an address")])
def test_bad_attribute_options(meds, comms, words):
    with pytest.raises(X.AttrError, match=words):
        X.attrs_table(meds, comms)
