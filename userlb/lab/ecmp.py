"""Active-active directors behind ECMP: consistency, failover, demo.

Runs against a lab with K >= 2 directors (`Lab(directors=K)`, see
userlb.lab): a router spreads the flows over the directors with a kernel
multipath route (hash of the 5-tuple), the replies come back through the
router and are spread the same way, so a director sees packets of flows whose SYN it never
saw.  No state is shared between directors; what makes it work is that every
director computes the same answer from the same configuration:

* `consistency(lab, port, ...)`: the same flows (client address and port)
  are sent to each director in turn (pinned with a DSCP the router maps to
  one director); the real servers say who answered and what client
  address/port they saw.  Every director must pick the same real server.
* `Streams` / `failover(...)`: long-lived TCP echo connections stream data
  that is checked byte for byte while directors are killed one after the
  other; `carriers()` tells which director held each connection's entry.
* `demo(...)` / `demo_main(...)`: `userlb lab demo --directors K` and the
  failover part of `make demo`.
"""
import sys
import time

from .base import ECHO, EXTRA_ECHO, VIP4, VIP6, LabError, short
from .core import Lab
from .rules import VIPS, rips, sched_opts, service_lines
from .sessions import Streams

# the consistency services: VIP port == real-server port (each its own port,
# so that replies without an entry are unambiguous), one scheduler variant each
SERVICES = (
    (EXTRA_ECHO[0], "mh", ""),
    (EXTRA_ECHO[1], "mh", "mh-port"),
    (EXTRA_ECHO[2], "sh", ""),
    (EXTRA_ECHO[3], "sh", "sh-port"),
    (EXTRA_ECHO[4], "mhs", ""),
    (EXTRA_ECHO[5], "mhs", "mh-port"),
)
PORT_OF = {(sched, flags): port for port, sched, flags in SERVICES}


def service_rules(servers, weights=None, services=SERVICES):
    """ipvsadm -R lines for `services` on both VIPs; servers: [(ns, a4, a6)]."""
    lines = []
    for vip, v6 in VIPS:
        for port, sched, flags in services:
            lines += service_lines("-t", vip, port, sched_opts(sched, flags), rips(servers, v6),
                                   weights)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- consistency

def flow_set(lab, count, base_port=10000):
    """count flows per family: (source, port) pairs, round robin over the
    client addresses, ports base_port.. (below the ephemeral range)."""
    out = {}
    for fam, srcs in (("v4", lab.clients4), ("v6", lab.clients6)):
        out[fam] = [[srcs[i % len(srcs)], base_port + i] for i in range(count)]
    return out


def consistency(lab, port, count=500, base_port=10000, directors=None, timeout=120):
    """The same `count` IPv4 and `count` IPv6 flows to VIP:port through
    each director in turn.  -> {"flows": {fam: [[src, sport], ...]},
    "answers": {k: {fam: [answer, ...]}}, "differ": [...], "errors": [...],
    "masq": [...] (flows whose server saw another address/port)}."""
    flows = flow_set(lab, count, base_port)
    directors = directors or list(lab.alive)
    answers = {}
    for k in directors:
        answers[k] = {}
        for fam, vip in (("v4", VIP4), ("v6", VIP6)):
            answers[k][fam] = lab.client_py("pinned", timeout=timeout, vip=vip, port=port,
                                            flows=flows[fam], tos=4 * k)
    differ, errors, masq = [], [], []
    for fam in ("v4", "v6"):
        for i, (src, sport) in enumerate(flows[fam]):
            got = {k: answers[k][fam][i] for k in directors}
            bad = {k: a for k, a in got.items() if isinstance(a, dict)}
            if bad:
                errors.append((fam, src, sport, bad))
                continue
            if len({a[0] for a in got.values()}) != 1:
                differ.append((fam, src, sport, {k: a[0] for k, a in got.items()}))
            for k, a in got.items():
                if (a[1], a[2]) != (src, sport):
                    masq.append((fam, src, sport, k, a[1], a[2]))
    return {"flows": flows, "answers": answers, "differ": differ, "errors": errors,
            "masq": masq}


# ------------------------------------------------------------------ failover

