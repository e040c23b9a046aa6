"""The mhs experiment (the mhs patch's README reports the same kind of
numbers): connection entries and CPU time of each director, `mh` against
`mhs`, while some real servers flap.

    python -m userlb.lab.experiment [--servers 20] [--directors 2] [--rate 100]
        [--seconds 20] [--flap 0,1,10] [--period 2] [--out docs/mhs-experiment]
    userlb lab experiment ...          (the same)

What it does (root; a private namespace lab that is removed at the end):

* a lab with `--directors` directors behind the ECMP router and `--servers`
  real servers; one service, TCP VIP:80 (`-b mh-port`), every real server
  with weight 1 -- scheduler `mh` in one half of the runs, `mhs` in the other;
* for each scheduler and each flapping share F in `--flap` (percent of the
  real servers, rounded up to whole servers: with 20 servers 1% is 1 server
  (5%), 10% is 2 servers): the directors are restarted (no entries, CPU
  counters from zero), then for `--seconds` seconds the client opens new
  short HTTP/1.0 connections at `--rate` per second (round robin over 16
  client addresses, kernel-chosen ports) while each flapping server is
  removed (`-d`) and re-added (`-a`) on every director over its control
  socket: out for half of `--period`, in for the other half, the flapping
  servers staggered evenly over the period, the first removal 1 s into the
  run;
* every second each director's `conn_entries` (`userlb adm --show-settings`)
  is sampled; its CPU seconds (utime + stime from /proc/PID/stat) are read at
  the start and the end of the run;
* the table goes to OUT.md, the plot to OUT.png (matplotlib; without it the
  table only), the raw samples to OUT.json.

Entries live as long as IPVS keeps them (TCP TIME_WAIT 120 s by default), so
`mh` accumulates one entry per connection over the whole run; `mhs` holds
entries only for connections that started while their slot was unstable.
"""
import argparse
import json
import math
import os
import pathlib
import sys
import time

from .base import HTTP, VIP4, LabError, short
from .core import Lab
from .rules import service_lines
from .sessions import client_argv

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime, stime


def rules(servers, sched):
    lines = service_lines("-t", VIP4, HTTP, f"-s {sched} -b mh-port",
                          [a4 for _ns, a4, _a6 in servers])
    return "\n".join(lines) + "\n"


def n_flapping(pct, n):
    return 0 if pct <= 0 else max(1, math.ceil(pct * n / 100 - 1e-9))


def flap_schedule(flapping, seconds, period, start=1.0):
    """[(t, 'del'|'add', server)] sorted by time."""
    ev = []
    n = len(flapping)
    for j, srv in enumerate(flapping):
        t = start + j * period / n
        while t < seconds:
            ev.append((t, "del", srv))
            if t + period / 2 < seconds:
                ev.append((t + period / 2, "add", srv))
            t += period
    ev.sort(key=lambda e: e[0])
    return ev


def entries_of(lab, k):
    resp = lab.control_request({"settings": {}}, k=k)
    for line in (resp.get("output") or "").splitlines():
        if line.startswith("conn_entries"):
            return int(line.split("=")[1])
    raise LabError(f"director {k}: no conn_entries in --show-settings")


