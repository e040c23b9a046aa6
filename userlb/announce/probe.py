"""One look at the director: over its control socket (`-S -n` for the VIPs,
the `state` request for the services below their keepalived quorum), at
its TUN device in /sys/class/net, and at its routing (`ip route get` of each
VIP must lead into the TUN device: a device set down and up again has lost
the routes `userlb run` made)."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

from ..control import ipvsadm as ia
from ..control import protocol as P
from ..errors import ConfigError
from ..model import PROTO_NAMES, format_addr, format_endpoint
from .exabgp import host_prefix
from .fitness import Reading

IFF_UP = 0x1


def tun_down(name: str, sys_net: str = "/sys/class/net") -> str | None:
    """Why the TUN device `name` cannot carry traffic, or None when it is up
    with its carrier (a TUN device has carrier while a process holds it)."""
    base = os.path.join(sys_net, name)
    try:
        with open(os.path.join(base, "flags")) as f:
            flags = int(f.read().strip(), 0)
    except FileNotFoundError:
        return f"TUN device {name} does not exist"
    except (OSError, ValueError) as e:
        return f"TUN device {name}: cannot read its flags: {e}"
    if not flags & IFF_UP:
        return f"TUN device {name} is down"
    try:
        with open(os.path.join(base, "carrier")) as f:
            carrier = f.read().strip()
    except OSError:
        carrier = "0"
    if carrier != "1":
        return f"TUN device {name} has no carrier (no process holds it)"
    return None


def vips_of(rules: str) -> dict[str, tuple[str, ...]]:
    """`-S -n` text -> {host prefix: ('TCP 10.99.0.1:80', ...)}."""
    out: dict[str, list[str]] = {}
    for c in ia.parse_rules(rules):
        if c.cmd == ia.ADD_SERVICE and c.addr is not None and c.port is not None:
            p = host_prefix(format_addr(c.addr))
            name = f"{PROTO_NAMES.get(c.protocol or 0, '?').upper()} "
            out.setdefault(p, []).append(name + format_endpoint(c.addr, c.port))
    return {p: tuple(s) for p, s in out.items()}


def lost_of(state: str) -> dict[str, str]:
    """The `state` reply -> {VIP prefix: 'TCP 10.99.0.1:80 below its quorum'}
    for every service whose keepalived quorum is lost."""
    try:
        obj = json.loads(state)
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for row in obj.get("quorum", []) if isinstance(obj, dict) else []:
        if not (isinstance(row, list) and len(row) == 3) or row[2] is not False:
            continue
        proto, ep = str(row[0]), str(row[1])
        host = ep.rsplit(":", 1)[0]
        try:
            p = host_prefix(host)
        except ValueError:
            continue
        out.setdefault(p, f"{proto.upper()} {ep} below its quorum")
    return out


def route_queries(vips: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{prefix: 'route get ADDR ipproto P dport N'} for each VIP, from its
    first service (userlb steers a local VIP's service ports only)."""
    out = {}
    for p, services in vips.items():
        addr = p.split("/")[0]
        if not services:
            out[p] = f"route get {addr}"
            continue
        proto, _sp, ep = services[0].partition(" ")
        port = ep.rsplit(":", 1)[1]
        out[p] = f"route get {addr} ipproto {proto.lower()} dport {port}"
    return out


def parse_route_get(text: str) -> list[str | None]:
    """`ip -j -batch` output of `route get` lines -> the device of each."""
    devs: list[str | None] = []
    dec = json.JSONDecoder()
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            break
        if isinstance(obj, list):
            first = obj[0] if obj and isinstance(obj[0], dict) else {}
            dev = first.get("dev") if first.get("type", "unicast") != "local" else "lo"
            devs.append(str(dev) if dev is not None else None)
    return devs


def unrouted(vips: dict[str, tuple[str, ...]], tun: str,
             run: Callable[[list[str], str], str] | None = None) -> dict[str, str]:
    """The VIPs whose packets the director's routing does not send into the
    TUN device (`ip route get`, one `ip -batch` per family): {prefix: why}.
    Nothing when `ip` cannot be run (the check is skipped)."""
    run = run or _ip_batch
    q = route_queries(vips)
    out: dict[str, str] = {}
    for fam, ps in (("-4", [p for p in q if ":" not in p]), ("-6", [p for p in q if ":" in p])):
        if not ps:
            continue
        try:
            devs = parse_route_get(run([fam], "\n".join(q[p] for p in ps) + "\n"))
        except (OSError, subprocess.SubprocessError):
            return {}
        for p, dev in zip(ps, devs, strict=False):
            if dev != tun:
                out[p] = (f"not routed into {tun} (its route goes to "
                          f"{dev or 'nowhere'}; was the device set down?)")
    return out


def _ip_batch(args: list[str], lines: str) -> str:
    p = subprocess.run(["ip", *args, "-j", "-batch", "-"], input=lines, text=True,
                       capture_output=True, timeout=5)
    return p.stdout


def look(control: str, tun: str | None, timeout: float,
         sys_net: str = "/sys/class/net",
         ip_batch: Callable[[list[str], str], str] | None = None) -> Reading:
    """One look at the director behind `control` (its TUN device `tun`, None:
    not checked)."""
    try:
        save = P.request(control, {"argv": ["-S", "-n"]}, timeout=timeout)
        state = P.request(control, {"state": True}, timeout=timeout)
    except P.NoDirector:
        return Reading(down=f"userlb run is not running (nothing listens on {control})")
    except TimeoutError:
        return Reading(down=f"userlb run is not answering on {control} within {timeout:g}s")
    except PermissionError:
        return Reading(down=f"no permission to use {control} (run as the director's user)")
    except (P.ProtocolError, OSError) as e:
        return Reading(down=f"control socket {control}: {e}")
    if not save.get("ok"):
        return Reading(down=f"control socket {control}: -S -n refused: {save.get('error')}")
    if tun is not None:
        why = tun_down(tun, sys_net)
        if why is not None:
            return Reading(down=why)
    try:
        vips = vips_of(str(save.get("output", "")))
    except (ConfigError, ValueError) as e:
        return Reading(down=f"cannot read the director's -S -n output: {e}")
    lost = lost_of(str(state.get("output", ""))) if state.get("ok") else {}
    return Reading(vips=vips, lost={p: w for p, w in lost.items() if p in vips},
                   unrouted=unrouted(vips, tun, ip_batch) if tun is not None else {})