def _endpoint(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def carriers(lab, flows, directors=None):
    """For each flow record (client, cport): the directors holding a live
    connection entry for it (from `-L -n -c` on each director)."""
    want = {(f["client"], f["cport"]): i for i, f in enumerate(flows)}
    out = [set() for _ in flows]
    for k in directors or lab.running_directors():
        resp = lab.control_request({"argv": ["-L", "-n", "-c"]}, k=k)
        for line in (resp.get("output") or "").splitlines():
            w = line.split()
            if len(w) >= 6 and w[0] in ("TCP", "UDP"):
                i = want.get(_endpoint(w[3]))
                if i is not None:
                    out[i].add(k)
    return out


def failover(lab, vip_ports, kill, count=50, before=1.0, between=1.0, after=1.0,
             during=None, chunk=1024, interval=0.05, timeout=20.0):
    """Stream on `count` connections, kill the directors in `kill` one after
    another (`between` seconds apart), finish.  `during(lab)` (optional) runs
    after `before` seconds, before the first kill.
    -> {"flows", "carriers" (before the kills), "final" (per-connection
    reports), "alive" (directors left), "timeline"}."""
    timeline = []
    with Streams(lab, vip_ports, count=count, chunk=chunk, interval=interval,
                 timeout=timeout) as st:
        time.sleep(before)
        carried = carriers(lab, st.flows)
        timeline.append(("start", _alive_count(st.report())))
        if during is not None:
            during(lab)
            time.sleep(between)
            timeline.append(("change", _alive_count(st.report())))
        for k in kill:
            lab.kill_director(k)
            time.sleep(between)
            timeline.append((f"kill {k}", _alive_count(st.report())))
        time.sleep(after)
        final = st.finish()
    return {"flows": st.flows, "carriers": carried, "final": final,
            "alive": list(lab.alive), "timeline": timeline}


def _alive_count(report):
    return sum(1 for r in report if r["error"] is None)


# ---------------------------------------------------------------------- demo

def demo(lab, connections=30, out=sys.stdout, seconds=1.5):
    """Failover, live: `connections` long-lived TCP echo connections with
    sloppy TCP on every director, then every director but the last is killed
    one after another; the connections are counted before and after.
    Returns True when none was lost and every byte came back intact."""
    p = lambda *a: print(*a, file=out, flush=True)   # noqa: E731
    if len(lab.alive) < 2:
        raise LabError("the failover demo needs at least 2 directors in the routes")
    res = lab.adm_all("--sloppy-tcp", "on")
    if any(r.returncode for r in res.values()):
        raise LabError("cannot switch sloppy TCP on: " +
                       "; ".join(r.stderr.strip() for r in res.values() if r.returncode))
    kill = list(lab.alive[:-1])
    names = ", ".join(short(lab.director_ns[k - 1]) for k in lab.alive)
    p(f"failover demo: {len(lab.alive)} directors ({names}) "
      f"behind an ECMP router, sloppy TCP on, scheduler mh")
    p(f"{connections} long-lived TCP connections stream checked data to {VIP4}:{ECHO} and "
      f"[{VIP6}]:{ECHO}; killing directors {', '.join(map(str, kill))} one after another")
    p("  (the directors share no state: mh picks the same real server on each of them, "
      "and with sloppy TCP")
    p("  a director that gets a mid-stream packet of a connection it never saw creates "
      "its entry,")
    p("  so a killed director's connections go on through the others)")
    r = failover(lab, [[VIP4, ECHO], [VIP6, ECHO]], kill, count=connections,
                 before=seconds, between=seconds, after=seconds)
    per = {}
    for c in r["carriers"]:
        for k in c:
            per[k] = per.get(k, 0) + 1
    moved = sum(1 for c in r["carriers"] if not c & set(r["alive"]))
    p("  connection entries per director before: " +
      ", ".join(f"d{k}: {per.get(k, 0)}" for k in sorted(set(kill) | set(r["alive"]))) +
      f"; {moved} connections lived on the directors that get killed")
    for what, n in r["timeline"]:
        p(f"  {what:<8} connections alive: {n}/{connections}")
    final = r["final"]
    intact = sum(1 for f in final if f["intact"] and f["done"])
    lost = [f for f in final if not (f["intact"] and f["done"])]
    nbytes = sum(f["bytes"] for f in final)
    left = r["alive"]
    p(f"  after: {intact}/{connections} connections completed with their data intact "
      f"({nbytes} bytes echoed and compared), lost: {len(lost)}; "
      f"{len(left)} of {len(lab.director_ns)} director{'s' if len(lab.director_ns) > 1 else ''}"
      f" still in the routes: {', '.join(short(lab.director_ns[k - 1]) for k in left) or 'none'}")
    for f in lost[:5]:
        p(f"    LOST {f['client']}:{f['cport']} -> {f['server']}: {f['error']}")
    return not lost


def demo_main(k, suffix=None, connections=30, out=sys.stdout, temp=False, removed=None):
    """`userlb lab demo --directors K`: on the current lab (or --lab) if it has
    K directors, all of them running; else (or with temp=True) on a temporary
    lab.  The killed directors are started again afterwards when the lab is
    kept.  Ctrl-C (KeyboardInterrupt) is passed on after the clean-up, which
    it does not interrupt; then the temporary lab's tag is appended to
    `removed` (a list) instead of printing "lab ... removed"."""
    from .demo import sigint_ignored
    lab = None
    try:
        cur = None if temp else Lab.load(suffix)
        if cur is not None and cur.n_directors == k and len(cur.running_directors()) == k:
            lab = cur
    except LabError:
        if suffix:
            raise
    temp = lab is None
    interrupted = False
    try:
        if temp:
            print(f"setting up a lab with {k} directors ...", file=out, flush=True)
            lab = Lab(n_servers=3, n_clients=8, directors=k, current=False)
            lab.up()
        ok = demo(lab, connections=connections, out=out)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        with sigint_ignored():
            if temp and lab is not None:
                lab.down()
                if interrupted and removed is not None:
                    removed.append(lab.tag)
                else:
                    print(f"lab {lab.tag} removed", file=out, flush=True)
            elif lab is not None:
                for d in range(1, k + 1):
                    if d not in lab.running_directors():
                        lab.revive_director(d)
                if not lab.sloppy:
                    lab.adm_all("--sloppy-tcp", "off")
    return 0 if ok else 1
