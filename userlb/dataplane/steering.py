"""Steering: what sends traffic into the TUN device, installed with pyroute2
and removed again exactly (a module of the driver layer, beside tun.py).
docs/steering.md describes the whole layout.

`TunRoutes` installs a route per VIP (/32 or /128) via the TUN; for the real
servers' replies a policy rule per source (each real server address, plus
optional extra prefixes) pointing to a dedicated table whose default route is
the TUN, guarded by two rules that keep locally generated traffic (`iif lo`)
and what the engine writes back (`iif TUN`) in the main table; forwarding
sysctls on, reverse-path filtering off for the device.

VIPs that are local addresses of the director (on `lo`, a dummy, or added
by keepalived's VRRP): the route is not enough (the local table comes
first), so for each service whose VIP is local a rule `to VIP ipproto P
[dport X] lookup TABLE` sends exactly that service's packets into the TUN,
ahead of local delivery: while such a rule exists (per family) the kernel's
`from all lookup local` rule is moved from priority 0 to PRIO_LOCAL, with a
guard `iif lo lookup local` (PRIO_LOCAL_GUARD) before the service rules so
the director's own traffic to its addresses stays local.  An `AddressWatch`
(localvip.py) follows addresses that appear or disappear while it runs.

Ownership: every route and rule carries protocol USERLB_PROTO (245).  The
rules of one instance are those with `iif DEVICE` and those that look up its
table; the `iif lo` guards and the moved local rule are shared by every
instance in the namespace and go with the last one.  At start, left-overs of
a dead instance (rules of the same device, rules pointing at a table with no
route left, `iif` rules of a device that no longer exists) are removed
before anything is added; `cleanup()` removes everything userlb installed in
the namespace (or one device's part) and puts the local rule back at 0.
`update()` adds what is new before it removes what is gone; `remove()`
deletes what this instance owns (and the shared rules when it is the last)
and restores the sysctls it changed.
"""
import asyncio
import errno
import ipaddress
import socket
import threading

MAIN_TABLE = 254
LOCAL_TABLE = 255
USERLB_PROTO = 245          # rtm_protocol / FRA_PROTOCOL of everything userlb installs
KERNEL_PROTO = 2            # RTPROT_KERNEL: the local rule as the kernel creates it
PRIO_LOCAL_GUARD = 1        # iif lo lookup local (shared)
PRIO_LOCAL_VIP = 2          # to VIP ipproto P dport X lookup TABLE (per instance)
PRIO_LOCAL = 3              # from all lookup local, moved from 0 (shared)
FAMILIES = (socket.AF_INET, socket.AF_INET6)
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}
# the kernel's answers to deleting a route or rule that is gone already
# (e.g. with its device)
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)


class SteeringError(Exception):
    """A route or rule could not be added or removed (message is for humans)."""


def _sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name):
    with open(_sysctl_path(name)) as f:
        return f.read().strip()


def write_sysctl(name, value):
    with open(_sysctl_path(name), "w") as f:
        f.write(str(value))


