"""The IPVS SCTP association state machine as data (docs/ipvs.md §4.1,
§4.4; docs/sctp.md).

Theory of operation
-------------------
An SCTP entry has one state for both directions, as a TCP entry does.  A
packet is reduced to an *event* by the type of its first chunk (DATA, SACK,
HEARTBEAT, HEARTBEAT-ACK, ECNE, CWR and every unknown type count as DATA;
a COOKIE-ECHO or COOKIE-ACK directly followed by an ABORT counts as ABORT),
and the next state is ``TABLE[direction][event][state]``.  The table, the
timeouts and the names shown by ``ipvsadm -L -c`` are the kernel's
(ip_vs_proto_sctp.c, 14 states).  Only ESTABLISHED is an active state.

State numbers are global: the engine indexes one timeout list and one
IS_ACTIVE tuple (tcpstate.py) by state, so the SCTP states follow the TCP
states and UDP's (BASE = 12 .. 25).

For the packet path the parser (packet.py) puts a *code* in the parse
result's flags field instead of TCP flags: INIT is 2 (the bit of TCP's SYN,
so the engine's "new connection" tests read an INIT as a SYN), every other
event ``e`` is ``e << 2`` (never bit 1, never bit 0).  ``NEXT[direction]`` is
a tuple indexed by ``code << 4 | state``; codes are even and states are
below 32, so no two cells share an index.  Index ``code << 4 | 0`` (TCP's
NONE, the engine's "new entry" row) holds the transition from SCTP NONE.
"""

from .packet import SCTP_CODE_OF_CHUNK, sctp_code

# ---------------------------------------------------------------- states
BASE = 12            # == tcpstate.N_STATES + 1 (after the TCP states and UDP)
_LOCAL_NAMES = ("NONE", "INIT1", "INIT", "COOKIE_SENT", "COOKIE_REPLIED", "COOKIE_WAIT",
                "COOKIE", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
                "SHUTDOWN_RECEIVED", "SHUTDOWN_ACK_SENT", "REJECTED", "CLOSED")
N = len(_LOCAL_NAMES)
(S_NONE, S_INIT1, S_INIT, S_COOKIE_SENT, S_COOKIE_REPLIED, S_COOKIE_WAIT, S_COOKIE,
 S_COOKIE_ECHOED, S_ESTABLISHED, S_SHUTDOWN_SENT, S_SHUTDOWN_RECEIVED,
 S_SHUTDOWN_ACK_SENT, S_REJECTED, S_CLOSED) = range(BASE, BASE + N)
#: the names /proc/net/ip_vs_conn (and so ``ipvsadm -L -c``) prints
PROC_NAMES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
              "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT",
              "REJECTED", "CLOSED")
#: state number -> its long name (tests, docs)
STATE_NAMES = dict(zip(range(BASE, BASE + N), _LOCAL_NAMES, strict=True))

# ---------------------------------------------------------------- events
(EV_DATA, EV_INIT, EV_INIT_ACK, EV_COOKIE_ECHO, EV_COOKIE_ACK, EV_SHUTDOWN,
 EV_SHUTDOWN_ACK, EV_SHUTDOWN_COMPLETE, EV_ERROR, EV_ABORT) = range(10)
EVENT_NAMES = ("data", "init", "init_ack", "cookie_echo", "cookie_ack", "shutdown",
               "shutdown_ack", "shutdown_complete", "error", "abort")

# chunk types (RFC 9260 §3.2)
CID_DATA = 0
CID_INIT = 1
CID_INIT_ACK = 2
CID_SACK = 3
CID_HEARTBEAT = 4
CID_HEARTBEAT_ACK = 5
CID_ABORT = 6
CID_SHUTDOWN = 7
CID_SHUTDOWN_ACK = 8
CID_ERROR = 9
CID_COOKIE_ECHO = 10
CID_COOKIE_ACK = 11
CID_SHUTDOWN_COMPLETE = 14

_EVENT_OF_CHUNK = {CID_INIT: EV_INIT, CID_INIT_ACK: EV_INIT_ACK, CID_ABORT: EV_ABORT,
                   CID_SHUTDOWN: EV_SHUTDOWN, CID_SHUTDOWN_ACK: EV_SHUTDOWN_ACK,
                   CID_ERROR: EV_ERROR, CID_COOKIE_ECHO: EV_COOKIE_ECHO,
                   CID_COOKIE_ACK: EV_COOKIE_ACK,
                   CID_SHUTDOWN_COMPLETE: EV_SHUTDOWN_COMPLETE}


code_of_event = sctp_code      # the parse result's flags value of an event

#: chunk type (0..255) -> flags code; unknown types are DATA (the parser's
#: table, packet.py, checked against the names here)
CODE_OF_CHUNK = SCTP_CODE_OF_CHUNK
assert CODE_OF_CHUNK == bytes(code_of_event(_EVENT_OF_CHUNK.get(t, EV_DATA)) for t in range(256))
CODE_INIT = code_of_event(EV_INIT)
CODE_ABORT = code_of_event(EV_ABORT)
EVENT_OF_CODE = {code_of_event(e): e for e in range(10)}

# ---------------------------------------------------------------- the table
INPUT = 0
OUTPUT = 1
INPUT_ONLY = 2
DIRECTION_NAMES = ("IN", "OUT", "IN-ONLY")