def run_one(lab, sched, pct, args, log=print):
    servers = lab.servers
    lab.write_rules(rules(servers, sched))
    lab.restart_director()
    ks = list(range(1, lab.n_directors + 1))
    pids = {k: lab.director_pid(k) for k in ks}
    flapping = servers[len(servers) - n_flapping(pct, len(servers)):] if pct else []
    events = flap_schedule(flapping, args.seconds, args.period)
    cpu0 = {k: cpu_seconds(pids[k]) for k in ks}
    kw = dict(vip=VIP4, port=HTTP, sources=lab.clients4, rate=args.rate, seconds=args.seconds,
              timeout=3.0)
    load = lab.start("load", lab.client, client_argv("rate", kw))
    t0 = time.monotonic()
    samples = []               # (t, {k: entries})
    next_sample = 0.0
    ei = 0
    flaps = 0
    while True:
        t = time.monotonic() - t0
        while ei < len(events) and events[ei][0] <= t:
            _te, what, (_ns, a4, _a6) = events[ei]
            argv = (["-d", "-t", f"{VIP4}:{HTTP}", "-r", f"{a4}:{HTTP}"] if what == "del" else
                    ["-a", "-t", f"{VIP4}:{HTTP}", "-r", f"{a4}:{HTTP}", "-m", "-w", "1"])
            for k in ks:
                resp = lab.control_request({"argv": argv}, k=k)
                if not resp.get("ok"):
                    raise LabError(f"director {k}: {' '.join(argv)}: {resp.get('error')}")
            flaps += what == "del"
            ei += 1
        if t >= next_sample:
            samples.append((round(t, 2), {k: entries_of(lab, k) for k in ks}))
            next_sample += 1.0
        if t >= args.seconds and load.poll() is not None:
            break
        if t > args.seconds + 30:
            raise LabError("the load generator did not finish")
        time.sleep(0.05)
    cpu = {k: cpu_seconds(pids[k]) - cpu0[k] for k in ks}
    samples.append((round(time.monotonic() - t0, 2), {k: entries_of(lab, k) for k in ks}))
    lab.pids.pop("load", None)
    with open(lab.dir / "load.log") as f:
        res = json.loads(f.read().strip().splitlines()[-1])
    # samples while the load ran (t <= seconds)
    inrun = [s for s in samples if s[0] <= args.seconds + 0.5]
    row = {"sched": sched, "flap_pct": pct, "flapping": [short(s[0]) for s in flapping],
           "removals": flaps, "connections": res["started"], "ok": res["ok"],
           "failed": res["failed"], "errors": res["errors"], "cpu": cpu,
           "entries_mean": {k: sum(s[1][k] for s in inrun) / len(inrun) for k in ks},
           "entries_max": {k: max(s[1][k] for s in inrun) for k in ks},
           "entries_end": {k: samples[-1][1][k] for k in ks},
           "samples": samples}
    log(f"  {sched:<4} flap {pct:>3}% ({len(flapping)} of {len(servers)} servers, "
        f"{flaps} removals): {res['ok']}/{res['started']} connections ok; " +
        "; ".join(f"d{k}: entries mean {row['entries_mean'][k]:.0f} max {row['entries_max'][k]}, "
                  f"cpu {cpu[k]:.2f} s" for k in ks))
    return row