def _netlink(fn, *args):
    """pyroute2's synchronous API cannot run on a thread whose asyncio loop
    is running (SIGHUP handlers of `userlb run`): do it in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    box = {}

    def run():
        try:
            box["r"] = fn(*args)
        except BaseException as e:   # noqa: BLE001 - re-raised below
            box["e"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box.get("r")


# ------------------------------------------------------------------ kernel state

def _key(kind, kw):
    return (kind, tuple(sorted(kw.items())))


def _rule_kw(msg):
    """The add/del arguments that name a dumped rule."""
    kw = dict(family=msg["family"], priority=msg.get_attr("FRA_PRIORITY") or 0,
              table=msg.get_attr("FRA_TABLE") or msg["table"], protocol=USERLB_PROTO)
    for attr, name in (("FRA_IIFNAME", "iifname"), ("FRA_IP_PROTO", "ip_proto"),
                       ("FRA_DPORT_RANGE", "dport_range")):
        v = msg.get_attr(attr)
        if v is not None:
            kw[name] = v
    for attr, name, lname in (("FRA_SRC", "src", "src_len"), ("FRA_DST", "dst", "dst_len")):
        v = msg.get_attr(attr)
        if v is not None:
            kw[name] = str(ipaddress.ip_address(v))
            kw[lname] = msg[lname]
    return kw


def _our_rules(ipr):
    """Every rule with protocol USERLB_PROTO: list of add/del kwargs."""
    out = []
    for fam in FAMILIES:
        for msg in ipr.get_rules(family=fam):
            if msg.get_attr("FRA_PROTOCOL") == USERLB_PROTO:
                out.append(_rule_kw(msg))
    return out


def _our_routes(ipr):
    """Every route with protocol USERLB_PROTO (any table): list of kwargs."""
    out = []
    for fam in FAMILIES:
        for msg in ipr.get_routes(family=fam):
            if msg["proto"] != USERLB_PROTO:
                continue
            dst = msg.get_attr("RTA_DST")
            out.append(dict(family=fam, dst=dst or ("0.0.0.0" if fam == socket.AF_INET else "::"),
                            dst_len=msg["dst_len"], oif=msg.get_attr("RTA_OIF"),
                            table=msg.get_attr("RTA_TABLE") or msg["table"],
                            proto=USERLB_PROTO))
    return out


def _tables_with_routes(ipr):
    """{(family, table)} of every table that holds at least one route."""
    out = set()
    for fam in FAMILIES:
        for msg in ipr.get_routes(family=fam):
            out.add((fam, msg.get_attr("RTA_TABLE") or msg["table"]))
    return out


def _links(ipr):
    return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


class _DeviceGone(Exception):
    """The TUN device no longer exists (nothing to put back)."""


def _link_exists(name):
    """Does this namespace have a device of that name (SIOCGIFINDEX)?"""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _is_shared(kw):
    """The rules every instance shares: the `iif lo` guards and the moved local rule."""
    if kw.get("iifname") == "lo" and kw["table"] in (MAIN_TABLE, LOCAL_TABLE):
        return True
    return kw["table"] == LOCAL_TABLE and "iifname" not in kw and "dst" not in kw


def _is_dead(kw, tables, links):
    """A rule of an instance that is gone: its device no longer exists, or
    its table has no route left (the TUN device took them with it)."""
    if _is_shared(kw):
        return False
    if "iifname" in kw and kw["iifname"] not in links:
        return True
    if kw["table"] not in (MAIN_TABLE, LOCAL_TABLE) and (kw["family"], kw["table"]) not in tables:
        return True
    return False


def _delete(ipr, kind, kw):
    """Delete one route or rule; gone already is fine.  The error, or None."""
    try:
        getattr(ipr, kind)("del", **kw)
    except Exception as e:   # noqa: BLE001 - pyroute2 raises NetlinkError and others
        if getattr(e, "code", None) not in _GONE:
            return f"{kind} {_describe_kw(kind, kw)}: {e}"
    return None


def _add(ipr, kind, kw, check_owner=False):
    try:
        getattr(ipr, kind)("add", **kw)
    except Exception as e:   # noqa: BLE001
        if getattr(e, "code", None) == errno.EEXIST:
            if check_owner:
                _check_route_owner(ipr, kw)
            return      # there already (ours, from a previous run or another instance)
        raise SteeringError(f"cannot add {kind} {_describe_kw(kind, kw)}: {e}") from None


def _check_route_owner(ipr, kw):
    """The main-table route of a routed (not local) VIP that already exists
    must lead into our device: one that leads elsewhere (another `userlb run` on
    another TUN device with the same VIP, or a route of the host) would take
    the traffic, and this director would report ready and never see a packet."""
    for msg in ipr.get_routes(family=kw["family"], table=kw.get("table", MAIN_TABLE)):
        dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if kw["family"] == socket.AF_INET else "::")
        if dst != kw["dst"] or msg["dst_len"] != kw["dst_len"]:
            continue
        oif = msg.get_attr("RTA_OIF")
        if oif != kw["oif"]:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            other = names.get(oif, f"device {oif}")
            owner = ("another userlb run" if msg["proto"] == USERLB_PROTO
                     else "a route that is not userlb's")
            raise SteeringError(f"{_describe_kw('route', kw)} already leads into {other} "
                                f"({owner}); refusing to start a director that would never "
                                f"see its packets (stop the other one, or remove the route)")


def _describe_kw(kind, kw):
    if kind == "route":
        return (f"{kw['dst']}/{kw['dst_len']}"
                + (f" table {kw['table']}" if kw.get("table", MAIN_TABLE) != MAIN_TABLE else ""))
    parts = [f"pref {kw['priority']}"]
    if "src" in kw:
        parts.append(f"from {kw['src']}/{kw['src_len']}")
    if "dst" in kw:
        parts.append(f"to {kw['dst']}/{kw['dst_len']}")
    if "iifname" in kw:
        parts.append(f"iif {kw['iifname']}")
    if "ip_proto" in kw:
        parts.append(f"ipproto {PROTO_NAMES.get(kw['ip_proto'], kw['ip_proto'])}")
    if "dport_range" in kw:
        parts.append(f"dport {kw['dport_range'].split(':')[0]}")
    parts.append(f"lookup {kw['table']}")
    return " ".join(parts)


def _local_rules_at(ipr, fam, priority):
    """Rules `from all lookup local` (any protocol) at this priority."""
    out = []
    for msg in ipr.get_rules(family=fam):
        if ((msg.get_attr("FRA_PRIORITY") or 0) == priority
                and (msg.get_attr("FRA_TABLE") or msg["table"]) == LOCAL_TABLE
                and msg["src_len"] == 0 and msg["dst_len"] == 0
                and msg.get_attr("FRA_IIFNAME") is None and msg.get_attr("FRA_IP_PROTO") is None):
            out.append(msg)
    return out


def _sync_shared(ipr, errors, keep_guard, move_local):
    """Bring the shared rules to what the instances still present need.
    keep_guard: {(family, priority)} of `iif lo lookup main` guards still
    needed; move_local: the families whose local rule must be moved."""
    present = [kw for kw in _our_rules(ipr) if _is_shared(kw)]
    for fam in FAMILIES:
        moved = dict(family=fam, priority=PRIO_LOCAL, table=LOCAL_TABLE, protocol=USERLB_PROTO)
        guard = dict(family=fam, priority=PRIO_LOCAL_GUARD, iifname="lo", table=LOCAL_TABLE,
                     protocol=USERLB_PROTO)
        if fam in move_local:
            # local lookup at its new place first, then the guard, then the
            # kernel's rule at 0 goes: never a moment without local delivery
            _add(ipr, "rule", moved)
            _add(ipr, "rule", guard)
            for msg in _local_rules_at(ipr, fam, 0):
                if msg.get_attr("FRA_PROTOCOL") != USERLB_PROTO:
                    try:
                        ipr.rule("del", family=fam, priority=0, table=LOCAL_TABLE)
                    except Exception as e:   # noqa: BLE001
                        if getattr(e, "code", None) not in _GONE:
                            errors.append(f"cannot move the local rule: {e}")
        else:
            if any(kw["table"] == LOCAL_TABLE for kw in present if kw["family"] == fam) \
                    and not _local_rules_at(ipr, fam, 0):
                try:
                    ipr.rule("add", family=fam, priority=0, table=LOCAL_TABLE,
                             protocol=KERNEL_PROTO)
                except Exception as e:   # noqa: BLE001
                    if getattr(e, "code", None) != errno.EEXIST:
                        errors.append(f"cannot put the local rule back at 0: {e}")
                        continue
            for kw in (guard, moved):
                if _key("rule", kw) in {_key("rule", p) for p in present}:
                    err = _delete(ipr, "rule", kw)
                    if err:
                        errors.append(err)
    for kw in present:
        if kw["table"] == MAIN_TABLE and (kw["family"], kw["priority"]) not in keep_guard:
            err = _delete(ipr, "rule", kw)
            if err:
                errors.append(err)


def _needs_of_others(rules, own):
    """What the other instances' rules need of the shared ones."""
    keep_guard, move_local = set(), set()
    for kw in rules:
        if _is_shared(kw) or own(kw):
            continue
        if "src" in kw:
            keep_guard.add((kw["family"], kw["priority"] - 1))
        if kw["priority"] == PRIO_LOCAL_VIP and "dst" in kw:
            move_local.add(kw["family"])
    return keep_guard, move_local


