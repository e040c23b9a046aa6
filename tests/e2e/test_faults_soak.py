"""The soak (userlb/lab/soak.py, docs/soak.md) in its CI length: one minute of
mixed TCP/UDP IPv4/IPv6 traffic through a lab director with a live change
every second and a reload every 20 s; then every check of the soak: no
broken flow or stream, RSS growth after warm-up < 5 MB, entries back to 0
after the timeouts, `-L --stats` connections equal the flows the clients saw
each real server answer, no error line in the director's log.  (`make soak
MINUTES=30` is the long run.)"""
from helpers.netns import needs_root


@needs_root
def test_one_minute_soak():
    from userlb.lab import soak
    rep = soak.soak(1.0, reload_every=20.0, close="rst", out=lambda *a: None)
    text = soak.summary(rep)
    assert rep["passed"], text
    assert rep["reloads"] >= 2 and rep["changes"] >= 40, text
    assert rep["flows"] >= 1000 and all(rep["by_kind"].get(k, 0) >= 100
                                        for k in ("tcp4", "tcp6", "udp4", "udp6")), text
    assert rep["streams"]["count"] == 4 and rep["streams"]["rounds"] >= 60, text
    assert rep["director_conns"] == rep["client_flows"]
