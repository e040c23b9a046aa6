"""One look at the director: over its control socket (`-S -n` for the VIPs,
the `state` request for the services below their keepalived quorum) and at
its TUN device in /sys/class/net."""
from __future__ import annotations

import json
import os

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


def look(control: str, tun: str | None, timeout: float,
         sys_net: str = "/sys/class/net") -> Reading:
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
    return Reading(vips=vips, lost={p: w for p, w in lost.items() if p in vips})
