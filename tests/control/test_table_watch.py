"""The full-table log line (control/table_watch.py) with a real engine that
really refuses connections over its entry limit."""
from helpers.engine import CIP, RIP1, VIP, engine_with, make_service, run, tcp4
from userlb.control.table_watch import TableWatch
from userlb.model import IPPROTO_TCP


def test_logs_refusals_at_most_once_per_interval():
    eng = engine_with(make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)]), max_entries=3)
    logged = []
    watch = TableWatch(eng, logged.append, interval=10.0)
    port = iter(range(40000, 41000))

    def syns(n, now):
        for _ in range(n):
            run(eng, tcp4(CIP, next(port), VIP, 80, "S"), now=now)

    syns(3, 0.0)
    assert watch.check(0.0) is None and logged == []          # full, nothing refused yet
    syns(5, 1.0)
    line = watch.check(1.0)
    assert line is not None and logged == [line]
    assert "5 new connection(s) refused" in line and "max_entries 3" in line
    syns(2, 2.0)
    assert watch.check(2.0) is None                             # within the interval
    assert watch.check(11.0) is not None and "2 new connection(s) refused in the last 10 s" \
        in logged[-1]
    assert watch.check(30.0) is None and len(logged) == 2       # no new refusals: quiet