def table(rows, args, ks):
    hdr = ["scheduler", "flapping", "connections (ok/all)"]
    for k in ks:
        hdr += [f"d{k} entries mean", f"d{k} entries max", f"d{k} CPU s"]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        fl = f"{r['flap_pct']}% ({len(r['flapping'])} of {args.servers})" if r["flap_pct"] else "0%"
        cells = [r["sched"], fl, f"{r['ok']}/{r['connections']}"]
        for k in ks:
            cells += [f"{r['entries_mean'][k]:.0f}", str(r["entries_max"][k]), f"{r['cpu'][k]:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ratios(rows, ks):
    by = {(r["sched"], r["flap_pct"]): r for r in rows}
    out = []
    for pct in sorted({r["flap_pct"] for r in rows}):
        a, b = by.get(("mh", pct)), by.get(("mhs", pct))
        if not a or not b:
            continue
        parts = []
        for k in ks:
            m = a["entries_mean"][k]
            parts.append(f"d{k} {b['entries_mean'][k] / m:.3f}" if m else f"d{k} n/a")
        cm = sum(a["cpu"].values())
        cpu = f"{sum(b['cpu'].values()) / cm:.2f}" if cm else "n/a"
        out.append(f"| {pct}% | {', '.join(parts)} | {cpu} |")
    return "| flapping | mhs/mh mean entries | mhs/mh CPU (all directors) |\n|---|---|---|\n" + \
        "\n".join(out)


def plot(rows, path, ks):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = {0: "tab:green", 1: "tab:orange", 10: "tab:red"}
    for r in rows:
        c = colors.get(r["flap_pct"], None)
        ls = "-" if r["sched"] == "mhs" else "--"
        t = [s[0] for s in r["samples"]]
        y = [sum(s[1].values()) for s in r["samples"]]
        a1.plot(t, y, ls, color=c, label=f"{r['sched']} {r['flap_pct']}%")
    a1.set_xlabel("seconds")
    a1.set_ylabel(f"connection entries (sum of {len(ks)} directors)")
    a1.set_yscale("symlog", linthresh=10)
    a1.set_title("entries over time (dashed: mh, solid: mhs)")
    a1.legend(fontsize=8)
    pcts = sorted({r["flap_pct"] for r in rows})
    by = {(r["sched"], r["flap_pct"]): r for r in rows}
    w = 0.8 / (2 * len(ks))
    for si, sched in enumerate(("mh", "mhs")):
        for ki, k in enumerate(ks):
            off = (si * len(ks) + ki) * w - 0.4 + w / 2
            xs = [i + off for i in range(len(pcts))]
            ys_e = [by[(sched, p)]["entries_mean"][k] if (sched, p) in by else 0 for p in pcts]
            ys_c = [by[(sched, p)]["cpu"][k] if (sched, p) in by else 0 for p in pcts]
            col = "tab:blue" if sched == "mh" else "tab:purple"
            a2.bar(xs, ys_e, w, color=col, alpha=1 - 0.35 * ki, label=f"{sched} d{k}")
            a3.bar(xs, ys_c, w, color=col, alpha=1 - 0.35 * ki, label=f"{sched} d{k}")
    for ax, title, yl in ((a2, "mean connection entries per director", "entries"),
                          (a3, "CPU seconds per director during the run", "CPU s")):
        ax.set_xticks(range(len(pcts)))
        ax.set_xticklabels([f"{p}% flapping" for p in pcts])
        ax.set_title(title)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_doc(rows, args, ks, png_ok, cmd, elapsed):
    out = pathlib.Path(args.out)
    md = out.with_suffix(".md")
    by = {(r["sched"], r["flap_pct"]): r for r in rows}
    checks = []
    if ("mhs", 0) in by:
        mx = max(by[("mhs", 0)]["entries_max"].values())
        checks.append(f"* steady state (no flapping): an mhs director holds at most **{mx}** "
                      f"entries (done-when: 0) -- {'met' if mx == 0 else 'NOT met'}.")
    top = max(r["flap_pct"] for r in rows)
    if ("mh", top) in by and ("mhs", top) in by and top:
        mhs, mh = by[("mhs", top)]["entries_mean"], by[("mh", top)]["entries_mean"]
        worst = max(mhs[k] / max(mh[k], 1e-9) for k in ks)
        checks.append(f"* {top}% flapping: mhs holds at most **{worst:.3f}** of mh's mean entries "
                      f"per director (done-when: below 0.2) -- "
                      f"{'met' if worst < 0.2 else 'NOT met'}.")
    failed = {(r["sched"], r["flap_pct"]): r["failed"] for r in rows}
    failed_text = ("none in any run." if not any(failed.values()) else
                   "; ".join(f"{k[0]} {k[1]}%: {v}" for k, v in failed.items()) + ".")
    text = f"""# The mhs experiment: connection entries and CPU, mh against mhs

Generated by `{cmd}` (run as root; {elapsed:.0f} s on the machine that made
it).  The code and the exact method are in `userlb/lab/experiment.py`; the raw
samples are in `{out.name}.json`.

## Setup

* {args.directors} directors (`userlb run`, identical rules) behind a router
  namespace with L4-hashed multipath routes (`userlb lab up --directors
  {args.directors}`); the real servers' replies come back through the router
  and are hashed over the directors too.
* {args.servers} real servers, one service `-t {VIP4}:80 -s mh|mhs -b mh-port`,
  every server weight 1, default timeouts (TCP TIME_WAIT 120 s: an `mh` entry
  outlives the run).
* Load: {args.rate:g} new short HTTP/1.0 connections per second for
  {args.seconds:g} s per run, from 16 client addresses, kernel-chosen ports.
* Flapping: F% of the {args.servers} servers, rounded **up** to whole servers
  (1% of {args.servers} = 1 server, i.e. really {100 / args.servers:g}%; 10% = 2 servers):
  each is removed (`-d`) and re-added (`-a`) on every director over the
  control socket, out for {args.period / 2:g} s, in for {args.period / 2:g} s, the flapping
  servers staggered evenly over the {args.period:g} s period, the first removal
  1 s into the run.
* Each run starts with freshly started directors (no entries, CPU from
  zero).  Entries (`conn_entries` of `userlb adm --show-settings`) sampled
  every second; CPU seconds = utime + stime of each director process
  (/proc/PID/stat) over the run.

## Results

{table(rows, args, ks)}

{ratios(rows, ks)}

{chr(10).join(checks)}

{"![entries and CPU](" + out.name + ".png)" if png_ok else "(no plot: matplotlib is not installed)"}

## Reading it

* `mh` keeps an entry for every connection (IPVS semantics), so its entry
  count grows with the rate times the entry lifetime whatever the flapping.
* `mhs` keeps entries only for connections that arrive on a slot that is
  unstable at that moment: none when nothing changes, and, while servers
  flap, about (share of slots that are unstable) x (share of the time they
  are) of the connections.  A flap that returns makes every slot stable at
  once ([mhs-spec.md](mhs-spec.md) rule 12).
* CPU: the directors' CPU time includes everything they do (packets, entry
  creation and expiry, the control socket).  The difference between `mh` and
  `mhs` is the cost of creating, updating and expiring the entries; at this
  modest rate both are dominated by per-packet work.
* Failed connections: {failed_text}  (With `mh`, a connection still in
  flight to a server when it is removed loses its entry's destination and
  IPVS drops its packets; with `mhs` it keeps going to the old server.  The
  connections here last a few milliseconds, so few or none are caught.)
* The three `mh` curves of the first panel lie on top of each other.
* Machine: {os.cpu_count()} CPUs shared by the directors, the real servers and the
  client; the CPU seconds are each director's own.

## Regenerate

    sudo .venv/bin/python -m userlb.lab.experiment        # or: userlb lab experiment
    # options: --servers N --directors K --rate R --seconds S --flap 0,1,10 --period P --out PATH
    # only the table and the plot, from the saved samples:
    .venv/bin/python -m userlb.lab.experiment --from-json docs/mhs-experiment.json

The plot needs matplotlib (`.venv/bin/pip install matplotlib`); without it
the script writes the table only.
"""
    md.write_text(text)
    return md


def main(argv=None):
    p = argparse.ArgumentParser(prog="userlb lab experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--directors", type=int, default=2)
    p.add_argument("--rate", type=float, default=100.0, help="new connections per second")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--flap", default="0,1,10", help="flapping shares in percent")
    p.add_argument("--period", type=float, default=2.0, help="flap period in seconds")
    p.add_argument("--scheds", default="mh,mhs")
    p.add_argument("--out", default="docs/mhs-experiment", help="OUT.md, OUT.png, OUT.json")
    p.add_argument("--from-json", metavar="FILE",
                   help="no run: rewrite OUT.md and OUT.png from a saved OUT.json")
    args = p.parse_args(argv)
    if args.from_json:
        data = json.loads(pathlib.Path(args.from_json).read_text())
        for k, v in data["args"].items():
            if k not in ("out", "from_json"):
                setattr(args, k, v)
        rows = data["rows"]
        for r in rows:       # JSON made the director numbers strings
            for f in ("cpu", "entries_mean", "entries_max", "entries_end"):
                r[f] = {int(k): v for k, v in r[f].items()}
            r["samples"] = [(t, {int(k): v for k, v in d.items()}) for t, d in r["samples"]]
        ks = list(range(1, args.directors + 1))
        out = pathlib.Path(args.out)
        png_ok = plot(rows, str(out.with_suffix(".png")), ks)
        md = write_doc(rows, args, ks, png_ok, data.get("cmd", "python -m userlb.lab.experiment"),
                       data.get("elapsed", 0))
        print(f"wrote {md}" + (f", {out.with_suffix('.png')}" if png_ok else ""))
        return 0
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("userlb lab experiment: needs root and /dev/net/tun", file=sys.stderr)
        return 1
    if args.directors < 2:
        print("userlb lab experiment: --directors must be 2 or more", file=sys.stderr)
        return 2
    pcts = [int(x) for x in args.flap.split(",") if x != ""]
    scheds = args.scheds.split(",")
    cmd = "python -m userlb.lab.experiment" + ("" if argv in (None, []) else " " + " ".join(argv))
    t0 = time.monotonic()
    lab = Lab(n_servers=args.servers, n_clients=16, directors=args.directors, current=False,
              director=False)
    rows = []
    try:
        print(f"lab {lab.tag}: {args.directors} directors, {args.servers} real servers ...",
              flush=True)
        lab.up()
        lab.write_rules(rules(lab.servers, scheds[0]))
        lab.start_director()
        for sched in scheds:
            for pct in pcts:
                rows.append(run_one(lab, sched, pct, args,
                                    log=lambda s: print(s, flush=True)))
    except LabError as e:
        print(f"userlb lab experiment: {e}", file=sys.stderr)
        return 1
    finally:
        lab.down()
    ks = list(range(1, args.directors + 1))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    elapsed = time.monotonic() - t0
    out.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "cmd": cmd, "elapsed": elapsed, "rows": rows}, indent=1) + "\n")
    png_ok = plot(rows, str(out.with_suffix(".png")), ks)
    md = write_doc(rows, args, ks, png_ok, cmd, elapsed)
    print(table(rows, args, ks))
    print()
    print(ratios(rows, ks))
    png = f", {out.with_suffix('.png')}" if png_ok else " (no matplotlib: no plot)"
    print(f"\nwrote {md}{png}, {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
