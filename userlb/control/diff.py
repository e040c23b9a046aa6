"""The ipvsadm commands that turn one configuration into another, keeping
every unchanged Service and Dest object (no -C): what a SIGHUP reload of
`userlb run` applies, so that established connections keep their server."""
from __future__ import annotations

from ..model import Dest, Service
from . import ipvsadm as ia
from .config import Config


def _dest_cmd(kind: str, svc: Service, d: Dest) -> ia.Command:
    c = ia.Command.for_service(kind, svc)
    c.daddr, c.dport, c.daf = d.addr, d.port, d.af
    c.fwd, c.weight, c.tun = d.fwd, d.weight, d.tun
    c.u_threshold, c.l_threshold = d.u_threshold, d.l_threshold
    return c


def _service_def(s: Service) -> tuple[object, ...]:
    return (s.sched_name, s.flags, s.timeout, s.netmask, s.options)


def _dest_def(d: Dest) -> tuple[object, ...]:
    return (d.weight, d.fwd, d.u_threshold, d.l_threshold, d.tun)


def diff_commands(cur: Config, new: Config) -> list[ia.Command]:
    """Commands that turn Config `cur` into Config `new` (deletions first,
    destinations added oldest first so that the final list order is new's)."""
    cmds = [ia.Command.for_service(ia.DEL_SERVICE, s)
            for key, s in cur.services.items() if key not in new.services]
    for key, n in new.services.items():
        s = cur.services.get(key)
        if s is None:
            cmds.append(ia.Command.for_service(ia.ADD_SERVICE, n))
            cmds.extend(_dest_cmd(ia.ADD_SERVER, n, d) for d in reversed(n.dests))
            continue
        if _service_def(s) != _service_def(n):
            cmds.append(ia.Command.for_service(ia.EDIT_SERVICE, n))
        new_keys = {d.key for d in n.dests}
        cmds.extend(_dest_cmd(ia.DEL_SERVER, s, d) for d in s.dests if d.key not in new_keys)
        for d in reversed(n.dests):
            od = s.find_dest(d.addr, d.port)
            if od is None:
                cmds.append(_dest_cmd(ia.ADD_SERVER, n, d))
            elif _dest_def(od) != _dest_def(d):
                cmds.append(_dest_cmd(ia.EDIT_SERVER, n, d))
    if cur.timeouts.as_tuple() != new.timeouts.as_tuple():
        c = ia.Command(ia.SET)
        c.set_timeouts = new.timeouts.as_tuple()
        cmds.append(c)
    return cmds
