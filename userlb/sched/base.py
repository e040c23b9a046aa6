"""The scheduler interface, shaped like the kernel's struct ip_vs_scheduler,
and the name registry (`-s NAME`).

Life cycle, as in the kernel:
  * `cls(svc, clock)`            init_service: bound to one Service
  * `add_dest(dest)`, `del_dest(dest)`, `upd_dest(dest)`
                                 called *after* svc.dests has changed
  * `schedule(caddr, cport)`     -> Dest or None; never raises, allocates
                                 nothing but its answer.  caddr/cport are the
                                 client's address and source port (for an ICMP
                                 error being scheduled: the embedded packet's
                                 destination, i.e. still the client).
  * `done_service()`             unbound (service deleted / scheduler changed)

A scheduler that rebuilds tables builds the new table aside and publishes it
with one assignment, so a packet never sees a half-built table.

Schedulers register themselves with @register at import; concrete modules
are imported by userlb.sched (package __init__), never by the engine.
"""

_REGISTRY = {}


def register(cls):
    """Class decorator: make `cls` available as `-s cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def get(name):
    """The scheduler class for `name`, or None."""
    import userlb.sched  # noqa: F401  (imports every concrete scheduler)
    return _REGISTRY.get(name)


def names():
    import userlb.sched  # noqa: F401
    return sorted(_REGISTRY)


def create(name, svc, clock=None):
    """Instantiate scheduler `name` for `svc` (KeyError if unknown)."""
    cls = get(name)
    if cls is None:
        raise KeyError(name)
    return cls(svc, clock)


def dest_unavailable(d):
    """IPVS's availability test: current weight <= 0 or overloaded."""
    return d.weight <= 0 or d.overloaded


class Scheduler:
    """Base class of every scheduler; the capabilities below are declared
    here with their defaults, so callers never probe with getattr:

    * ``stateless``: True when the scheduler implements ``schedule_sl``
      (mhs: forward without a connection entry while its tables agree).
    * ``schedule_sl(caddr, cport, is_tcp, syn, now)`` -> (Dest or None,
      need_state): only for stateless schedulers.
    * ``referenced_dests()``: the destinations its tables still point to
      (a removed mhs backend stays referenced by the old table); default:
      the service's destinations.
    * ``table_endpoints()``: per lookup slot the Dest or None, for the
      table schedulers (mh, mh-backport, sh, mhs); None for the others.
    * ``unstable_slots(now)``: the number of slots whose old and new
      tables disagree (mhs); None for the others.
    * ``upd_service()``: the service's flags or options changed.
    """

    name = ""
    stateless = False

    def __init__(self, svc, clock=None):
        self.svc = svc
        self.clock = clock

    def done_service(self):
        pass

    def add_dest(self, dest):
        self.update()

    def del_dest(self, dest):
        self.update()

    def upd_dest(self, dest):
        self.update()

    def upd_service(self):
        """The service's flags changed; schedulers read svc.flags at lookup
        time, so by default there is nothing to do."""

    def update(self):
        """Rebuild whatever depends on the destination list."""

    def schedule(self, caddr, cport):
        raise NotImplementedError

    def schedule_sl(self, caddr, cport, is_tcp, syn, now):
        raise NotImplementedError(f"{self.name} is not a stateless scheduler")

    def referenced_dests(self):
        return self.svc.dests

    def table_endpoints(self):
        return None

    def unstable_slots(self, now=None):
        return None