def cleanup(ifname=None, table=None):
    """Remove what userlb installed in this namespace: everything (ifname
    None), or one device's part (its `iif` rules, the rules of `table` or of
    the tables routed into the device, and what dead instances left), plus
    the shared rules no remaining instance needs.  The local rule goes back
    to priority 0.  Returns (removed descriptions, errors)."""
    return _netlink(_cleanup, ifname, table)


def _cleanup(ifname, table):
    from pyroute2 import IPRoute
    removed, errors = [], []
    with IPRoute() as ipr:
        links = _links(ipr)
        routes = _our_routes(ipr)
        tables = set()
        if table is not None:
            tables.add(table)
        if ifname is not None and ifname in links:
            idx = socket.if_nametoindex(ifname)
            tables |= {r["table"] for r in routes if r["oif"] == idx and r["table"] != MAIN_TABLE}
        rules = _our_rules(ipr)
        have = _tables_with_routes(ipr)

        def own(kw):
            if ifname is None:
                return True
            return (kw.get("iifname") == ifname or kw["table"] in tables
                    or _is_dead(kw, have, links))
        for kw in rules:
            if not _is_shared(kw) and own(kw):
                err = _delete(ipr, "rule", kw)
                (errors.append(err) if err else removed.append("rule " + _describe_kw("rule", kw)))
        for r in routes:
            if ifname is None or r["table"] in tables or (
                    ifname in links and r["oif"] == socket.if_nametoindex(ifname)):
                err = _delete(ipr, "route", r)
                (errors.append(err) if err else removed.append("route "
                                                               + _describe_kw("route", r)))
        before = [kw for kw in _our_rules(ipr) if _is_shared(kw)]
        keep_guard, move_local = _needs_of_others(_our_rules(ipr), lambda kw: False)
        _sync_shared(ipr, errors, keep_guard, move_local)
        after = {_key("rule", kw) for kw in _our_rules(ipr)}
        removed += ["rule " + _describe_kw("rule", kw) for kw in before
                    if _key("rule", kw) not in after]
    return removed, errors


