"""The demo run against a lab that is up: traffic, prediction, stats.

Sends HTTP requests (IPv4 and IPv6, round robin over the client addresses,
kernel-chosen source ports) and UDP echo flows through the director, asks
`userlb simulate` where the same flows should go, and prints per real server
what was predicted next to what answered; then the director's listing
(`-L -n --stats`) and driver counters.  Returns a summary dict; `ok` is False
if any flow failed, went elsewhere than predicted, or if a real server saw
another address/port than the client's own.
"""
import json
import subprocess
import sys

from .base import HTTP, UDP_ECHO, VIP4, VIP6, endpoint, short


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
    import ipaddress
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
    import ipaddress
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


def run(lab, requests=300, udp_flows=60, out=sys.stdout):
    half = requests // 2
    flows = []
    flows += lab.client_py("http", vip=VIP4, port=HTTP, count=requests - half, sources=lab.clients4)
    flows += lab.client_py("http", vip=VIP6, port=HTTP, count=half, sources=lab.clients6)
    flows += lab.client_py("udp", vip=VIP4, port=UDP_ECHO, count=udp_flows // 2,
                           sources=lab.clients4)
    flows += lab.client_py("udp", vip=VIP6, port=UDP_ECHO, count=udp_flows - udp_flows // 2,
                           sources=lab.clients6)
    bad = check_flows(lab, flows)
    names = sorted({short(s[0]) for s in lab.servers[:lab.config_servers]})
    groups = [("HTTP v4", "tcp", False), ("HTTP v6", "tcp", True),
              ("UDP v4", "udp", False), ("UDP v6", "udp", True)]
    p = lambda *a: print(*a, file=out)   # noqa: E731
    p(f"lab {lab.tag}: {requests} HTTP requests and {udp_flows} UDP echo flows from "
      f"{len(lab.clients4)}+{len(lab.clients6)} client addresses to {VIP4} / [{VIP6}]")
    p("")
    hdr = f"{'real server':<12}" + "".join(f"{g[0] + ' pred/got':>20}" for g in groups)
    p(hdr)
    p("-" * len(hdr))
    for n in names:
        row = f"{n:<12}"
        for _label, proto, v6 in groups:
            sel = [f for f in flows if f["proto"] == proto and (":" in f["vip"]) == v6]
            pred = sum(1 for f in sel if f.get("predicted") == n)
            got = sum(1 for f in sel if f.get("server") == n)
            row += f"{f'{pred}/{got}':>20}"
        p(row)
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
    p("")
    adm = lab.adm("-L", "-n", "--stats")
    try:
        raw = lab.stats().rstrip()
    except Exception as e:   # noqa: BLE001
        raw = f"(stats not available: {e})"
    if adm.returncode == 0:
        p(f"director stats (userlb adm --control {lab.control_path} -L -n --stats):")
        p(adm.stdout.rstrip())
        p("\n".join(line for line in raw.splitlines()
                    if line.startswith(("driver:", "engine "))))
    else:
        p("director stats (SIGUSR1 listing, then driver and engine counters):")
        p(raw)
    return {"ok": not bad, "flows": len(flows), "mismatches": len(bad)}
