"""The configuration state machine: services, destinations and timeouts,
changed by ipvsadm commands with the Linux kernel's semantics.

Theory of operation
-------------------
`Config` holds the control plane's truth:

* `services`: dict (protocol, addr, port) -> model.Service, in creation order
  (that is also what `-L --nosort` shows; the kernel's hash order is not
  reproduced).  Each Service's `dests` list is in kernel order: the most
  recently added destination first (IPVS.md §1.6).  A new list object is
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

Kernel semantics reproduced (IPVS.md §1.5, §1.6, §1.8, §4.4, §6):

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
* -a inserts at the HEAD of svc.dests and sets last_weight = weight; a
  destination deleted earlier from the same service is revived from the
  "trash" (the same Dest object, counters kept), as the kernel does.
* -e updates weight (last_weight only when the new weight is non-zero),
  forwarding, thresholds; the overload flag is cleared when the new upper
  threshold is 0 or larger than the old one.
* -d unlinks the destination and marks it `available = False` (trash).
* Scheduler hooks add_dest / del_dest / upd_dest run after the list changed.
* userlb refuses -g / -i for now: "userlb only forwards with masquerading
  (-m) for now".

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

The engine keeps its VIP -> service dispatch table up to date from the
*-service events (or simply rebuilds it from `config.services` on each one).
`config.get_service(protocol, addr, port)` looks one up.

-Z: `zero(key=None)` resets the plain counters of model.Stats in place
(service and its destinations, or everything) and emits "zero" so that the
stats/rate-estimator module can reset its own state.
"""
import inspect

from ..clock import MonotonicClock
from ..errors import ConfigError
from ..model import FWD_MASQ, Dest, Service
from ..sched import base
from . import ipvsadm as ia

DEFAULT_TIMEOUTS = (900, 120, 300)

FORWARDING_ERROR = "userlb only forwards with masquerading (-m) for now"


class Timeouts:
    """ipvsadm --set values, seconds: tcp (ESTABLISHED), tcpfin (FIN_WAIT), udp."""
    __slots__ = ("tcp", "tcpfin", "udp")

    def __init__(self, tcp=900, tcpfin=120, udp=300):
        self.tcp, self.tcpfin, self.udp = tcp, tcpfin, udp

    def as_tuple(self):
        return (self.tcp, self.tcpfin, self.udp)

    def __repr__(self):
        return f"Timeouts(tcp={self.tcp}, tcpfin={self.tcpfin}, udp={self.udp})"


# ------------------------------------------------------------ state views
# The checks run against a "view" with five questions/updates; the real
# Config and the cheap shadow used to dry-run a batch both provide them.

class _ShadowView:
    """Service keys -> set of destination keys; nothing else."""

    def __init__(self, services):
        self.svcs = {k: {d.key for d in s.dests} for k, s in services.items()}

    def has_service(self, key):
        return key in self.svcs

    def has_dest(self, key, dkey):
        return dkey in self.svcs[key]

    def apply(self, c):
        k = c.service_key
        if c.cmd == ia.ADD_SERVICE:
            self.svcs[k] = set()
        elif c.cmd == ia.DEL_SERVICE:
            del self.svcs[k]
        elif c.cmd == ia.FLUSH:
            self.svcs.clear()
        elif c.cmd == ia.ADD_SERVER:
            self.svcs[k].add((c.daddr, c.dport))
        elif c.cmd == ia.DEL_SERVER:
            self.svcs[k].discard((c.daddr, c.dport))


class _RealView:
    def __init__(self, config):
        self.services = config.services

    def has_service(self, key):
        return key in self.services

    def has_dest(self, key, dkey):
        return self.services[key].find_dest(*dkey) is not None


# ------------------------------------------------------------------ Config

