"""mhs decisions through the engine (docs/mhs-spec.md rules 8-13, scenarios S1, S2, S6):
entries first, which packets create entries, stateless forwarding and
stateless replies."""
import pytest
from scapy.layers.inet import ICMP, IP

from helpers.engine import engine_with, expect_rewritten, ip, run, tcp4, udp4
from userlb.clock import ManualClock
from userlb.dataplane.engine import V_FORWARD, V_REPLY
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, Dest, Service
from userlb.sched import base

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
VIPT = "10.0.0.100"


class Lab:
    def __init__(self, backends=(A, B, C), proto=IPPROTO_TCP, vip=VIPT):
        self.clock = ManualClock(0.0)
        self.svc = Service(proto, ip(vip), 80, sched_name="mhs")
        self.svc.sched = base.create("mhs", self.svc, self.clock)
        for b in backends:
            self.add(b)
        self.eng = engine_with(self.svc)

    def add(self, addr, w=1):
        d = Dest(ip(addr), 80, w)
        d.svc = self.svc
        self.svc.dests = [d] + self.svc.dests
        self.svc.sched.add_dest(d)

    def remove(self, addr, t):
        self.clock.set(t)
        d = self.svc.find_dest(ip(addr), 80)
        self.svc.dests = [x for x in self.svc.dests if x is not d]
        d.available = False
        self.svc.sched.del_dest(d)
        self.eng.set_services([self.svc])

    def weight(self, addr, w, t):
        self.clock.set(t)
        d = self.svc.find_dest(ip(addr), 80)
        d.weight = w
        self.svc.sched.upd_dest(d)
        self.eng.set_services([self.svc])

    def key(self, pred, skip=()):
        """A client address whose slot satisfies pred(old, cand) at now."""
        s = self.svc.sched
        cand = s.table_endpoints()
        old = s.old_endpoints(self.clock.now())
        for a in range(ip("192.168.0.1"), ip("192.168.0.1") + 200000):
            if a in skip:
                continue
            i = s.slot(a, 0)
            o = addr_of(old[i])
            c = addr_of(cand[i])
            if pred(o, c):
                return a
        raise AssertionError("no key")

    def send(self, caddr, flags, t, cport=40000):
        self.clock.set(t)
        if self.svc.protocol == IPPROTO_TCP:
            p = tcp4(fmt(caddr), cport, VIPT, 80, flags)
        else:
            p = udp4(fmt(caddr), cport, VIPT, 80)
        v, out = run(self.eng, p, t)
        return v, p, out

    def has_entry(self, caddr, cport=40000):
        return any(r.caddr == caddr and r.cport == cport
                   for r in self.eng.entries(self.clock.now()))


def addr_of(x):
    """Address of a table slot's backend (a Dest or an (addr, port) pair)."""
    if x is None:
        return None
    return x.addr if hasattr(x, "addr") else x[0]


def fmt(a):
    return ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0))


def backend_of(out):
    return IP(out).dst


@pytest.mark.parametrize("flags", ["S", "A", "FA", "R", "PA"])
def test_s1_steady_no_state(flags):
    lab = Lab()
    k = lab.key(lambda o, c: o == c == ip(B))
    v, p, out = lab.send(k, flags, 1.0)
    assert v == V_FORWARD
    expect_rewritten(p, out, dst=B)
    assert len(lab.eng) == 0
    assert lab.svc.stats.conns == 0 and lab.svc.stats.inpkts == 1
    assert lab.svc.forwarded


def test_s1_udp_steady():
    lab = Lab(proto=IPPROTO_UDP)
    k = lab.key(lambda o, c: o == c == ip(B))
    v, p, out = lab.send(k, None, 1.0)
    assert v == V_FORWARD and backend_of(out) == B and len(lab.eng) == 0


def test_s2_backend_removed():
    lab = Lab()
    warm = lab.key(lambda o, c: o == c)
    lab.send(warm, "S", 10.0)                 # the service has forwarded
    assert lab.svc.forwarded
    lab.remove(B, 1000.0)
    k1 = lab.key(lambda o, c: o == ip(B) and c == ip(C))
    v, p, out = lab.send(k1, "A", 1001.0)
    assert v == V_FORWARD and backend_of(out) == B and lab.has_entry(k1)
    assert lab.eng.entries(1001.0)[0].state == "ESTABLISHED"
    k2 = lab.key(lambda o, c: o == ip(B) and c == ip(C), skip={k1})
    v, p, out = lab.send(k2, "S", 1002.0)
    assert backend_of(out) == C and lab.has_entry(k2)
    k4 = lab.key(lambda o, c: o == c == ip(A))
    v, p, out = lab.send(k4, "S", 1004.0)
    assert backend_of(out) == A and not lab.has_entry(k4)
    # rule 8: the entry wins over the tables; the reply of that flow is matched
    v, p, out = lab.send(k1, "A", 1500.0)
    assert backend_of(out) == B
    rep = tcp4(B, 80, fmt(k1), 40000, "A")
    v, out = run(lab.eng, rep, 1500.0)
    assert v == V_FORWARD
    expect_rewritten(rep, out, src=VIPT, sport=80)
    # t = 1901: merged slots, a fresh key goes to C statelessly
    k5 = lab.key(lambda o, c: o == ip(B) and c == ip(C), skip={k1, k2})
    lab.eng.expire(1901.0)
    v, p, out = lab.send(k5, "S", 1901.0)
    assert backend_of(out) == C and not lab.has_entry(k5)
    # the k1 entry (ESTABLISHED, refreshed at 1500) still sends to B
    v, p, out = lab.send(k1, "A", 1902.0)
    assert backend_of(out) == B
    assert lab.svc.stats.conns == 2


