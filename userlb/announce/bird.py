"""`userlb bird-config`: a BIRD 2 snippet that announces a director's VIPs,
for sites that run BIRD on the directors instead of ExaBGP (no I/O here).

The VIPs become static routes into the director's TUN device with `check
link`: BIRD drops them by itself when the device goes down or loses its
carrier (no process holds it).  A filter per family lets the BGP session
to the router export exactly these routes.  Health beyond the device (a
hung director, a service below its keepalived quorum) is tied in by
`health_loop()`: a shell loop around `userlb announce --exit-code` that
enables and disables the static protocols with birdc, with rise/fall
counters.
"""
from __future__ import annotations

import ipaddress
import shlex


def _fam(prefix: str) -> str:
    return "6" if ipaddress.ip_network(prefix).version == 6 else "4"


def snippet(prefixes: list[str], tun: str, source: str) -> str:
    """The snippet for host prefixes `prefixes` (canonical text)."""
    fams = {"4": sorted(p for p in prefixes if _fam(p) == "4"),
            "6": sorted(p for p in prefixes if _fam(p) == "6")}
    out = [f"# userlb bird-config: the VIPs of {source}",
           "# include it in bird.conf (include \"/etc/bird/userlb.conf\";) and export",
           "# with the filters below on the BGP session(s) to your router(s), e.g.",
           "#   protocol bgp router1 {",
           "#       local as 65001; neighbor 192.0.2.1 as 65000;",
           "#       hold time 3; keepalive time 1;",
           "#       ipv4 { import none; export filter userlb_export4; next hop self; };",
           "#   }",
           "# and keep them out of the director's own kernel table (userlb run routes",
           "# the VIPs itself): protocol kernel { ipv4 { export where proto !=",
           "# \"userlb_vips4\"; }; }.  BIRD drops a route when the TUN device goes",
           "# down (check link); for the rest of the health see `userlb bird-config",
           "# --health-loop` and docs/scale-out.md."]
    for fam, ps in fams.items():
        if not ps:
            continue
        out += ["", f"define USERLB_VIPS{fam} = [ {', '.join(ps)} ];",
                f"protocol static userlb_vips{fam} {{",
                f"    ipv{fam};", "    check link on;"]
        out += [f'    route {p} via "{tun}";' for p in ps]
        out += ["}",
                f"filter userlb_export{fam} {{",
                f'    if proto = "userlb_vips{fam}" && net ~ USERLB_VIPS{fam} then accept;',
                "    reject;", "}"]
    if not any(fams.values()):
        out += ["", "# the director has no VIPs"]
    return "\n".join(out) + "\n"


def health_loop(control: str, tun: str, prefixes: list[str], rise: int = 3, fall: int = 2,
                interval: float = 1.0, birdc: str = "birdc") -> str:
    """A POSIX shell loop: `userlb announce --exit-code` every `interval`
    seconds; the static protocols enabled after `rise` fit looks, disabled
    after `fall` unfit ones."""
    protos = [f"userlb_vips{f}" for f in ("4", "6") if any(_fam(p) == f for p in prefixes)]
    names = " ".join(protos) or "userlb_vips4"
    check = (f"userlb announce --exit-code --control {shlex.quote(control)} "
             f"--tun {shlex.quote(tun)}")
    return "\n".join([
        "#!/bin/sh",
        "# userlb bird-config --health-loop: BIRD announces the VIPs while the director",
        f"# is fit: {rise} fit looks in a row enable the static protocols, {fall} unfit",
        "# looks disable them (run it beside BIRD, e.g. as a systemd service).",
        "fit=0; unfit=0; state=unknown",
        "while :; do",
        f"    if {check} >/dev/null; then fit=$((fit + 1)); unfit=0",
        "    else unfit=$((unfit + 1)); fit=0; fi",
        f'    if [ "$fit" -ge {rise} ] && [ "$state" != up ]; then',
        f"        for p in {names}; do {birdc} enable \"$p\" >/dev/null; done; state=up",
        f'    elif [ "$unfit" -ge {fall} ] && [ "$state" != down ]; then',
        f"        for p in {names}; do {birdc} disable \"$p\" >/dev/null; done; state=down",
        "    fi",
        f"    sleep {interval:g}",
        "done"]) + "\n"
