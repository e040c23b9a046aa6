"""IPVS's defense strategies against floods (docs/ipvs.md §11): ``drop_entry``,
``drop_packet`` and ``secure_tcp``, each with modes 0-3, driven by the entry
budget.

The kernel decides once a second whether memory is short: ``availmem`` (free
pages) below ``amemthresh`` (pages).  userlb has no memory pressure of its
own to read -- its table is bounded by ``max_entries`` -- so the same rule is
applied to entries:

    availmem   = max_entries - entries      (free entry slots)
    amemthresh = a number of entries        (default AMEMTHRESH)
    short      = availmem < amemthresh

Modes (the same for the three strategies):

* 0: never (the default);
* 1: automatic, off now: switches itself to 2 when the budget is short;
* 2: automatic, on now: switches itself back to 1 when the budget is fine;
* 3: always on.

What "on" means:

* ``drop_entry``: every second (``tick``) a share of the table (1/DROP_SHARE
  of the entries, DROP_MIN..DROP_MAX, in random buckets of the timing
  wheel) is examined and half-open TCP entries (SYN_RECV, SYNACK) are dropped; ESTABLISHED TCP and
  other entries that saw no packet for IDLE_DROP seconds are dropped one in
  two.  (The kernel rates the idle ones by their packet count, 1 in N for an
  entry with N packets, N <= 8; userlb does not count packets per entry.)
* ``drop_packet``: a share of the packets that would create a new entry is
  dropped (reason ``defense_drop``): 1 in ``amemthresh / (amemthresh -
  availmem)`` in the automatic modes, 1 in ``am_droprate`` in mode 3.
* ``secure_tcp``: the TCP state table becomes the kernel's "secure" one
  (tcpstate.SECURE), where a client's ACK alone does not move a half-open
  entry to ESTABLISHED: the real server's SYN-ACK must be seen first.  The
  tables are process-wide (one engine per `userlb run`).
"""
import random

from .sctpstate import S_ESTABLISHED, S_INIT, S_INIT1
from .tcpstate import ESTABLISHED, SYN_RECV, SYNACK

STRATEGIES = ("drop_entry", "drop_packet", "secure_tcp")
#: kernel default of amemthresh is 1024 (pages); here entries
AMEMTHRESH = 1024
#: kernel default of am_droprate
AM_DROPRATE = 10
#: drop_entry examines count // DROP_SHARE entries a second, at least DROP_MIN
#: and at most DROP_MAX (a pass runs on the packet thread: ~0.3 us an entry)
DROP_SHARE = 8
DROP_MIN = 256
DROP_MAX = 32768
#: drop_entry: an established / UDP entry idle this long may be dropped
IDLE_DROP = 60
R_DEFENSE_DROP = "defense_drop"


class Defense:
    """The defense state of one engine: modes, thresholds, counters.

    The engine calls `tick(now)` every second (from ``expire``) and asks
    `todrop()` before creating an entry while ``drop_rate`` is non-zero."""

    def __init__(self, ct, set_secure=None):
        self.ct = ct
        self._set_secure = set_secure
        self.modes = {s: 0 for s in STRATEGIES}
        self.amemthresh = AMEMTHRESH
        self.am_droprate = AM_DROPRATE
        self.drop_rate = 0          # 0: no packet drop; N: 1 in N new connections
        self.drop_counter = 0
        self.dropentry = False      # drop_entry active this second
        self.secure = False         # the secure TCP table is in force
        self.dropped_entries = 0
        self.dropped_packets = 0
        self._idle_counter = 0
        self._rng = random.Random(0x1B5)

    # ------------------------------------------------------------ control
    def set_mode(self, name, mode):
        if name not in self.modes:
            raise ValueError(f"unknown defense {name!r} (known: {', '.join(STRATEGIES)})")
        if type(mode) is not int or not 0 <= mode <= 3:
            raise ValueError(f"{name}: mode must be 0, 1, 2 or 3")
        self.modes[name] = mode
        self.update()

    def set_amemthresh(self, n):
        if type(n) is not int or n < 1:
            raise ValueError("amemthresh must be a positive integer (entries)")
        self.amemthresh = n
        self.update()

    def availmem(self):
        return self.ct.max_entries - self.ct.count

    def short(self):
        return self.availmem() < self.amemthresh

    # ------------------------------------------------------------ periodic
    def update(self):
        """The kernel's update_defense_level, on entries."""
        short = self.short()
        m = self.modes
        # drop_entry
        de = m["drop_entry"]
        if de == 0:
            self.dropentry = False
        elif de == 1:
            self.dropentry = short
            if short:
                m["drop_entry"] = 2
        elif de == 2:
            self.dropentry = short
            if not short:
                m["drop_entry"] = 1
        else:
            self.dropentry = True
        # drop_packet
        dp = m["drop_packet"]
        if dp == 0:
            self.drop_rate = 0
        elif dp in (1, 2):
            if short:
                rate = self.amemthresh // max(1, self.amemthresh - max(0, self.availmem()))
                self.drop_rate = self.drop_counter = max(1, rate)
                m["drop_packet"] = 2
            else:
                self.drop_rate = 0
                m["drop_packet"] = 1
        else:
            self.drop_rate = self.am_droprate
        # secure_tcp
        st = m["secure_tcp"]
        if st == 0:
            want = False
        elif st in (1, 2):
            want = short
            m["secure_tcp"] = 2 if short else 1
        else:
            want = True
        if want != self.secure:
            self.secure = want
            if self._set_secure is not None:
                self._set_secure(want)

    def tick(self, now):
        """Every second: the defense level, then drop_entry's pass."""
        self.update()
        if self.dropentry:
            return self.drop_entries(now)
        return 0

    # ------------------------------------------------------------ the strategies
    def todrop(self):
        """drop_packet: True for one in `drop_rate` calls."""
        self.drop_counter -= 1
        if self.drop_counter > 0:
            return False
        self.drop_counter = self.drop_rate
        self.dropped_packets += 1
        return True

    def drop_entries(self, now):
        """drop_entry's pass: examine a share of the table in random wheel
        buckets, drop half-open TCP entries and (one in two) long-idle
        others.  Returns the number dropped."""
        ct = self.ct
        wheel = ct._wheel
        if not wheel:
            return 0
        budget = min(DROP_MAX, max(DROP_MIN, ct.count // DROP_SHARE))
        keys = list(wheel)
        self._rng.shuffle(keys)
        n = 0
        for k in keys:
            lst = wheel.get(k)
            if not lst:
                continue
            for e in lst:
                if budget <= 0:
                    break
                if e.bucket is not lst or e.okey is None:
                    continue              # stale copy, dead, or a template
                budget -= 1
                st = e.state
                if e.xl.proto == 6 and (st == SYN_RECV or st == SYNACK):
                    pass
                elif st == S_INIT1 or st == S_INIT:           # SCTP's half-open states
                    pass
                elif ((e.xl.proto == 6 and st != ESTABLISHED)
                      or (e.xl.proto == 132 and st != S_ESTABLISHED) or now - e.last < IDLE_DROP):
                    continue
                else:
                    self._idle_counter ^= 1
                    if self._idle_counter:
                        continue
                ct.unlink(e)
                n += 1
            if budget <= 0:
                break
        self.dropped_entries += n
        return n

    def settings(self):
        """(name, value) pairs for `--show-settings`."""
        return [("amemthresh", self.amemthresh), ("am_droprate", self.am_droprate)] + \
            [(s, self.modes[s]) for s in STRATEGIES] + \
            [("defense_dropped_entries", self.dropped_entries),
             ("defense_dropped_packets", self.dropped_packets)]
