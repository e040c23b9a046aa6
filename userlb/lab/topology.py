"""The lab's network: namespaces, veth links, bridges, addresses, sysctls and
routes of the one-director lab and of the ECMP lab (the pictures are in
userlb/lab/__init__.py).

Both labs share their edges: the client namespace hangs off a hub (the
director, or the ECMP router) through a veth pair eth0 -- c0, and the real
servers off a bridge br0 on the same hub.  The ECMP router reaches the VIPs,
and the client networks from the real servers' side (rule `iif br0` to
ROUTER_REPLY_TABLE), through kernel multipath routes over the live directors
(`set_routes`), hashed on each packet's 5-tuple (MULTIPATH_HASH_FIELDS); a
DSCP K from the client side pins a flow to director K (rule `iif c0 tos 4K`
to table ROUTER_PIN_TABLE + K, `pin_lines`).
"""
from .base import (
    CLIENT_NET4,
    CLIENT_NET6,
    ROUTER_PIN_TABLE,
    ROUTER_REPLY_TABLE,
    VIP4,
    VIP6,
    LabError,
    link4,
    link6,
    sh,
)

FORWARDING = (("net.ipv4.ip_forward", 1), ("net.ipv6.conf.all.forwarding", 1))
# The ECMP router's multipath hash: policy 3 (custom) over the fields of
# MULTIPATH_HASH_FIELDS, computed from the packet's headers alone.  Policy 1
# ("L4") would reuse a hash the packet already carries, and between network
# namespaces a forwarded packet keeps the one its sending socket chose at
# random (and re-chooses after a retransmission timeout): the same client
# address and port could reach another director on every connect.
# Bits (Documentation/networking/ip-sysctl.rst): 0x01 source address,
# 0x02 destination address, 0x04 protocol, 0x10 source port, 0x20
# destination port -- not 0x08, the IPv6 flow label (random per socket too).
MULTIPATH_HASH_POLICY = 3
MULTIPATH_HASH_FIELDS = 0x37
# the ECMP router: forwarding, the 5-tuple multipath hash (IPv4 and IPv6), no
# reverse-path filter (the replies of a flow may come back over another
# director's link)
ROUTER_SYSCTLS = FORWARDING + (("net.ipv4.fib_multipath_hash_policy", MULTIPATH_HASH_POLICY),
                               ("net.ipv4.fib_multipath_hash_fields",
                                f"0x{MULTIPATH_HASH_FIELDS:x}"),
                               ("net.ipv6.fib_multipath_hash_policy", MULTIPATH_HASH_POLICY),
                               ("net.ipv6.fib_multipath_hash_fields",
                                f"0x{MULTIPATH_HASH_FIELDS:x}"),
                               ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0),
                               ("net.ipv6.conf.default.accept_dad", 0))


