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
    name = ""
    #: True for schedulers that implement schedule_sl (mhs)
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

    def update(self):
        """Rebuild whatever depends on the destination list."""

    def schedule(self, caddr, cport):
        raise NotImplementedError
