"""Checker states -> the real servers a virtual server's services should
hold -> ipvsadm commands (keepalived.conf(5)'s semantics, no I/O).

`VsState` follows one `virtual_server`: each real server's checkers (up or
down) and its current weight (the configured one, or the last `misc_dynamic`
weight), whether the virtual server has its quorum, and from that which
destinations each of its IPVS services should have (`desired`):

* a real server is alive when every one of its checkers is up (none: always
  alive); a checker starts up, or down with `alpha`;
* alive: present with its weight.  Dead: absent, or present with weight 0
  under `inhibit_on_failure`;
* quorum: the sum of the alive servers' weights.  Up at start when it
  reaches `quorum`; lost when it drops below `quorum - hysteresis` (or to
  0); regained when it reaches `quorum + hysteresis`;
* `sorry_server`: while the quorum is lost it is present (weight 1) and the
  real servers are taken out (weight 0 under `inhibit_on_failure`); while
  the quorum holds it is absent, or present with weight 0 under
  `sorry_server_inhibit`.  Without a sorry server the quorum only runs the
  `quorum_up` / `quorum_down` scripts.

`reconcile(config, state)` returns the -a / -e / -d commands (ipvsadm
Command objects, built from ipvsadm argv) that bring a running Config's
services to `desired`; only the destinations keepalived.conf names are
touched.  `build_config(states)` is the Config a keepalived.conf stands for
(what `userlb check-config --rules` prints and what a SIGHUP diffs against).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model import PROTO_SWITCH, Addr, DestKey, ServiceKey, format_endpoint
from . import ipvsadm as ia
from .config import Config
from .keepalived import KeepalivedConf, RealServer, VirtualServer, dest_argv, service_command

SORRY_WEIGHT = 1


@dataclass
class RsState:
    rs: RealServer
    checker_up: list[bool]
    weight: int                      # the configured weight, or misc_dynamic's
    #: why the last checker failed (for the listing and the log)
    reason: str = ""

    @property
    def alive(self) -> bool:
        return all(self.checker_up)


@dataclass
class Event:
    """What a change did: `what` is 'up', 'down', 'weight', 'quorum-up' or
    'quorum-down'; `rs` the real server (None for the quorum)."""
    what: str
    rs: RsState | None = None
    text: str = ""


@dataclass
class VsState:
    vs: VirtualServer
    rs: list[RsState] = field(default_factory=list)
    quorum_up: bool = True

    @classmethod
    def start(cls, vs: VirtualServer) -> VsState:
        st = cls(vs, [RsState(r, [not c.alpha for c in r.checkers], r.weight)
                      for r in vs.real_servers])
        st.quorum_up = st.weight_sum() >= vs.quorum
        return st

    def weight_sum(self) -> int:
        return sum(s.weight for s in self.rs if s.alive)

    @property
    def sorry_active(self) -> bool:
        return self.vs.sorry_server is not None and not self.quorum_up

    def set_checker(self, i: int, j: int, up: bool, weight: int | None = None,
                    reason: str = "") -> list[Event]:
        """Checker j of real server i is now up/down (with a misc_dynamic
        weight); the events that follow (none if nothing changed)."""
        s = self.rs[i]
        was_alive, old_weight = s.alive, s.weight
        s.checker_up[j] = up
        if not up:
            s.reason = reason
        if up and weight is not None:
            s.weight = weight
        out: list[Event] = []
        if s.alive != was_alive:
            out.append(Event("up" if s.alive else "down", s, reason))
        elif s.alive and s.weight != old_weight:
            out.append(Event("weight", s, f"weight {old_weight} -> {s.weight}"))
        if out:
            out.extend(self.update_quorum())
        return out

    def update_quorum(self) -> list[Event]:
        total, vs = self.weight_sum(), self.vs
        if not self.quorum_up and total >= vs.quorum + vs.hysteresis:
            self.quorum_up = True
            return [Event("quorum-up", None, f"weight {total} >= {vs.quorum}+{vs.hysteresis}")]
        if self.quorum_up and (total == 0 or total < vs.quorum - vs.hysteresis):
            self.quorum_up = False
            return [Event("quorum-down", None,
                          f"weight {total} < {vs.quorum}-{vs.hysteresis}")]
        return []

    def desired(self, key: ServiceKey) -> dict[DestKey, int]:
        """Destination -> weight that service `key` of this virtual server
        should hold now."""
        vport = key[2]
        out: dict[DestKey, int] = {}
        sorry = self.sorry_active
        for s in self.rs:
            k = (s.rs.addr, s.rs.port_for(vport))
            if s.alive and not sorry:
                out[k] = s.weight
            elif s.rs.inhibit_on_failure:
                out[k] = 0
        if self.vs.sorry_server is not None:
            if sorry:
                out[self.vs.sorry_server] = SORRY_WEIGHT
            elif self.vs.sorry_inhibit:
                out.setdefault(self.vs.sorry_server, 0)
        return out

    def managed(self, key: ServiceKey) -> set[DestKey]:
        """The destinations of service `key` that keepalived.conf names."""
        out = {(s.rs.addr, s.rs.port_for(key[2])) for s in self.rs}
        if self.vs.sorry_server is not None:
            out.add(self.vs.sorry_server)
        return out

    def method(self, dk: DestKey, vport: int) -> str:
        """The forwarding switch (-m / -g / -i) of destination `dk`."""
        for s in self.rs:
            if (s.rs.addr, s.rs.port_for(vport)) == dk:
                return s.rs.method or self.vs.method
        if dk == self.vs.sorry_server:
            return self.vs.sorry_method or self.vs.method
        return self.vs.method

    def thresholds(self, dk: DestKey, vport: int) -> tuple[int, int]:
        for s in self.rs:
            if (s.rs.addr, s.rs.port_for(vport)) == dk:
                return s.rs.u_threshold, s.rs.l_threshold
        return 0, 0


def _dest_cmd(kind: str, key: ServiceKey, addr: Addr, port: int, weight: int = 0,
              th: tuple[int, int] = (0, 0), method: str = "-m") -> ia.Command:
    if kind == "-d":
        proto, vaddr, vport = key
        return ia.parse_argv(["-d", PROTO_SWITCH.get(proto, "-u"),
                              format_endpoint(vaddr, vport), "-r",
                              format_endpoint(addr, port)])
    return ia.parse_argv(dest_argv(key, addr, port, weight, th[0], th[1], edit=kind == "-e",
                                   method=method))


def reconcile(config: Config, st: VsState) -> list[ia.Command]:
    """The commands that bring the running services of `st` to st.desired();
    services missing from `config` (deleted with `userlb adm`) are left out."""
    cmds: list[ia.Command] = []
    for key in st.vs.services:
        svc = config.get_service(*key)
        if svc is None:
            continue
        want = st.desired(key)
        managed = st.managed(key)
        for d in svc.dests:
            if d.key in managed and d.key not in want:
                cmds.append(_dest_cmd("-d", key, d.addr, d.port))
        for dk, w in want.items():
            cur = svc.find_dest(*dk)
            if cur is None:
                cmds.append(_dest_cmd("-a", key, dk[0], dk[1], w, st.thresholds(dk, key[2]),
                                      st.method(dk, key[2])))
            elif cur.weight != w:
                cmds.append(_dest_cmd("-e", key, dk[0], dk[1], w,
                                      (cur.u_threshold, cur.l_threshold),
                                      st.method(dk, key[2])))
    return cmds


def initial_commands(states: list[VsState],
                     timeouts: tuple[int, int, int] | None = None) -> list[ia.Command]:
    """--set (global_defs' lvs_timeouts), -A for every service, -a for what
    each should hold."""
    cmds: list[ia.Command] = []
    if timeouts is not None:
        cmds.append(ia.parse_argv(["--set"] + [str(t) for t in timeouts]))
    for st in states:
        for key in st.vs.services:
            cmds.append(service_command(st.vs, key))
            # in keepalived.conf's order, as keepalived adds them (the kernel
            # lists the newest first)
            for dk, w in st.desired(key).items():
                cmds.append(_dest_cmd("-a", key, dk[0], dk[1], w, st.thresholds(dk, key[2]),
                                      st.method(dk, key[2])))
    return cmds


def build_config(states: list[VsState],
                 timeouts: tuple[int, int, int] | None = None) -> Config:
    cfg = Config()
    cfg.apply_batch(initial_commands(states, timeouts))
    return cfg


def start_states(conf: KeepalivedConf) -> list[VsState]:
    return [VsState.start(vs) for vs in conf.virtual_servers]


def carry_over(old: list[VsState], conf: KeepalivedConf) -> list[VsState]:
    """The states for a re-read keepalived.conf: a real server whose virtual
    server (same services) and whose own definition (address, port,
    checkers) did not change keeps its checker states and dynamic weight;
    a virtual server with the same services keeps its quorum state."""
    by_services = {tuple(st.vs.services): st for st in old}
    out: list[VsState] = []
    for vs in conf.virtual_servers:
        new = VsState.start(vs)
        prev = by_services.get(tuple(vs.services))
        if prev is not None:
            olds = {s.rs.signature(): s for s in prev.rs}
            for s in new.rs:
                o = olds.get(s.rs.signature())
                if o is None:
                    continue
                s.checker_up = list(o.checker_up)
                s.reason = o.reason
                if o.rs.weight == s.rs.weight:
                    s.weight = o.weight
            new.quorum_up = prev.quorum_up
            new.update_quorum()
        out.append(new)
    return out