def veth(a, ns_a, b, ns_b):
    """A veth pair: a in namespace ns_a, b in ns_b."""
    sh(["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b])


def batch(ns, lines):
    """`ip -batch` in ns; lines starting with "-6 " go to an `ip -6 -batch`."""
    v4 = [line for line in lines if not line.startswith("-6 ")]
    v6 = [line[3:] for line in lines if line.startswith("-6 ")]
    if v4:
        sh(["ip", "-n", ns, "-batch", "-"], input="\n".join(v4) + "\n")
    if v6:
        sh(["ip", "-n", ns, "-6", "-batch", "-"], input="\n".join(v6) + "\n")


def sysctls(ns, settings):
    for name, value in settings:
        sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{name}={value}"])


def host_lines(a4, a6, gw4, gw6, dev="eth0"):
    """An end host's link: its addresses (/24, /64), up, default routes."""
    return [f"addr add {a4}/24 dev {dev}", f"addr add {a6}/64 dev {dev} nodad",
            f"link set {dev} up", f"route add default via {gw4}", f"route add ::/0 via {gw6}"]


def pin_lines(k, verb):
    """Director k's pin table: the VIPs via director k only ("add"/"replace")."""
    (_r4, d4), (_r6, d6), t = link4(k), link6(k), ROUTER_PIN_TABLE + k
    return [f"route {verb} {VIP4}/32 via {d4} dev d{k} table {t}",
            f"-6 route {verb} {VIP6}/128 via {d6} dev d{k} table {t}"]


class Topology:
    """Building a Lab's network (mixed into it: uses its names, addresses,
    namespaces, alive and save())."""

    def ns_add(self, name):
        sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.save()
        sh(["ip", "-n", name, "link", "set", "lo", "up"])

    # ------------------------------------------------------ the shared edges
    def _link_client(self, hub):
        """The client's eth0 -- c0 on hub, with every client address."""
        c = self.client
        veth("eth0", c, "c0", hub)
        batch(c, [f"addr add {a}/24 dev eth0" for a in self.clients4] +
              [f"addr add {a}/64 dev eth0 nodad" for a in self.clients6] +
              ["link set eth0 up", "route add default via 10.10.0.1",
               "route add ::/0 via fd00:10::1"])

    @staticmethod
    def _hub_lines():
        """The hub's side: c0 (client network) and the bridge br0 (servers)."""
        return ["addr add 10.10.0.1/24 dev c0", "addr add fd00:10::1/64 dev c0 nodad",
                "link set c0 up", "link add br0 type bridge",
                "addr add 10.20.0.1/24 dev br0", "addr add fd00:20::1/64 dev br0 nodad",
                "link set br0 up"]

    def _link_servers(self, hub):
        """Each real server's eth0 -- sI on hub, in the bridge br0."""
        for i, (ns, a4, a6) in enumerate(self.servers, 1):
            veth("eth0", ns, f"s{i}", hub)
            batch(hub, [f"link set s{i} master br0", f"link set s{i} up"])
            batch(ns, host_lines(a4, a6, "10.20.0.1", "fd00:20::1"))

    # ------------------------------------------------------ one director
    def build_single(self):
        c, d = self.client, self.director
        for ns in [c, d] + [s[0] for s in self.servers] + \
                ([self.router, self.far[0]] if self.far_mtu else []):
            self.ns_add(ns)
        self._link_client(d)
        batch(d, self._hub_lines())
        sysctls(d, (("net.ipv6.conf.br0.accept_dad", 0),) + FORWARDING)
        self._link_servers(d)
        if self.far_mtu:
            self._build_far()

    def _build_far(self):
        """director f0 -- router -- (MTU far_mtu) -- the far real server."""
        d, r, (f, fa4, fa6) = self.director, self.router, self.far
        veth("f0", d, "eth0", r)
        veth("eth1", r, "eth0", f)
        batch(d, ["addr add 10.20.1.1/24 dev f0", "addr add fd00:20:1::1/64 dev f0 nodad",
                  "link set f0 up", "route add 10.20.2.0/24 via 10.20.1.2",
                  "route add fd00:20:2::/64 via fd00:20:1::2"])
        batch(r, ["addr add 10.20.1.2/24 dev eth0", "addr add fd00:20:1::2/64 dev eth0 nodad",
                  "link set eth0 up", f"link set eth1 mtu {self.far_mtu}",
                  "addr add 10.20.2.1/24 dev eth1", "addr add fd00:20:2::1/64 dev eth1 nodad",
                  "link set eth1 up", "route add default via 10.20.1.1",
                  "route add ::/0 via fd00:20:1::1"])
        sysctls(r, FORWARDING)
        batch(f, host_lines(fa4, fa6, "10.20.2.1", "fd00:20:2::1"))

    # ------------------------------------------------ K >= 2 directors (ECMP)
    def build_ecmp(self):
        c, r = self.client, self.router
        for ns in [c, r] + self.director_ns + [s[0] for s in self.servers]:
            self.ns_add(ns)
        self._link_client(r)
        sysctls(r, ROUTER_SYSCTLS)
        batch(r, self._hub_lines())
        self._link_servers(r)
        for k, dns in enumerate(self.director_ns, 1):
            (r4, d4), (r6, d6) = link4(k), link6(k)
            veth(f"d{k}", r, "up0", dns)
            batch(r, [f"addr add {r4}/24 dev d{k}", f"addr add {r6}/64 dev d{k} nodad",
                      f"link set d{k} up"])
            sysctls(dns, (("net.ipv4.conf.all.rp_filter", 0),))
            batch(dns, [f"addr add {d4}/24 dev up0", f"addr add {d6}/64 dev up0 nodad",
                        "link set up0 up", f"route add default via {r4}",
                        f"route add ::/0 via {r6}"])
            if self.bgp:          # the routes come from BGP (userlb/lab/bgp.py)
                from .bgp import director_guard
                batch(dns, director_guard())
                continue
            # the pin: DSCP k from the client side goes to director k only
            t = ROUTER_PIN_TABLE + k
            batch(r, pin_lines(k, "add") +
                  [f"rule add iif c0 tos 0x{4 * k:02x} lookup {t} pref {1000 + k}",
                   f"-6 rule add iif c0 tos 0x{4 * k:02x} lookup {t} pref {1000 + k}"])
        t = ROUTER_REPLY_TABLE
        batch(r, [f"rule add iif br0 lookup {t} pref 900",
                  f"-6 rule add iif br0 lookup {t} pref 900"])
        if not self.bgp:
            self.set_routes()

    def set_routes(self, alive=None):
        """Point the router's multipath routes (VIPs; replies to the client
        networks) at the directors in `alive` (default self.alive); with none,
        remove them."""
        if alive is not None:
            self.alive = sorted(alive)
        self.save()
        targets = [(f"{VIP4}/32", "", ""), (f"{VIP6}/128", "-6 ", ""),
                   (f"{CLIENT_NET4}.0/24", "", f" table {ROUTER_REPLY_TABLE}"),
                   (f"{CLIENT_NET6}/64", "-6 ", f" table {ROUTER_REPLY_TABLE}")]
        lines = []
        for dst, fam, table in targets:
            v6 = bool(fam)
            hops = [(link6(k) if v6 else link4(k))[1] for k in self.alive]
            if not hops:
                lines.append(f"{fam}route del {dst}{table}")
            elif len(hops) == 1:
                lines.append(f"{fam}route replace {dst}{table} via {hops[0]} dev d{self.alive[0]}")
            else:
                nh = " ".join(f"nexthop via {h} dev d{k}"
                              for h, k in zip(hops, self.alive, strict=True))
                lines.append(f"{fam}route replace {dst}{table} {nh}")
        for line in lines:
            p = sh(["ip", "-n", self.router] + line.split(), check=False)
            if p.returncode and " del " not in f" {line} ":
                raise LabError(f"router: ip {line}: {p.stderr.strip()}")

    def pin(self, k):
        """Director k's pin table back (after `unpin`)."""
        batch(self.router, pin_lines(k, "replace"))

    def unpin(self, k):
        t = ROUTER_PIN_TABLE + k
        for fam, dst in (("-4", f"{VIP4}/32"), ("-6", f"{VIP6}/128")):
            sh(["ip", "-n", self.router, fam, "route", "del", dst, "table", str(t)], check=False)

    def router_routes(self):
        """The router's VIP / reply routes and rules (text, for humans and tests)."""
        out = []
        for fam in ("-4", "-6"):
            out.append(sh(["ip", "-n", self.router, fam, "route", "show", "table", "all"]).stdout)
            out.append(sh(["ip", "-n", self.router, fam, "rule", "show"]).stdout)
        return "".join(out)
