"""The lab's rules files (ipvsadm -R syntax, what `userlb run --config` reads).

Every service of the lab is a masquerading one whose real servers listen on
the VIP's own port; `service_lines` writes one, the rest says which.
"""
from .base import ECHO, HASH, HTTP, UDP_ECHO, VIP4, VIP6

# the VIPs as they stand before ":port", and whether they are IPv6
VIPS = ((VIP4, False), (f"[{VIP6}]", True))

# the lab's own services besides TCP hash: (protocol, port, scheduler options)
LAB_SERVICES = (("-t", HTTP, "-s mh -b mh-fallback,mh-port"),
                ("-t", ECHO, "-s mh -b mh-fallback,mh-port"),
                ("-u", UDP_ECHO, "-s sh -b sh-fallback,sh-port"))
HASH_SCHED = "-s mh -b mh-port"


def sched_opts(sched: str, flags: str = "") -> str:
    """'-s SCHED [-b FLAGS]'."""
    return f"-s {sched}" + (f" -b {flags}" if flags else "")


def rips(servers: list[tuple[str, str, str]], v6: bool) -> list[str]:
    """The real servers' addresses as they stand before ":port";
    servers: [(name, a4, a6)]."""
    return [f"[{a6}]" if v6 else a4 for _name, a4, a6 in servers]


def service_lines(proto: str, vip: str, port: int, sched: str, addrs: list[str],
                  weights: list[int] | None = None) -> list[str]:
    """`-A` for proto vip:port with scheduler options sched, and one `-a -m`
    per real server address (weights: one per address, default 1)."""
    weights = weights or [1] * len(addrs)
    lines = [f"-A {proto} {vip}:{port} {sched}"]
    lines += [f"-a {proto} {vip}:{port} -r {rip}:{port} -m -w {w}"
              for rip, w in zip(addrs, weights, strict=False)]
    return lines


def rules_text(servers, weights=None, far=None, extra=""):
    """The lab's rules file.  servers: list of (name, a4, a6); the TCP hash
    service goes to `far` instead when given."""
    lines = []
    for vip, v6 in VIPS:
        for proto, port, sched in LAB_SERVICES:
            lines += service_lines(proto, vip, port, sched, rips(servers, v6), weights)
        lines += service_lines("-t", vip, HASH, HASH_SCHED, rips([far] if far else servers, v6))
    return "\n".join(lines) + "\n" + extra
