"""The TCP state table as data (docs/ipvs.md §4.2, §4.3)."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from userlb.dataplane import tcpstate as T

# docs/ipvs.md §4.2, copied cell by cell (columns NONE ES SS SR FW TW CL CW LA LI SA)
SPEC = {
    ("IN", "syn"): "SR ES ES SR SR SR SR SR SR SR SR",
    ("IN", "fin"): "CL CW SS TW TW TW CL CW LA LI TW",
    ("IN", "ack"): "ES ES SS ES FW TW CL CW CL LI ES",
    ("IN", "rst"): "CL CL CL SR CL CL CL CL LA LI SR",
    ("OUT", "syn"): "SS ES SS SR SS SS SS SS SS LI SR",
    ("OUT", "fin"): "TW FW SS TW FW TW CL TW LA LI TW",
    ("OUT", "ack"): "ES ES SS ES FW TW CL CW LA ES ES",
    ("OUT", "rst"): "CL CL SS CL CL TW CL CL CL CL CL",
    ("IN-ONLY", "syn"): "SR ES ES SR SR SR SR SR SR SR SR",
    ("IN-ONLY", "fin"): "CL FW SS TW FW TW CL CW LA LI TW",
    ("IN-ONLY", "ack"): "ES ES SS ES FW TW CL CW CL LI ES",
    ("IN-ONLY", "rst"): "CL CL CL SR CL CL CL CL LA LI CL",
}
ABBR = {"ES": T.ESTABLISHED, "SS": T.SYN_SENT, "SR": T.SYN_RECV, "FW": T.FIN_WAIT,
        "TW": T.TIME_WAIT, "CL": T.CLOSE, "CW": T.CLOSE_WAIT, "LA": T.LAST_ACK,
        "LI": T.LISTEN, "SA": T.SYNACK}
FLAGS = {"syn": 0x02, "fin": 0x01, "ack": 0x10, "rst": 0x04}
DIRS = {"IN": T.INPUT, "OUT": T.OUTPUT, "IN-ONLY": T.INPUT_ONLY}

CELLS = [(d, ev, s, ABBR[c]) for (d, ev), row in SPEC.items()
         for s, c in enumerate(row.split())]


@pytest.mark.parametrize("d,ev,state,want", CELLS)
def test_every_cell(d, ev, state, want):
    assert T.TABLE[DIRS[d]][T.EVENT_NAMES.index(ev)][state] == want
    assert T.next_state(DIRS[d], FLAGS[ev], state) == want
    assert T.NEXT[DIRS[d]][FLAGS[ev] << 4 | state] == want


def test_event_priority():
    assert T.event_of(0x02 | 0x04) == T.EV_RST
    assert T.event_of(0x02 | 0x01 | 0x10) == T.EV_SYN
    assert T.event_of(0x01 | 0x10) == T.EV_FIN
    assert T.event_of(0x10 | 0x08) == T.EV_ACK
    assert T.event_of(0x08) == T.EV_NONE
    assert T.event_of(0) == T.EV_NONE


@given(st.integers(0, 255), st.integers(0, T.N_STATES - 1), st.sampled_from([0, 1, 2]))
def test_flat_table_matches(flags, state, d):
    assert T.NEXT[d][flags << 4 | state] == T.next_state(d, flags, state)
    if T.event_of(flags) == T.EV_NONE:
        assert T.next_state(d, flags, state) == T.CLOSE


def test_timeouts():
    assert T.DEFAULT_TIMEOUTS[:11] == (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
    assert T.DEFAULT_TIMEOUTS[T.UDP] == 300
    t = T.make_timeouts(100, 0, 0)
    assert t[T.ESTABLISHED] == 100 and t[T.FIN_WAIT] == 120 and t[T.UDP] == 300
    t = T.make_timeouts(0, 7, 9, base=t)
    assert t[T.ESTABLISHED] == 100 and t[T.FIN_WAIT] == 7 and t[T.UDP] == 9
    # tcpfin sets only FIN_WAIT
    assert t[T.TIME_WAIT] == 120 and t[T.CLOSE_WAIT] == 60 and t[T.LAST_ACK] == 30


def test_active_states():
    assert {s for s in range(T.N_STATES) if T.IS_ACTIVE[s]} == {
        T.ESTABLISHED, T.SYN_SENT, T.SYN_RECV, T.SYNACK}
    assert T.IS_ACTIVE[T.UDP] == 0
    assert T.state_name(T.UDP) == "UDP" and T.state_name(T.SYNACK) == "SYNACK"