def test_s2_udp_unstable_goes_to_candidate_without_entry():
    lab = Lab(proto=IPPROTO_UDP)
    lab.send(lab.key(lambda o, c: o == c), None, 10.0)
    lab.remove(B, 1000.0)
    k = lab.key(lambda o, c: o == ip(B) and c == ip(C))
    v, p, out = lab.send(k, None, 1003.0)
    assert backend_of(out) == C and not lab.has_entry(k)


def test_s6_all_weight_zero():
    lab = Lab(backends=(A, B))
    lab.send(lab.key(lambda o, c: o == c), "S", 10.0)
    lab.weight(A, 0, 1000.0)
    lab.weight(B, 0, 1000.0)
    k = lab.key(lambda o, c: o == ip(A) and c is None)
    v, p, out = lab.send(k, "S", 1001.0)
    assert v == V_REPLY and IP(out)[ICMP].type == 3 and not lab.has_entry(k)
    v, p, out = lab.send(k, "A", 1001.0)
    assert v == V_FORWARD and backend_of(out) == A and lab.has_entry(k)


def test_stateless_reply_without_entry_translated():
    lab = Lab()
    k = lab.key(lambda o, c: o == c == ip(C))
    lab.send(k, "S", 1.0)
    rep = tcp4(C, 80, fmt(k), 40000, "SA")
    v, out = run(lab.eng, rep, 1.1)
    assert v == V_FORWARD
    expect_rewritten(rep, out, src=VIPT, sport=80)
    assert lab.svc.stats.outpkts == 1 and len(lab.eng) == 0


def test_reply_of_removed_backend_translated_without_entry():
    """Behind ECMP the reply of a flow may reach a director that has no entry
    for it: while the old table still refers to a removed backend, its
    replies are translated; once every slot has merged, they are not."""
    lab = Lab()
    k = lab.key(lambda o, c: o == c == ip(B))
    lab.send(k, "A", 1.0)                 # the service has forwarded (rule 5)
    lab.remove(B, 1000.0)
    rep = tcp4(B, 80, fmt(k), 40000, "A", payload=b"data")
    v, out = run(lab.eng, rep, 1001.0)
    assert v == V_FORWARD
    expect_rewritten(rep, out, src=VIPT, sport=80)
    assert len(lab.eng) == 0
    # T later every slot has merged; the next change drops B from the tables
    lab.svc.sched.sweep(1901.0)
    lab.weight(A, 2, 1902.0)
    lab.svc.sched.sweep(2803.0)
    lab.weight(A, 1, 2804.0)
    v, out = run(lab.eng, rep, 2805.0)
    assert v != V_FORWARD


def test_entries_survive_backend_removal_in_mhs():
    lab = Lab()
    lab.send(lab.key(lambda o, c: o == c), "S", 10.0)
    lab.remove(B, 1000.0)
    k = lab.key(lambda o, c: o == ip(B) and c == ip(C))
    lab.send(k, "A", 1001.0)
    # B is gone from the configuration; the entry keeps forwarding to it
    v, p, out = lab.send(k, "A", 1800.0)
    assert v == V_FORWARD and backend_of(out) == B


def test_icmp_error_for_stateless_flow_from_client_side():
    """Frag-needed from the client's path about a stateless flow reaches the
    backend the tables choose (no entry exists by design)."""
    from test_engine_icmp import icmp_err, pkt
    lab = Lab()
    k = lab.key(lambda o, c: o == c == ip(A))
    lab.send(k, "S", 1.0)
    seen = bytes(pkt(4, VIPT, fmt(k), IPPROTO_TCP, 80, 40000))
    srv = bytes(pkt(4, A, fmt(k), IPPROTO_TCP, 80, 40000))
    v, out = run(lab.eng, icmp_err(4, "198.51.100.1", VIPT, "frag", seen[:28]), 2.0)
    assert v == V_FORWARD
    assert out == bytes(icmp_err(4, "198.51.100.1", A, "frag", srv[:28]))
