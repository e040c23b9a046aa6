"""A short bounded pass of `userlb lab experiment flood` (the full one is
`make flood-experiment`): a spoofed SYN flood of 3 s at a bounded rate
against mh with drop_entry and the first line, and against mhs; the
generator refuses to run outside a lab namespace."""
import json
import subprocess
import sys

import pytest

from helpers.netns import needs_root
from userlb.lab import flood_experiment as fe
from userlb.lab import synflood


def test_generator_refuses_outside_a_lab_namespace():
    with pytest.raises(synflood.FloodRefused):
        synflood.flood("10.99.0.1", 7, "10.64.0.0/17", 0.1)
    r = subprocess.run([sys.executable, "-m", "userlb.lab.synflood", "--dst", "10.99.0.1",
                        "--port", "7", "--seconds", "0.1"], capture_output=True, text=True)
    assert r.returncode == 1 and "refusing" in r.stderr


def test_prebuilt_syns_are_valid():
    from scapy.layers.inet import IP, TCP
    pkts = synflood.build("10.64.0.0/17", "10.99.0.1", 7, 50)
    assert len(set(pkts)) == 50
    for raw in pkts[:10]:
        p = IP(raw)
        assert p[TCP].flags == "S" and p.dst == "10.99.0.1" and p[TCP].dport == 7
        assert p.src.startswith("10.64.") and int(p.src.split(".")[2]) < 128
        chk = p[TCP].chksum
        del p[TCP].chksum
        assert IP(bytes(p))[TCP].chksum == chk


def test_unknown_run_is_refused(capsys):
    assert fe.main(["--runs", "nope", "--out", "/nonexistent/x"]) == 2
    assert "unknown run" in capsys.readouterr().err


def _row(name, sched, legit, intact, entries):
    return {"name": name, "sched": sched, "legit_during": legit, "streams_intact": intact,
            "streams": [{}] * 5, "entries_max": entries}


def test_the_bar():
    assert fe.meets_bar(_row("a", "mh", [199, 200], 5, 9000))        # 99.5 %
    assert not fe.meets_bar(_row("b", "mh", [197, 200], 5, 9000))    # 98.5 %
    assert not fe.meets_bar(_row("c", "mh", [200, 200], 4, 9000))    # a stream broke
    assert not fe.meets_bar(_row("d", "mhs", [200, 200], 5, 1))      # mhs made an entry
    assert not fe.meets_bar(_row("e", "mhs", [0, 0], 5, 0))          # nothing measured
    v = fe.verdict([_row("a", "mh", [199, 200], 5, 9000), _row("d", "mhs", [200, 200], 5, 1)])
    assert "met by `a`" in v and "not met by `d`" in v


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_short_flood_experiment(tmp_path):
    out = tmp_path / "fe"
    rc = fe.main(["--quick", "--seconds", "3", "--rate", "100000",
                  "--runs", "mh+drop_entry+first_line,mhs", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    mhs, fl = rows["mhs"], rows["mh+drop_entry+first_line"]
    assert mhs["entries_max"] == 0
    assert fl["first_line_drops"] > 0
    assert fl["flood"]["sent"] > 50_000
    for r in rows.values():
        assert r["legit_after"][1] > 0 and r["recovery"] is not None and r["recovery"] <= 5
    assert fl["streams_intact"] == 5
    md = out.with_suffix(".md").read_text()
    assert "| `mhs` |" in md and "entries over time" in md and "Against the bar" in md
    assert data["args"]["legit_every"] == 0.1
