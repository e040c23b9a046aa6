"""The demo run against a lab that is up: traffic, prediction, stats.

Sends HTTP requests (IPv4 and IPv6, round robin over the client addresses,
kernel-chosen source ports) and UDP echo flows through the director, asks
`userlb simulate` where the same flows should go under the director's
running configuration (`userlb adm -S -n` over its control socket, so live
changes count), and prints per real server what was predicted next to what
answered, with a legend and a note for every real server that was predicted
no flow; then the director's listing (`-L -n --stats`) and driver counters,
and how to read them.  Returns a summary dict; `ok` is False if any flow
failed, went elsewhere than predicted (except where `-S` cannot carry the
decision: `quiesced_mh`), or if a real server saw another address/port than
the client's own.
"""
import contextlib
import ipaddress
import json
import signal
import subprocess
import sys
import textwrap

from .base import HTTP, UDP_ECHO, VIP4, VIP6, endpoint, short


@contextlib.contextmanager
def sigint_ignored():
    """Ctrl-C is ignored inside (the lab's clean-up must not be cut short by a
    second one); the previous handler is back afterwards."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def predict(rules_path, flows):
    """flows: records with proto, client, cport, vip, vport -> list of 'RIP:PORT' | None."""
    lines = "".join(f"{f['proto']} {endpoint(f['client'], f['cport'])} "
                    f"{endpoint(f['vip'], f['vport'])}\n" for f in flows)
    p = subprocess.run([sys.executable, "-m", "userlb.cli.main", "simulate", "--rules", rules_path,
                        "--flows", "-", "--json"], input=lines, text=True,
                       capture_output=True)
    if p.returncode:
        raise RuntimeError(f"userlb simulate failed: {p.stderr.strip()}")
    return [r["dest"] for r in json.loads(p.stdout)]


def server_names(lab):
    """'RIP' (v4 dotted or v6 text, no port) -> short server name."""
    out = {}
    for ns, a4, a6 in lab.servers + ([lab.far] if lab.far else []):
        name = short(ns)
        out[a4] = name
        out[str(ipaddress.ip_address(a6))] = name
    return out


def dest_name(names, dest):
    if dest is None:
        return None
    host = dest.rsplit(":", 1)[0].strip("[]")
    return names.get(str(ipaddress.ip_address(host)), host)


def check_flows(lab, flows, rules_path=None):
    """Annotate flows with 'predicted' (server name); return the mismatches.
    rules_path: the rules to predict with (default: the lab's rules file)."""
    names = server_names(lab)
    ok_flows = [f for f in flows if "error" not in f]
    for f, d in zip(ok_flows, predict(rules_path or lab.rules_path, ok_flows), strict=False):
        f["predicted"] = dest_name(names, d)
    bad = []
    for f in flows:
        if "error" in f:
            bad.append((f, "failed: " + f["error"]))
        elif f["predicted"] != f["server"]:
            bad.append((f, f"went to {f['server']}, predicted {f['predicted']}"))
        elif (f["seen_client"], f["seen_port"]) != (f["client"], f["cport"]):
            bad.append((f, f"server saw {f['seen_client']}:{f['seen_port']}"))
    return bad


# what the demo's table and the director's listing mean, for someone new to IPVS
LEGEND = """\
pred = flows that `userlb simulate` (the scheduler offline, no network) says go to
       that real server under the director's running configuration;
got  = flows that real server actually answered (it replies with its name).
pred = got in every column: the director picked exactly what the model picked."""

LISTING_NOTES = """\
How to read it (ipvsadm's format): one line per virtual service (protocol and
VIP:port), then `->` one line per real server.  Conns = connections scheduled,
InPkts/InBytes = client -> real server, OutPkts/OutBytes = real server -> client
(NAT: both directions pass the director).
TCP :7 (echo) and :9 (hash) are services of the lab that the tests and
`userlb lab` experiments use; this demo sends no traffic to them, so they stay 0.
driver: rx/tx = packets read from / written to the TUN device; drops = packets
the director did not forward, by reason on the `engine drops` line.
icmp_ignored = ICMP messages that are not errors, which IPVS ignores too: here
the kernel's own IPv6 multicast listener reports (MLD), sent into the TUN
device when it came up -- not traffic of the demo."""


def wrap(text):
    """A note: indented by 2, continuation lines by 4, at most 92 columns."""
    return textwrap.fill(text, 92, initial_indent="  ", subsequent_indent="    ")


def asked_director(lab):
    """The director the demo asks (-S, the listing): the lab's one, or the
    first running one of an ECMP lab."""
    if lab.n_directors == 1:
        return 1
    return (lab.running_directors() or [1])[0]


def running_rules(lab):
    """The director's running configuration (`userlb adm -S -n` over its
    control socket): (text, None), or (None, why) when it does not answer."""
    p = lab.adm("-S", "-n", k=asked_director(lab))
    if p.returncode or not p.stdout.strip():
        return None, (p.stderr or p.stdout).strip() or f"exit {p.returncode}"
    return p.stdout, None


def dest_weights(rules):
    """ipvsadm -R text -> {(proto, 'VIP:PORT'): {'RIP': weight}} (RIP without
    port, IPv6 without brackets, as server_names() has them)."""
    out = {}
    for line in rules.splitlines():
        w = line.split()
        if len(w) < 5 or w[0] not in ("-A", "-a") or w[1] not in ("-t", "-u"):
            continue
        svc = out.setdefault(("tcp" if w[1] == "-t" else "udp", w[2]), {})
        if w[0] == "-a" and "-r" in w:
            host = w[w.index("-r") + 1].rsplit(":", 1)[0].strip("[]")
            weight = int(w[w.index("-w") + 1]) if "-w" in w else 1
            svc[str(ipaddress.ip_address(host))] = weight
    return out


def quiesced_mh(rules):
    """{(proto, 'VIP:PORT'): {RIP, ...}}: the weight-0 real servers of the `mh`
    services in rules.  The director builds an mh table from each server's
    *last* non-zero weight (as the kernel does), so a server set to weight 0
    keeps its slots and their new flows go to the fallback server; `-S`
    cannot carry the last weight, and `userlb simulate` on it builds the
    table without that server: for those services a few flows may differ."""
    mh = set()
    for line in rules.splitlines():
        w = line.split()
        if len(w) >= 3 and w[0] == "-A" and "-s" in w and w[w.index("-s") + 1] == "mh":
            mh.add(("tcp" if w[1] == "-t" else "udp", w[2]))
    return {svc: {a for a, wt in dests.items() if wt == 0}
            for svc, dests in dest_weights(rules).items() if svc in mh and 0 in dests.values()}


def zero_notes(names, weights, groups, counts):
    """One line per real server and reason for the columns where it has 0
    predicted flows: not a real server of that service, weight 0, or chance."""
    notes = []
    by_name = {}
    for addr, n in names.items():
        by_name.setdefault(n, []).append(addr)
    for n in counts:
        why = {}
        for (label, proto, vip), (pred, _got) in zip(groups, counts[n], strict=True):
            if pred:
                continue
            svc = weights.get((proto, vip), {})
            w = next((svc[a] for a in by_name.get(n, ()) if a in svc), None)
            reason = ("not a real server of that service in the running configuration"
                      if w is None else
                      "weight 0 in the running configuration: a real server with weight 0 "
                      "is quiesced, it gets no new connections (those it has continue)"
                      if w == 0 else
                      f"weight {w}, but no flow of this sample hashed to it")
            why.setdefault(reason, []).append(label)
        for reason, labels in why.items():
            notes.append(wrap(f"{n}: 0 predicted for {', '.join(labels)}: {reason}"))
    return notes


def run(lab, requests=300, udp_flows=60, out=sys.stdout):
    p = lambda *a: print(*a, file=out)   # noqa: E731
    running, why_not = running_rules(lab)
    if running is not None:
        rules_path = str(lab.dir / "running.rules")
        with open(rules_path, "w") as f:
            f.write(running)
        source = f"the director's running configuration (userlb adm --control " \
                 f"{lab.control_of(asked_director(lab))} -S -n)"
    else:
        rules_path = lab.rules_path
        running = open(rules_path).read()
        source = f"the lab's rules file {rules_path} (the director did not answer -S: {why_not})"
    half = requests // 2
    flows = []
    flows += lab.client_py("http", vip=VIP4, port=HTTP, count=requests - half, sources=lab.clients4)
    flows += lab.client_py("http", vip=VIP6, port=HTTP, count=half, sources=lab.clients6)
    flows += lab.client_py("udp", vip=VIP4, port=UDP_ECHO, count=udp_flows // 2,
                           sources=lab.clients4)
    flows += lab.client_py("udp", vip=VIP6, port=UDP_ECHO, count=udp_flows - udp_flows // 2,
                           sources=lab.clients6)
    bad = check_flows(lab, flows, rules_path)
    # a flow of an mh service with a weight-0 server that went to another
    # (available) server than predicted: what `-S` cannot carry (quiesced_mh)
    quiet = quiesced_mh(running)
    rip_of = {(n, ":" in a): a for a, n in server_names(lab).items()}

    def explained(f, why):
        gone = quiet.get((f["proto"], endpoint(f["vip"], f["vport"])), set())
        to = rip_of.get((f.get("server"), ":" in f["vip"]))
        return bool(gone) and why.startswith("went to") and to is not None and to not in gone
    expected = [(f, why) for f, why in bad if explained(f, why)]
    bad = [(f, why) for f, why in bad if not explained(f, why)]
    names = server_names(lab)
    weights = dest_weights(running)
    # the rows: the servers of the running configuration (or of the lab's
    # rules), and any other that was predicted or answered
    in_config = {names[a] for svc in weights.values() for a in svc if a in names}
    seen = {f.get(k) for f in flows for k in ("predicted", "server")} - {None}
    order = [short(s[0]) for s in lab.servers + ([lab.far] if lab.far else [])]
    rows = [n for n in order if n in in_config | seen] + sorted(seen - set(order))
    groups = [("HTTP v4", "tcp", endpoint(VIP4, HTTP)), ("HTTP v6", "tcp", endpoint(VIP6, HTTP)),
              ("UDP v4", "udp", endpoint(VIP4, UDP_ECHO)),
              ("UDP v6", "udp", endpoint(VIP6, UDP_ECHO))]
    counts = {}
    for n in rows:
        counts[n] = []
        for _label, proto, vip in groups:
            sel = [f for f in flows if f["proto"] == proto and
                   endpoint(f["vip"], f["vport"]) == vip]
            counts[n].append((sum(1 for f in sel if f.get("predicted") == n),
                              sum(1 for f in sel if f.get("server") == n)))
    p(f"lab {lab.tag}: {requests} HTTP requests and {udp_flows} UDP echo flows from "
      f"{len(lab.clients4)}+{len(lab.clients6)} client addresses to {VIP4} / [{VIP6}]")
    p(f"each flow compared with `userlb simulate` on {source}")
    original = dest_weights(open(lab.rules_path).read())
    if running is not None and rules_path != lab.rules_path and original != weights:
        p(f"  (it differs from the rules the lab started with, {lab.rules_path}: "
          f"live changes are included)")
    p("")
    hdr = f"{'real server':<12}" + "".join(f"{g[0] + ' pred/got':>20}" for g in groups)
    p(hdr)
    p("-" * len(hdr))
    for n in rows:
        p(f"{n:<12}" + "".join(f"{f'{pr}/{got}':>20}" for pr, got in counts[n]))
    p("")
    p(LEGEND)
    for line in zero_notes(names, weights, groups, counts):
        p(line)
    seen_ok = sum(1 for f in flows if "error" not in f
                  and (f["seen_client"], f["seen_port"]) == (f["client"], f["cport"]))
    p("")
    as_predicted = sum(1 for f in flows if f.get("predicted") == f.get("server"))
    p(f"flows: {len(flows)}, answered: {sum(1 for f in flows if 'error' not in f)}, "
      f"as predicted by `userlb simulate`: {as_predicted}, "
      f"real server saw the client's own address and port: {seen_ok}")
    for f, why in bad[:10]:
        p(f"  MISMATCH {f['proto']} {endpoint(f['client'], f.get('cport', 0))} -> "
          f"{endpoint(f['vip'], f['vport'])}: {why}")
    if expected:
        svcs = ", ".join(sorted({endpoint(f["vip"], f["vport"]) for f, _ in expected}))
        p(wrap(f"{len(expected)} flows of {svcs} went to another server than predicted, as "
               f"expected: that mh service has a real server with weight 0.  The director "
               f"keeps its Maglev slots (built from its last non-zero weight, as the kernel "
               f"does) and sends their new flows to the fallback server; `-S` does not carry "
               f"the last weight, so `userlb simulate` builds the table without it."))
    p("")
    k = asked_director(lab)
    adm = lab.adm("-L", "-n", "--stats", k=k)
    try:
        raw = lab.stats(k=k).rstrip()
    except Exception as e:   # noqa: BLE001
        raw = f"(stats not available: {e})"
    if adm.returncode == 0:
        p(f"director stats (userlb adm --control {lab.control_of(k)} -L -n --stats):")
        p(adm.stdout.rstrip())
        p("\n".join(line for line in raw.splitlines()
                    if line.startswith(("driver:", "engine "))))
    else:
        p("director stats (SIGUSR1 listing, then driver and engine counters):")
        p(raw)
    p("")
    p(LISTING_NOTES)
    return {"ok": not bad, "flows": len(flows), "mismatches": len(bad)}
