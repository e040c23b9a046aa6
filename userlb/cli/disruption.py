"""`userlb simulate --against`: the disruption between two configurations --
per service with a lookup table, the slots each backend owns before and
after, and where given flows go before and after (cli/simulate.py describes
the output)."""
from collections import defaultdict

from ..model import PROTO_NAMES, format_endpoint
from .flows import endpoint_of, lookup, table_of


def compare(cfg_a, cfg_b, flows):
    """The disruption between two configurations: a dict (see --against)."""
    keys = list(cfg_a.services)
    keys += [k for k in cfg_b.services if k not in cfg_a.services]
    by_svc = {}
    flow_res = []
    for f in flows:
        da, db = endpoint_of(lookup(cfg_a, f)), endpoint_of(lookup(cfg_b, f))
        flow_res.append((f, da, db))
        by_svc.setdefault(f.service_key, []).append((da, db))
    services = []
    for key in keys:
        entry = _service_entry(key, cfg_a.services.get(key), cfg_b.services.get(key),
                               by_svc.get(key, []))
        if entry is not None:
            services.append(entry)
    return {"services": services,
            "flows": len(flow_res),
            "flows_moved": sum(1 for _, a, b in flow_res if a != b),
            "moved": [{"proto": PROTO_NAMES[f.proto],
                       "client": format_endpoint(f.caddr, f.cport),
                       "vip": format_endpoint(f.vaddr, f.vport),
                       "before": None if a is None else format_endpoint(*a),
                       "after": None if b is None else format_endpoint(*b)}
                      for f, a, b in flow_res if a != b]}


def _new_row():
    return dict(slots_before=0, slots_after=0, lost=0, gained=0,
                flows_before=0, flows_after=0, moved_away=0)


def _service_entry(key, sa, sb, fl):
    """One service's part of compare(), or None when it has no table in
    either set and no flows."""
    ta = _try_table(sa)
    tb = _try_table(sb)
    if ta is None and tb is None and not fl:
        return None
    backends = defaultdict(_new_row)
    entry = {"service": f"{PROTO_NAMES[key[0]]} {format_endpoint(key[1], key[2])}",
             "scheduler_before": sa.sched_name if sa else None,
             "scheduler_after": sb.sched_name if sb else None}
    if ta is not None or tb is not None:
        n = max(len(ta or ()), len(tb or ()))
        ta_ = (ta or []) + [None] * (n - len(ta or ()))
        tb_ = (tb or []) + [None] * (n - len(tb or ()))
        moved = 0
        for a, b in zip(ta_, tb_, strict=True):
            if a is not None:
                backends[a]["slots_before"] += 1
            if b is not None:
                backends[b]["slots_after"] += 1
            if a != b:
                moved += 1
                if a is not None:
                    backends[a]["lost"] += 1
                if b is not None:
                    backends[b]["gained"] += 1
        entry["slots"] = n
        entry["slots_moved"] = moved
    for a, b in fl:
        if a is not None:
            backends[a]["flows_before"] += 1
            if a != b:
                backends[a]["moved_away"] += 1
        if b is not None:
            backends[b]["flows_after"] += 1
    entry["flows"] = len(fl)
    entry["flows_moved"] = sum(1 for a, b in fl if a != b)
    entry["backends"] = [dict(backend=format_endpoint(*ep), **v)
                         for ep, v in sorted(backends.items(), key=_ep_key)]
    return entry


def _ep_key(item):
    (addr, port), _ = item
    return (0, addr, b"", port) if isinstance(addr, int) else (1, 0, bytes(addr), port)


def _try_table(svc):
    if svc is None or svc.sched.table_endpoints() is None:
        return None
    return table_of(svc)


def _pct(a, n):
    return f"{100.0 * a / n:.2f}%" if n else "0.00%"


def format_compare(res, with_flows):
    lines = []
    for s in res["services"]:
        lines.append(f"service {s['service']}: {s['scheduler_before'] or '(none)'} -> "
                     f"{s['scheduler_after'] or '(none)'}")
        if "slots" in s:
            lines.append(f"  slots: {s['slots']}, moved {s['slots_moved']} "
                         f"({_pct(s['slots_moved'], s['slots'])})")
        if with_flows:
            lines.append(f"  flows: {s['flows']}, moved {s['flows_moved']} "
                         f"({_pct(s['flows_moved'], s['flows'])})")
        head = (f"  {'backend':<24} {'slots_before':>12} {'slots_after':>11} {'lost':>5} "
                f"{'gained':>6}")
        if with_flows:
            head += f" {'flows_before':>12} {'flows_after':>11} {'moved_away':>10}"
        lines.append(head)
        for b in s["backends"]:
            row = (f"  {b['backend']:<24} {b['slots_before']:>12} {b['slots_after']:>11} "
                   f"{b['lost']:>5} {b['gained']:>6}")
            if with_flows:
                row += f" {b['flows_before']:>12} {b['flows_after']:>11} {b['moved_away']:>10}"
            lines.append(row)
    if with_flows:
        lines.append(f"flows (all services): {res['flows']}, moved {res['flows_moved']} "
                     f"({_pct(res['flows_moved'], res['flows'])})")
    return "".join(x + "\n" for x in lines)


