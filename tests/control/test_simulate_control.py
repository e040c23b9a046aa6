"""`userlb simulate --control SOCK`: the running director's rules (read with
`-S -n`), so changes made with `userlb adm` count."""
import subprocess
from pathlib import Path

from helpers.control_server import ServedDirector

USERLB = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "userlb"
FLOW = "tcp 1.2.3.4:1000 10.0.0.100:80\n"


def sim(*argv, stdin=FLOW):
    p = subprocess.run([str(USERLB), "simulate", *argv], capture_output=True, text=True,
                       input=stdin, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_simulate_asks_the_running_director():
    d = ServedDirector()
    try:
        assert d.adm("-A", "-t", "10.0.0.100:80", "-s", "mh")[0] == 0
        assert d.adm("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80", "-m")[0] == 0
        assert sim("--control", d.path) == (0, FLOW.strip() + " -> 10.1.0.1:80\n", "")
        # a live change counts
        assert d.adm("-a", "-t", "10.0.0.100:80", "-r", "10.1.0.2:80", "-m", "-w", "0")[0] == 0
        assert d.adm("-d", "-t", "10.0.0.100:80", "-r", "10.1.0.1:80")[0] == 0
        rc, out, err = sim("--control", d.path, "--table", "10.0.0.100:80", "--summary")
        assert rc == 0 and out.split() == ["10.1.0.2:80", "weight", "0", "slots", "0", "(0.00%)",
                                           "-", "weight", "0", "slots", "4093", "(100.00%)"]
    finally:
        d.close()


def test_no_director_is_said_plainly(tmp_path):
    rc, out, err = sim("--control", str(tmp_path / "none.sock"))
    assert rc == 1 and out == "" and "no director listens there" in err
    rc, out, err = sim("--control", "x", "--rules", "y")
    assert rc == 2 and "not allowed with" in err


def test_live_last_weight_gives_the_live_decision():
    """-e -w 0 on an mh server (no mh-fallback): the kernel keeps its slots
    (last_weight) and new connections hashing there get no real server.  `-S`
    cannot carry last_weight, so simulate --rules from a saved file predicts
    other servers; simulate --control asks the director and agrees with the
    engine, flow for flow."""
    from helpers.engine import tcp4
    d = ServedDirector()
    try:
        d.ok("-A", "-t", "10.0.0.100:80", "-s", "mh", "-b", "mh-port")
        for i in (1, 2, 3):
            d.ok("-a", "-t", "10.0.0.100:80", "-r", f"10.1.0.{i}:80", "-m")
        d.ok("-e", "-t", "10.0.0.100:80", "-r", "10.1.0.2:80", "-m", "-w", "0")
        flows = [(f"1.2.{i}.4", 1000 + i) for i in range(60)]
        live = []
        for caddr, cport in flows:
            v, out = d.packet(tcp4(caddr, cport, "10.0.0.100", 80, "S"))
            live.append(".".join(map(str, out[16:20])) + ":80" if v == 1 else "-")
        text = "".join(f"tcp {c}:{p} 10.0.0.100:80\n" for c, p in flows)
        rc, out, err = sim("--control", d.path, stdin=text)
        assert (rc, err) == (0, "")
        predicted = [line.rsplit(" -> ", 1)[1] for line in out.splitlines()]
        assert predicted == live
        assert "-" in live and "10.1.0.2:80" not in live
    finally:
        d.close()


def _live(d, flows, flags, now):
    from helpers.engine import tcp4
    out_dests = []
    for caddr, cport in flows:
        v, out = d.packet(tcp4(caddr, cport, "10.0.0.100", 80, flags), now=now)
        out_dests.append(".".join(map(str, out[16:20])) + ":80" if v == 1 else "-")
    return out_dests


def test_mhs_unstable_slots_and_timers_come_from_the_director():
    """mhs after a backend is removed: for T seconds (T = max of the --set
    tcp / tcpfin timeouts) the non-SYN packets of the slots it had still go to
    it, SYNs to the new table; afterwards every slot is merged.  `-S` carries
    none of that; simulate --control reads the unstable slots, their timers
    and the timeouts, and its timed run agrees with the engine packet for
    packet, before and after the timers run out."""
    d = ServedDirector()
    try:
        d.ok("--set", "40", "30", "0")              # T = 40 s
        d.ok("-A", "-t", "10.0.0.100:80", "-s", "mhs")
        for i in (1, 2, 3):
            d.ok("-a", "-t", "10.0.0.100:80", "-r", f"10.1.0.{i}:80", "-m")
        flows = [(f"1.2.{i}.4", 1000 + i) for i in range(90)]
        before = _live(d, flows, "S", d.now)        # forwarded: rule 5 no longer applies
        assert "10.1.0.2:80" in before
        d.clock.advance(5)
        d.now += 5
        d.ok("-d", "-t", "10.0.0.100:80", "-r", "10.1.0.2:80")
        d.clock.advance(10)
        d.now += 10                                  # 30 s left on the timers
        # the same clients from other ports: each phase on flows without entries
        # (a non-SYN packet in an unstable slot creates one, rule 10)
        phase = {k: [(c, p + 100 * k) for c, p in flows] for k in (1, 2, 3)}
        acks_now = _live(d, phase[1], "A", d.now)
        syns_now = _live(d, phase[2], "S", d.now)

        def timed(t, flags, fl):
            return "".join(f"@{t} tcp {c}:{p} 10.0.0.100:80 {flags}\n" for c, p in fl)

        def dests(out):
            return [line.split(" -> ")[1].split()[0] for line in out.splitlines()]
        rc, out, err = sim("--control", d.path, stdin=timed(0, "ACK", phase[1]))
        assert (rc, err) == (0, "")
        assert dests(out) == acks_now
        assert "10.1.0.2:80" in acks_now            # the old table, still
        # untimed flows are SYNs: the candidate table
        rc, out, err = sim("--control", d.path,
                           stdin="".join(f"tcp {c}:{p} 10.0.0.100:80\n" for c, p in phase[2]))
        assert [line.rsplit(" -> ", 1)[1] for line in out.splitlines()] == syns_now
        assert "10.1.0.2:80" not in syns_now
        # 31 s on, every timer has run out (asked before the live director
        # gets packets of that time: lookups merge the slots they touch)
        rc, out, err = sim("--control", d.path, stdin=timed(31, "ACK", phase[3]))
        later = _live(d, phase[3], "A", d.now + 31)
        assert dests(out) == later and "10.1.0.2:80" not in later
    finally:
        d.close()
