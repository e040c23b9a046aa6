"""The configuration state machine: services, destinations and timeouts,
changed by ipvsadm commands with the Linux kernel's semantics.

Theory of operation
-------------------
`Config` holds the control plane's truth:

* `services`: dict (protocol, addr, port) -> model.Service, in creation order
  (that is also what `-L --nosort` shows; the kernel's hash order is not
  reproduced).  Each Service's `dests` list is in kernel order: the most
  recently added destination first (docs/ipvs.md §1.6).  A new list object is
  assigned on every add/delete, so a reader holding the old list never sees
  it change under its feet.
* `timeouts`: Timeouts(tcp=900, tcpfin=120, udp=300) (`--set`, 0 = unchanged).

Commands (ipvsadm.Command) are applied with `apply(cmd)` (one command) or
`apply_batch(cmds)` (a rules file or -R input: all or nothing).  Every command
is first *checked* against a view of the state -- for a batch, against a cheap
shadow copy (service keys and destination keys only, no scheduler tables) on
which the batch is dry-run command by command -- and only when the whole batch
passed is anything mutated.  A failure raises ConfigError with `.line` set to
the offending command's line; the configuration is then unchanged.

Kernel semantics reproduced (docs/ipvs.md §1.5, §1.6, §1.8, §4.4, §6):

* -A on an existing service: "Service already exists"; -E/-D/-Z on a missing
  one: "No such service"; -a/-e/-d on a missing service: "Service not
  defined"; -a of an existing destination: "Destination already exists";
  -e/-d of a missing one: "No such destination"; unknown or unavailable
  scheduler: "Scheduler not found".
* -E replaces the whole service definition (scheduler -- wlc when -s is
  omitted --, flags, persistence, netmask, userlb options).  The scheduler
  object is re-created (base.create) when the name or the userlb options
  change; otherwise it is kept (it reads svc.flags at lookup time, and gets
  `upd_service()` called).
* -a / -e / -d: the destination semantics are model.Service's (add_dest,
  edit_dest, del_dest: insertion at the head, last_weight, the trash revive
  of a deleted destination, overload flag clearing); the scheduler hooks run
  after the list changed.
* every forwarding method: -m, -g (ipvsadm's default), -i with its tunnel
  options (Dest.tun; docs/forwarding.md).

Hooks for the data plane
------------------------
`config.subscribe(callback)` registers `callback(event, svc, dest)`, called
after each successful change (in command order, after the scheduler hooks):

    event              svc                  dest
    "add-service"      the new Service      None
    "edit-service"     the Service          None
    "delete-service"   the removed Service  None    (also once per service on -C)
    "add-dest"         the Service          the Dest
    "edit-dest"        the Service          the Dest
    "delete-dest"      the Service          the removed Dest
    "timeouts"         None                 None    (config.timeouts changed)
    "zero"             Service or None      None    (None = all services)

engine_sync.EngineSync keeps an engine's dispatch tables up to date from
these events (rebuilt from `config.services`, once per request).
`config.get_service(protocol, addr, port)` looks one up.

-Z: `zero(key=None)` resets the plain counters of model.Stats in place
(service and its destinations, or everything) and emits "zero" so that the
stats/rate-estimator module can reset its own state.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..clock import Clock, MonotonicClock
from ..errors import ConfigError
from ..model import (
    DEFAULT_TCP_TIMEOUT,
    DEFAULT_TCPFIN_TIMEOUT,
    DEFAULT_UDP_TIMEOUT,
    Addr,
    Dest,
    DestKey,
    DestTrash,
    Service,
    ServiceKey,
)
from ..sched import base
from ..sched.base import Scheduler
from . import ipvsadm as ia

#: callback(event, svc, dest) -- see the module docstring
Listener = Callable[[str, "Service | None", "Dest | None"], None]
#: scheduler name -> its class, or None when unknown
SchedulerLookup = Callable[[str], "type[Scheduler] | None"]


class Timeouts:
    """ipvsadm --set values, seconds: tcp (ESTABLISHED), tcpfin (FIN_WAIT), udp."""
    __slots__ = ("tcp", "tcpfin", "udp")

    def __init__(self, tcp: int = DEFAULT_TCP_TIMEOUT, tcpfin: int = DEFAULT_TCPFIN_TIMEOUT,
                 udp: int = DEFAULT_UDP_TIMEOUT) -> None:
        self.tcp, self.tcpfin, self.udp = tcp, tcpfin, udp

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.tcp, self.tcpfin, self.udp)

    def __repr__(self) -> str:
        return f"Timeouts(tcp={self.tcp}, tcpfin={self.tcpfin}, udp={self.udp})"


# ------------------------------------------------------------ state views
# The checks run against a "view" with two questions; the real Config and the
# cheap shadow used to dry-run a batch both answer them.

class _View(Protocol):
    def has_service(self, key: ServiceKey) -> bool: ...

    def has_dest(self, key: ServiceKey, dkey: DestKey) -> bool: ...


class _ShadowView:
    """Service keys -> set of destination keys; nothing else."""

    def __init__(self, services: dict[ServiceKey, Service]) -> None:
        self.svcs = {k: {d.key for d in s.dests} for k, s in services.items()}

    def has_service(self, key: ServiceKey) -> bool:
        return key in self.svcs

    def has_dest(self, key: ServiceKey, dkey: DestKey) -> bool:
        return dkey in self.svcs[key]

    def apply(self, c: ia.Command) -> None:
        if c.cmd == ia.ADD_SERVICE:
            self.svcs[c.service_key] = set()
        elif c.cmd == ia.DEL_SERVICE:
            del self.svcs[c.service_key]
        elif c.cmd == ia.FLUSH:
            self.svcs.clear()
        elif c.cmd == ia.ADD_SERVER:
            self.svcs[c.service_key].add(c.dest_key)
        elif c.cmd == ia.DEL_SERVER:
            self.svcs[c.service_key].discard(c.dest_key)


class _RealView:
    def __init__(self, config: Config) -> None:
        self.services = config.services

    def has_service(self, key: ServiceKey) -> bool:
        return key in self.services

    def has_dest(self, key: ServiceKey, dkey: DestKey) -> bool:
        return self.services[key].find_dest(*dkey) is not None


# ------------------------------------------------------------------ Config

class Config:
    """See the module docstring.

    `clock` is handed to schedulers (mhs needs one); `schedulers` maps a
    scheduler name to its class or None (default: the registry, base.get) --
    tests inject fakes here.
    """

    def __init__(self, clock: Clock | None = None,
                 schedulers: SchedulerLookup | None = None) -> None:
        self.services: dict[ServiceKey, Service] = {}
        self.timeouts = Timeouts()
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._sched_class: SchedulerLookup = schedulers if schedulers is not None else base.get
        self._listeners: list[Listener] = []
        self._trash = DestTrash()

    # ---------------------------------------------------------- listeners
    def subscribe(self, callback: Listener) -> Listener:
        """callback(event, svc, dest) after each successful change."""
        self._listeners.append(callback)
        return callback

    def unsubscribe(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    def _emit(self, event: str, svc: Service | None = None, dest: Dest | None = None) -> None:
        for cb in list(self._listeners):
            cb(event, svc, dest)

    # ------------------------------------------------------------ queries
    def get_service(self, protocol: int, addr: Addr, port: int) -> Service | None:
        return self.services.get((protocol, addr, port))

    def __iter__(self) -> Iterator[Service]:
        return iter(list(self.services.values()))

    # -------------------------------------------------------------- apply
    def apply(self, cmd: ia.Command | str | Iterable[str]) -> None:
        """Apply one command (an ipvsadm.Command, or an argv list / string
        that is parsed first).  Non-mutating commands (-L, -S, -h, -v) are
        accepted and do nothing here.  Raises ConfigError; nothing changed
        then."""
        c = _as_command(cmd)
        try:
            self._check(c, _RealView(self))
        except ConfigError as e:
            raise ConfigError(e.message, line=c.line) from None
        self._do(c)

    def apply_batch(self, cmds: Iterable[ia.Command | str | Iterable[str]]) -> None:
        """All or nothing: dry-run every command on a shadow copy, then apply
        them for real.  The error names the failing command's line."""
        parsed = [_as_command(c) for c in cmds]
        shadow = _ShadowView(self.services)
        for c in parsed:
            try:
                self._check(c, shadow)
            except ConfigError as e:
                raise ConfigError(e.message, line=c.line) from None
            shadow.apply(c)
        with base.one_build_per_batch():
            for c in parsed:
                self._do(c)

    def load_rules(self, text: str, clear: bool = False) -> list[ia.Command]:
        """Parse and apply a rules file / -R input atomically.  clear=True
        behaves like ipvsadm-restore (-C first)."""
        cmds = ia.parse_rules(text)
        if clear:
            cmds.insert(0, ia.Command(ia.FLUSH))
        self.apply_batch(cmds)
        return cmds

    # ------------------------------------------------------------- checks
    def _sched_exists(self, name: str) -> None:
        if self._sched_class(name) is None:
            ia.check_scheduler(name)      # a clear error for unknown names
            raise ConfigError(f"Scheduler not found: '{name}' is not available in this build")

    def _check(self, c: ia.Command, view: _View) -> None:
        cmd = c.cmd
        if cmd not in ia.MUTATING and cmd != ia.ZERO:
            return
        k = c.service_key if c.has_service else None
        if k is None:
            return                    # -C, --set, -Z of everything: nothing to check
        if cmd in (ia.ADD_SERVICE, ia.EDIT_SERVICE):
            if view.has_service(k) == (cmd == ia.ADD_SERVICE):
                raise ConfigError("Service already exists" if cmd == ia.ADD_SERVICE
                                  else "No such service")
            self._sched_exists(c.scheduler)
        elif cmd in (ia.DEL_SERVICE, ia.ZERO):
            if not view.has_service(k):
                raise ConfigError("No such service")
        elif cmd in (ia.ADD_SERVER, ia.EDIT_SERVER, ia.DEL_SERVER):
            if not view.has_service(k):
                raise ConfigError("Service not defined")
            exists = view.has_dest(k, c.dest_key)
            if cmd == ia.ADD_SERVER and exists:
                raise ConfigError("Destination already exists")
            if cmd != ia.ADD_SERVER and not exists:
                raise ConfigError("No such destination")
            if cmd != ia.DEL_SERVER:
                if c.weight < 0:
                    raise ConfigError("weight must be >= 0")
                if c.l_threshold > c.u_threshold:
                    # the kernel's ERANGE, as ipvsadm prints it, with the reason
                    raise ConfigError(f"Numerical result out of range (the lower threshold "
                                      f"-y {c.l_threshold} is above the upper threshold "
                                      f"-x {c.u_threshold})")

    # ------------------------------------------------------------ mutate
    def _new_scheduler(self, svc: Service) -> Scheduler:
        cls = self._sched_class(svc.sched_name)
        if cls is None:               # _check refused the command before
            raise ConfigError(f"Scheduler not found: '{svc.sched_name}'")
        if _accepts_timeouts(cls):
            # mhs re-reads T = max(tcp, tcpfin) on every change (docs/mhs-spec.md rule 4)
            make: Callable[..., Scheduler] = cls
            return make(svc, self.clock, timeouts=self.timeouts.as_tuple)
        return cls(svc, self.clock)

    def _do(self, c: ia.Command) -> None:
        cmd = c.cmd
        if cmd == ia.ADD_SERVICE:
            proto, addr, port = c.service_key
            svc = Service(proto, addr, port, c.scheduler, c.flags, c.timeout, c.netmask,
                          c.options)
            svc.sched = self._new_scheduler(svc)
            self.services[svc.key] = svc
            self._emit("add-service", svc)
        elif cmd == ia.EDIT_SERVICE:
            self._edit_service(self.services[c.service_key], c)
        elif cmd == ia.DEL_SERVICE:
            self._delete_service(self.services[c.service_key])
        elif cmd == ia.FLUSH:
            for svc in list(self.services.values()):
                self._delete_service(svc)
        elif cmd in (ia.ADD_SERVER, ia.EDIT_SERVER, ia.DEL_SERVER):
            self._dest_command(self.services[c.service_key], c)
        elif cmd == ia.SET:
            self._set_timeouts(c.set_timeouts or (0, 0, 0))
        elif cmd == ia.ZERO:
            self.zero(c.service_key if c.has_service else None)

    def _edit_service(self, svc: Service, c: ia.Command) -> None:
        """-E: the whole definition replaced; a new scheduler object when the
        name or the userlb options change."""
        rebind = (svc.sched_name != c.scheduler or svc.options != c.options
                  or svc.sched is None)
        svc.sched_name = c.scheduler
        svc.flags = c.flags
        svc.timeout = c.timeout
        svc.netmask = c.netmask if c.netmask is not None else svc.full_netmask(svc.af)
        svc.options = dict(c.options)
        if rebind:
            old = svc.sched
            svc.sched = self._new_scheduler(svc)
            if old is not None:
                old.done_service()
        elif svc.sched is not None:
            svc.sched.upd_service()
        self._emit("edit-service", svc)

    def _dest_command(self, svc: Service, c: ia.Command) -> None:
        """-a / -e / -d with model.Service's semantics."""
        if c.cmd == ia.ADD_SERVER:
            daddr, dport = c.dest_key
            d = svc.add_dest(daddr, dport, c.weight, c.fwd, c.u_threshold, c.l_threshold,
                             trash=self._trash)
            d.tun = c.tun
            self._emit("add-dest", svc, d)
            return
        found = svc.find_dest(*c.dest_key)
        if found is None:             # _check refused the command before
            raise ConfigError("No such destination")
        if c.cmd == ia.EDIT_SERVER:
            svc.edit_dest(found, c.weight, c.fwd, c.u_threshold, c.l_threshold)
            found.tun = c.tun
            self._emit("edit-dest", svc, found)
        else:
            svc.del_dest(found, trash=self._trash)
            self._emit("delete-dest", svc, found)

    def _set_timeouts(self, values: tuple[int, int, int]) -> None:
        """--set tcp tcpfin udp (0 = unchanged)."""
        t = self.timeouts
        tcp, fin, udp = values
        if tcp:
            t.tcp = tcp
        if fin:
            t.tcpfin = fin
        if udp:
            t.udp = udp
        self._emit("timeouts")

    def _delete_service(self, svc: Service) -> None:
        del self.services[svc.key]
        svc.unlink_dests(trash=self._trash)
        self._emit("delete-service", svc)

    def purge_trash(self) -> None:
        """Forget removed destinations (after this, re-adding one creates a
        fresh Dest).  The engine may call it when no entry refers to them."""
        self._trash.clear()

    # ---------------------------------------------------------------- -Z
    def zero(self, key: ServiceKey | None = None) -> None:
        """ipvsadm -Z [service]: reset counters.  Raises ConfigError for an
        unknown service."""
        if key is not None:
            svc = self.services.get(key)
            if svc is None:
                raise ConfigError("No such service")
            targets = [svc]
        else:
            targets = list(self.services.values())
        for svc in targets:
            svc.stats.zero()
            for d in svc.dests:
                d.stats.zero()
        self._emit("zero", targets[0] if key is not None else None)

    # ---------------------------------------------------------------- -S
    def save(self, with_timeouts: bool = True) -> list[str]:
        """ipvsadm -S -n output (list of lines, no newlines); see
        listing.save_lines."""
        from .listing import save_lines
        return save_lines(self, with_timeouts=with_timeouts)


_TAKES_TIMEOUTS: dict[type[Scheduler], bool] = {}


def _accepts_timeouts(cls: type[Scheduler]) -> bool:
    """Does the scheduler class take `timeouts` (looked up once per class)?"""
    got = _TAKES_TIMEOUTS.get(cls)
    if got is None:
        try:
            got = "timeouts" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            got = False
        _TAKES_TIMEOUTS[cls] = got
    return got


def _as_command(cmd: ia.Command | str | Iterable[str]) -> ia.Command:
    if isinstance(cmd, ia.Command):
        return cmd
    if isinstance(cmd, str):
        c = ia.parse_line(cmd)
        if c is None:
            raise ConfigError("empty command")
        return c
    return ia.parse_argv(list(cmd))