_ABBREV = {"NO": S_NONE, "I1": S_INIT1, "IN": S_INIT, "CS": S_COOKIE_SENT,
           "CR": S_COOKIE_REPLIED, "CW": S_COOKIE_WAIT, "CO": S_COOKIE,
           "CE": S_COOKIE_ECHOED, "ES": S_ESTABLISHED, "SS": S_SHUTDOWN_SENT,
           "SR": S_SHUTDOWN_RECEIVED, "SA": S_SHUTDOWN_ACK_SENT, "RJ": S_REJECTED,
           "CL": S_CLOSED}
_EV_ABBREV = {"d": EV_DATA, "i": EV_INIT, "i_a": EV_INIT_ACK, "c_e": EV_COOKIE_ECHO,
              "c_a": EV_COOKIE_ACK, "s": EV_SHUTDOWN, "s_a": EV_SHUTDOWN_ACK,
              "s_c": EV_SHUTDOWN_COMPLETE, "err": EV_ERROR, "ab": EV_ABORT}

# rows: direction and event; columns: the current state
_TABLE_TEXT = """
               NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL
IN d           ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL
IN i           I1 IN IN CS CR CW CO CE ES SS SR SA IN IN
IN i_a         CW CW CW CS CR CO CO CE ES SS SR SA RJ CL
IN c_e         CR IN IN CR CR CW CO CE ES SS SR SA RJ CL
IN c_a         ES I1 IN CS CR CW CO ES ES SS SR SA RJ CL
IN s           SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL
IN s_a         CL IN IN CS CR CW CO CE ES CL SR CL RJ CL
IN s_c         CL CL CL CS CR CW CO CE ES SS SR CL RJ CL
IN err         CL I1 IN CS CR CW CO CL ES SS SR SA RJ CL
IN ab          CL CL CL CL CL RJ CL CL CL CL CL CL CL CL
OUT d          ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL
OUT i          CW CW CW CW CW CW CW CW ES CW CW CW CW CW
OUT i_a        CS CS CS CS CR CW CO CE ES SS SR SA RJ CL
OUT c_e        CE CE CE CE CE CE CE CE ES SS SR SA RJ CL
OUT c_a        ES ES ES ES ES ES ES ES ES SS SR SA RJ CL
OUT s          SS SS SS SS SS SS SS SS SS SS SR SA RJ CL
OUT s_a        SA SA SA SA SA CW CO CE ES SA SA SA RJ CL
OUT s_c        CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL
OUT err        CL CL CL CL CL CW CO CE ES SS SR SA RJ CL
OUT ab         CL RJ CL CL CL CL CL CL CL CL CL CL CL CL
IN-ONLY d      ES I1 IN CS CR ES CO CE ES SS SR SA RJ CL
IN-ONLY i      I1 IN IN IN IN IN CO CE ES SS SR SA IN IN
IN-ONLY i_a    CE CE CE CE CE CE CO CE ES SS SR SA RJ CL
IN-ONLY c_e    ES ES ES ES ES ES CO CE ES SS SR SA RJ CL
IN-ONLY c_a    ES I1 IN ES ES CW ES ES ES SS SR SA RJ CL
IN-ONLY s      SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL
IN-ONLY s_a    CL IN IN CS CR CW CO CE CL CL SR CL RJ CL
IN-ONLY s_c    CL CL CL CL CL CW CO CE ES SS CL CL RJ CL
IN-ONLY err    CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL
IN-ONLY ab     CL CL CL CL CL RJ CL CL CL CL CL CL CL CL
"""


def _parse_table(text):
    lines = [ln.split() for ln in text.strip().splitlines()]
    assert [_ABBREV[c] for c in lines[0]] == list(range(BASE, BASE + N))
    table = [[None] * 10 for _ in range(3)]
    for row in lines[1:]:
        cells = tuple(_ABBREV[c] for c in row[2:])
        assert len(cells) == N
        table[DIRECTION_NAMES.index(row[0])][_EV_ABBREV[row[1]]] = cells
    assert all(c is not None for d in table for c in d)
    return tuple(tuple(d) for d in table)


#: TABLE[direction][event][state - BASE] -> next state
TABLE = _parse_table(_TABLE_TEXT)


def next_state(direction, event, state):
    return TABLE[direction][event][state - BASE]


def _flatten(direction):
    size = (max(EVENT_OF_CODE) << 4) + 32
    out = [S_CLOSED] * size
    for code, ev in EVENT_OF_CODE.items():
        row = TABLE[direction][ev]
        for s in range(N):
            out[code << 4 | (BASE + s)] = row[s]
        out[code << 4] = row[0]          # a new entry: from NONE
    return tuple(out)


#: NEXT[direction][code << 4 | state] -> next state
NEXT = tuple(_flatten(d) for d in (INPUT, OUTPUT, INPUT_ONLY))

# ---------------------------------------------------------------- timeouts
MAX_RTO = 61         # the kernel's (60 + 1) s
#: default timeout (seconds) per SCTP state, in state order
TIMEOUTS = (2, 4, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, 15 * 60,
            MAX_RTO, MAX_RTO, MAX_RTO, 4, MAX_RTO)
#: 1 for an active state (ESTABLISHED), else 0, in state order
ACTIVE = tuple(1 if BASE + s == S_ESTABLISHED else 0 for s in range(N))


def proc_name(state):
    """The name ``ipvsadm -L -c`` shows for an SCTP state."""
    s = state - BASE
    return PROC_NAMES[s] if 0 <= s < N else "ERR!"