# ------------------------------------------------------------------ TunRoutes

class TunRoutes:
    """Routes and rules that steer VIP traffic and real-server replies into a
    TUN device; `remove()` deletes what this instance installed and restores
    the sysctls it changed.

    vips: addresses (IPv4 int / IPv6 16 bytes, model.py convention);
    sources: addresses or (address, prefixlen) tuples whose packets (the real
    servers' replies, ICMP errors from routers on the server side) go into the
    device; services: (protocol, address, port) of every service (for the VIPs
    that are local addresses).  table/priority default to values derived from
    the device index so that two instances on two devices do not collide.
    watch: follow local addresses as they appear/disappear (AddressWatch).
    all_vips: the per-service rules for every service from the start, local
    VIP or not (`userlb run --vip-rules always`): a VIP that VRRP adds later
    is steered from its first packet, with no window in which the local
    stack answers it.
    """

    def __init__(self, ifname, ifindex, vips=(), sources=(), table=None, priority=None,
                 services=(), watch=True, log=None, all_vips=False):
        self.ifname = ifname
        self.ifindex = ifindex
        self.vips = _prefixes(vips)
        self.sources = _prefixes(sources)
        self.services = _services(services)
        self.table = table if table is not None else 20000 + ifindex
        self.priority = priority if priority is not None else 10000
        self.local = set()       # local addresses (text) of the namespace
        self.watch = watch
        self.all_vips = all_vips
        self.log = log or (lambda msg: None)
        self.replaced = []       # left-overs of a dead instance removed by install()
        self._installed = set()  # keys of what is in place
        self._sysctls = []       # (name, old value)
        self.sysctl_problems = []  # sysctls that could not be set (logged by run)
        self._lock = threading.RLock()
        self._watch = None

    # ------------------------------------------------------------ desired
    def local_services(self):
        """The services steered by a rule: those whose VIP is a local address
        right now (every service with all_vips)."""
        if self.all_vips:
            return list(self.services)
        return [(p, fam, a, port) for p, fam, a, port in self.services if a in self.local]

    def _desired(self):
        """What should be installed for the current vips/sources, in order."""
        out = []
        for fam, addr, plen in self.vips:
            out.append(("route", dict(family=fam, dst=addr, dst_len=plen, oif=self.ifindex,
                                      table=MAIN_TABLE, proto=USERLB_PROTO)))
        lsvc = self.local_services()
        fams_src = {fam for fam, _a, _p in self.sources}
        for fam in sorted(fams_src | {fam for _p, fam, _a, _port in lsvc}):
            dflt = "0.0.0.0" if fam == socket.AF_INET else "::"
            out.append(("route", dict(family=fam, dst=dflt, dst_len=0, oif=self.ifindex,
                                      table=self.table, proto=USERLB_PROTO)))
        for fam in sorted(fams_src):
            # guard: what the engine writes back uses the main table (the
            # `iif lo` guard is shared: _sync_shared)
            out.append(("rule", dict(family=fam, iifname=self.ifname, table=MAIN_TABLE,
                                     priority=self.priority, protocol=USERLB_PROTO)))
        for fam, addr, plen in self.sources:
            out.append(("rule", dict(family=fam, src=addr, src_len=plen, table=self.table,
                                     priority=self.priority + 1, protocol=USERLB_PROTO)))
        for proto, fam, addr, port in lsvc:
            kw = dict(family=fam, dst=addr, dst_len=32 if fam == socket.AF_INET else 128,
                      ip_proto=proto, table=self.table, priority=PRIO_LOCAL_VIP,
                      protocol=USERLB_PROTO)
            if port:
                kw["dport_range"] = f"{port}:{port}"
            out.append(("rule", kw))
        return out

    def _own(self, kw):
        return kw.get("iifname") == self.ifname or kw["table"] == self.table

    # ------------------------------------------------------------ apply
    def _apply(self, ipr, errors):
        """Reconcile the kernel with _desired(): add what is missing (routes
        first), then the shared rules, then delete what is ours and not wanted."""
        want = self._desired()
        wkeys = {_key(k, kw) for k, kw in want}
        for kind, kw in want:
            if _key(kind, kw) not in self._installed:
                # a routed VIP is steered by its main-table route alone; a
                # local VIP by per-service rules, which instances may share
                routed_vip = (kind == "route" and kw["table"] == MAIN_TABLE
                              and kw["dst"] not in self.local)
                _add(ipr, kind, kw, check_owner=routed_vip)
                self._installed.add(_key(kind, kw))
        rules = _our_rules(ipr)
        keep_guard, move_local = _needs_of_others(rules, self._own)
        keep_guard |= {(fam, self.priority) for fam, _a, _p in self.sources}
        for fam in sorted({fam for fam, _a, _p in self.sources}):
            _add(ipr, "rule", dict(family=fam, iifname="lo", table=MAIN_TABLE,
                                   priority=self.priority, protocol=USERLB_PROTO))
        move_local |= {fam for _p, fam, _a, _port in self.local_services()}
        # what is ours in the kernel but no longer wanted (rules before routes)
        stale = [("rule", kw) for kw in rules if not _is_shared(kw) and self._own(kw)]
        stale += [("route", r) for r in _our_routes(ipr) if r["oif"] == self.ifindex]
        for kind, kw in stale:
            if _key(kind, kw) not in wkeys:
                err = _delete(ipr, kind, kw)
                if err:
                    errors.append(err)
                self._installed.discard(_key(kind, kw))
        _sync_shared(ipr, errors, keep_guard, move_local)

    def install(self):
        from pyroute2 import IPRoute
        with self._lock:
            try:
                self._set_sysctls()
                if self.watch:
                    from .localvip import AddressWatch
                    self._watch = AddressWatch(self._addresses_changed)
                self.local = _netlink(_local_addresses)

                def work():
                    errors = []
                    with IPRoute() as ipr:
                        self._purge(ipr, errors)
                        self._apply(ipr, errors)
                    return errors
                errors = _netlink(work)
                if errors:
                    raise SteeringError("; ".join(errors))
            except Exception:
                self.remove()
                raise

    def _purge(self, ipr, errors):
        """Left-overs of a dead instance: rules of this device or table, and
        rules whose device or table is gone.  Removed before anything is added."""
        links, have = _links(ipr), _tables_with_routes(ipr)
        for kw in _our_rules(ipr):
            if _is_shared(kw):
                continue
            if self._own(kw) or _is_dead(kw, have, links):
                err = _delete(ipr, "rule", kw)
                if err:
                    errors.append(err)
                else:
                    self.replaced.append("rule " + _describe_kw("rule", kw))
        for r in _our_routes(ipr):
            if r["table"] == self.table and r["oif"] != self.ifindex:
                if not _delete(ipr, "route", r):
                    self.replaced.append("route " + _describe_kw("route", r))

    def update(self, vips=(), sources=(), services=None):
        """Change the VIP / source / service sets in place: what is new is
        added first, then what is gone is removed -- no moment without the
        routes that stay."""
        new_vips, new_sources = _prefixes(vips), _prefixes(sources)
        new_services = self.services if services is None else _services(services)
        with self._lock:
            if (new_vips, new_sources, new_services) == (self.vips, self.sources, self.services):
                return False
            self.vips, self.sources, self.services = new_vips, new_sources, new_services
            self._reconcile()
        return True

    def refresh(self):
        """Re-read the local addresses and follow them, and put back what
        the kernel removed behind our back (the routes of a device set down
        and up again); the AddressWatch calls this on address and link
        events.  True when the set of local service VIPs changed."""
        with self._lock:
            before = self.local_services()
            self.local = _netlink(_local_addresses)
            changed = self.local_services() != before
            self._reconcile(resync=True)
            return changed

    def _addresses_changed(self):
        try:
            if self.refresh():
                self.log("local addresses changed: steering "
                         + (", ".join(self.describe_local()) or "no local VIP"))
        except _DeviceGone:
            pass
        except Exception as e:   # noqa: BLE001 - reported, keep running
            self.log(f"addresses or links changed: {e}")

    def _reconcile(self, resync=False):
        from pyroute2 import IPRoute

        def work():
            errors = []
            with IPRoute() as ipr:
                if resync:
                    self._resync(ipr)
                self._apply(ipr, errors)
            return errors
        errors = _netlink(work)
        if errors:
            raise SteeringError("; ".join(errors))

    def _resync(self, ipr):
        """Forget what we installed and the kernel no longer has (its
        routes go with a device set down), so that _apply adds it again."""
        present = {_key("route", r) for r in _our_routes(ipr)}
        present |= {_key("rule", kw) for kw in _our_rules(ipr)}
        lost = self._installed - present
        if lost and not _link_exists(self.ifname):
            raise _DeviceGone()       # deleted, not set down: the director is stopping
        if lost:
            self._installed -= lost
            self.log(f"steering: putting back {len(lost)} route(s)/rule(s) the kernel "
                     f"removed (device {self.ifname} set down and up?)")

    def _set_sysctls(self):
        wanted = [("net.ipv4.ip_forward", "1"),
                  ("net.ipv6.conf.all.forwarding", "1"),
                  (f"net.ipv4.conf.{self.ifname}.rp_filter", "0"),
                  # the engine's packets towards clients come out of the
                  # device with a local VIP as their source
                  (f"net.ipv4.conf.{self.ifname}.accept_local", "1")]
        try:
            if read_sysctl("net.ipv4.conf.all.rp_filter") == "1":
                wanted.append(("net.ipv4.conf.all.rp_filter", "2"))   # loose
        except OSError:
            pass
        for name, value in wanted:
            try:
                old = read_sysctl(name)
            except OSError:
                continue
            if old != value:
                try:
                    write_sysctl(name, value)
                except OSError as e:
                    if not name.endswith(".accept_local"):
                        raise
                    # only local VIPs need it; a container's read-only
                    # /proc/sys must not stop a director with routed VIPs
                    self.sysctl_problems.append(f"{name}: {e.strerror} (local VIPs "
                                                f"will not work)")
                    continue
                self._sysctls.append((name, old))

    def remove(self):
        from pyroute2 import IPRoute
        errors = []
        with self._lock:
            if self._watch is not None:
                self._watch.stop()
                self._watch = None

            def work():
                with IPRoute() as ipr:
                    rules = _our_rules(ipr)
                    for kw in rules:
                        if not _is_shared(kw) and self._own(kw):
                            err = _delete(ipr, "rule", kw)
                            if err:
                                errors.append(err)
                    for r in _our_routes(ipr):
                        if r["oif"] == self.ifindex:
                            err = _delete(ipr, "route", r)
                            if err:
                                errors.append(err)
                    keep_guard, move_local = _needs_of_others(_our_rules(ipr), self._own)
                    _sync_shared(ipr, errors, keep_guard, move_local)
            try:
                _netlink(work)
            except Exception as e:   # noqa: BLE001
                errors.append(str(e))
            self._installed.clear()
        while self._sysctls:
            name, old = self._sysctls.pop()
            try:
                write_sysctl(name, old)
            except OSError as e:
                if not name.startswith(f"net.ipv4.conf.{self.ifname}."):
                    errors.append(f"sysctl {name}: {e}")
        return errors

    def describe(self):
        """Human-readable list of what is (to be) installed."""
        out = []
        for _fam, addr, plen in self.vips:
            out.append(f"route {addr}/{plen} dev {self.ifname}")
        for _fam, addr, plen in self.sources:
            out.append(f"rule from {addr}/{plen} lookup {self.table}")
        return out + self.describe_local()

    def describe_local(self):
        out = []
        for proto, _fam, addr, port in self.local_services():
            out.append(f"rule to {addr} ipproto {PROTO_NAMES.get(proto, proto)}"
                       + (f" dport {port}" if port else "") + f" lookup {self.table}")
        return out


def _local_addresses():
    from .localvip import local_addresses
    return local_addresses()


def _services(items):
    """(protocol, addr, port) -> sorted distinct (protocol, family, text, port)."""
    out = set()
    for proto, addr, port in items:
        fam, text, _plen = _prefix(addr)
        out.add((proto, fam, text, port))
    return sorted(out)


def _prefixes(items):
    """The distinct prefixes of items (see _prefix), in order."""
    out = []
    for item in items:
        p = _prefix(item)
        if p not in out:
            out.append(p)
    return out


def _prefix(item):
    """address | (address, plen) | 'a.b.c.d/n' -> (family, text, plen)."""
    if isinstance(item, tuple):
        addr, plen = item
    elif isinstance(item, str):
        net = ipaddress.ip_network(item, strict=False)
        return ((socket.AF_INET if net.version == 4 else socket.AF_INET6),
                str(net.network_address), net.prefixlen)
    else:
        addr, plen = item, None
    if isinstance(addr, int):
        text = str(ipaddress.IPv4Address(addr))
        return socket.AF_INET, text, 32 if plen is None else plen
    text = str(ipaddress.IPv6Address(bytes(addr)))
    return socket.AF_INET6, text, 128 if plen is None else plen