class Config:
    """See the module docstring.

    `clock` is handed to schedulers (mhs needs one); `schedulers` maps a
    scheduler name to its class or None (default: the registry, base.get) --
    tests inject fakes here.
    """

    def __init__(self, clock=None, schedulers=None):
        self.services = {}
        self.timeouts = Timeouts(*DEFAULT_TIMEOUTS)
        self.clock = clock if clock is not None else MonotonicClock()
        self._sched_class = schedulers if schedulers is not None else base.get
        self._listeners = []
        self._trash = {}          # (service key, dest key) -> Dest

    # ---------------------------------------------------------- listeners
    def subscribe(self, callback):
        """callback(event, svc, dest) after each successful change."""
        self._listeners.append(callback)
        return callback

    def unsubscribe(self, callback):
        self._listeners.remove(callback)

    def _emit(self, event, svc=None, dest=None):
        for cb in list(self._listeners):
            cb(event, svc, dest)

    # ------------------------------------------------------------ queries
    def get_service(self, protocol, addr, port):
        return self.services.get((protocol, addr, port))

    def __iter__(self):
        return iter(list(self.services.values()))

    # -------------------------------------------------------------- apply
    def apply(self, cmd):
        """Apply one command (an ipvsadm.Command, or an argv list / string
        that is parsed first).  Non-mutating commands (-L, -S, -h, -v) are
        accepted and do nothing here.  Raises ConfigError; nothing changed
        then."""
        cmd = _as_command(cmd)
        try:
            self._check(cmd, _RealView(self))
        except ConfigError as e:
            raise ConfigError(e.message, line=cmd.line) from None
        self._do(cmd)

    def apply_batch(self, cmds):
        """All or nothing: dry-run every command on a shadow copy, then apply
        them for real.  The error names the failing command's line."""
        cmds = [_as_command(c) for c in cmds]
        shadow = _ShadowView(self.services)
        for c in cmds:
            try:
                self._check(c, shadow)
            except ConfigError as e:
                raise ConfigError(e.message, line=c.line) from None
            shadow.apply(c)
        for c in cmds:
            self._do(c)

    def load_rules(self, text, clear=False):
        """Parse and apply a rules file / -R input atomically.  clear=True
        behaves like ipvsadm-restore (-C first)."""
        cmds = ia.parse_rules(text)
        if clear:
            cmds.insert(0, ia.Command(ia.FLUSH))
        self.apply_batch(cmds)
        return cmds

    # ------------------------------------------------------------- checks
    def _sched_exists(self, name):
        if self._sched_class(name) is None:
            ia.check_scheduler(name)      # a clear error for unknown names
            raise ConfigError(f"Scheduler not found: '{name}' is not available in this build")

    def _check(self, c, view):
        cmd = c.cmd
        if cmd not in ia.MUTATING and cmd != ia.ZERO:
            return
        k = c.service_key if c.has_service else None
        if cmd == ia.ADD_SERVICE:
            if view.has_service(k):
                raise ConfigError("Service already exists")
            self._sched_exists(c.sched_name)
        elif cmd == ia.EDIT_SERVICE:
            if not view.has_service(k):
                raise ConfigError("No such service")
            self._sched_exists(c.sched_name)
        elif cmd == ia.DEL_SERVICE:
            if not view.has_service(k):
                raise ConfigError("No such service")
        elif cmd == ia.ZERO:
            if k is not None and not view.has_service(k):
                raise ConfigError("No such service")
        elif cmd in (ia.ADD_SERVER, ia.EDIT_SERVER, ia.DEL_SERVER):
            if not view.has_service(k):
                raise ConfigError("Service not defined")
            exists = view.has_dest(k, (c.daddr, c.dport))
            if cmd == ia.ADD_SERVER and exists:
                raise ConfigError("Destination already exists")
            if cmd != ia.ADD_SERVER and not exists:
                raise ConfigError("No such destination")
            if cmd != ia.DEL_SERVER:
                if c.fwd != FWD_MASQ:
                    raise ConfigError(FORWARDING_ERROR)
                if c.weight < 0:
                    raise ConfigError("weight must be >= 0")
                if c.l_threshold > c.u_threshold:
                    raise ConfigError("lower threshold (-y) is higher than upper threshold (-x)")

    # ------------------------------------------------------------ mutate
    def _new_scheduler(self, svc):
        cls = self._sched_class(svc.sched_name)
        if _accepts_timeouts(cls):
            # mhs re-reads T = max(tcp, tcpfin) on every change (MHS.md rule 4)
            return cls(svc, self.clock, timeouts=self.timeouts.as_tuple)
        return cls(svc, self.clock)

    def _do(self, c):
        cmd = c.cmd
        if cmd == ia.ADD_SERVICE:
            svc = Service(c.protocol, c.addr, c.port, c.sched_name, c.flags,
                          c.timeout, c.netmask, c.options)
            svc.sched = self._new_scheduler(svc)
            self.services[svc.key] = svc
            self._emit("add-service", svc)
        elif cmd == ia.EDIT_SERVICE:
            svc = self.services[c.service_key]
            rebind = (svc.sched_name != c.sched_name or svc.options != c.options
                      or svc.sched is None)
            svc.sched_name = c.sched_name
            svc.flags = c.flags
            svc.timeout = c.timeout
            svc.netmask = c.netmask
            svc.options = dict(c.options)
            if rebind:
                old = svc.sched
                svc.sched = self._new_scheduler(svc)
                if old is not None:
                    old.done_service()
            else:
                svc.sched.upd_service()
            self._emit("edit-service", svc)
        elif cmd == ia.DEL_SERVICE:
            self._delete_service(self.services[c.service_key])
        elif cmd == ia.FLUSH:
            for svc in list(self.services.values()):
                self._delete_service(svc)
        elif cmd == ia.ADD_SERVER:
            svc = self.services[c.service_key]
            dkey = (c.daddr, c.dport)
            d = self._trash.pop((svc.key, dkey), None)
            if d is None:
                d = Dest(c.daddr, c.dport, c.weight, c.fwd, c.u_threshold, c.l_threshold)
            else:
                self._update_dest(d, c, add=True)
            d.svc = svc
            d.available = True
            svc.dests = [d] + svc.dests
            svc.sched.add_dest(d)
            self._emit("add-dest", svc, d)
        elif cmd == ia.EDIT_SERVER:
            svc = self.services[c.service_key]
            d = svc.find_dest(c.daddr, c.dport)
            self._update_dest(d, c, add=False)
            svc.sched.upd_dest(d)
            self._emit("edit-dest", svc, d)
        elif cmd == ia.DEL_SERVER:
            svc = self.services[c.service_key]
            d = svc.find_dest(c.daddr, c.dport)
            svc.dests = [x for x in svc.dests if x is not d]
            d.available = False
            self._trash[(svc.key, d.key)] = d
            svc.sched.del_dest(d)
            self._emit("delete-dest", svc, d)
        elif cmd == ia.SET:
            t = self.timeouts
            tcp, fin, udp = c.set_timeouts
            if tcp:
                t.tcp = tcp
            if fin:
                t.tcpfin = fin
            if udp:
                t.udp = udp
            self._emit("timeouts")
        elif cmd == ia.ZERO:
            self.zero(c.service_key if c.has_service else None)

    @staticmethod
    def _update_dest(d, c, add):
        """The kernel's __ip_vs_update_dest."""
        d.weight = c.weight
        if add or c.weight != 0:
            d.last_weight = c.weight
        d.fwd = c.fwd
        old_u = d.u_threshold
        d.u_threshold = c.u_threshold
        d.l_threshold = c.l_threshold
        if d.u_threshold == 0 or d.u_threshold > old_u:
            d.overloaded = False

    def _delete_service(self, svc):
        del self.services[svc.key]
        dests = svc.dests
        svc.dests = []
        for d in dests:
            d.available = False
            self._trash[(svc.key, d.key)] = d
        if svc.sched is not None:
            svc.sched.done_service()
        self._emit("delete-service", svc)

    def purge_trash(self):
        """Forget removed destinations (after this, re-adding one creates a
        fresh Dest).  The engine may call it when no entry refers to them."""
        self._trash.clear()

    # ---------------------------------------------------------------- -Z
    def zero(self, key=None):
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
            _zero_stats(svc.stats)
            for d in svc.dests:
                _zero_stats(d.stats)
        self._emit("zero", targets[0] if key is not None else None)

    # ---------------------------------------------------------------- -S
    def save(self, with_timeouts=True):
        """ipvsadm -S -n output (list of lines, no newlines); see
        listing.save_lines."""
        from .listing import save_lines
        return save_lines(self, with_timeouts=with_timeouts)


def _accepts_timeouts(cls):
    try:
        return "timeouts" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _zero_stats(st):
    st.conns = st.inpkts = st.outpkts = st.inbytes = st.outbytes = 0


def _as_command(cmd):
    if isinstance(cmd, ia.Command):
        return cmd
    if isinstance(cmd, str):
        c = ia.parse_line(cmd)
        if c is None:
            raise ConfigError("empty command")
        return c
    return ia.parse_argv(list(cmd))
