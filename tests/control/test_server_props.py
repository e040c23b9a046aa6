"""Property test: random sequences of valid ipvsadm commands (and refused
ones, and -R batches with and without a bad line) sent to the control server;
after every step `-L -n`, `-S -n`, `-L --timeout` and the engine's dispatch
table equal what a small independent model of the expected state renders."""
import ipaddress

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from userlb.clock import ManualClock
from userlb.control.config import Config
from userlb.control.server import ControlServer
from userlb.dataplane.engine import Engine

VIPS = ["10.0.0.1", "10.0.0.2", "[2001:db8::1]"]
PORTS = [80, 443, 53]
RIPS4 = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.10"]
RIPS6 = ["[2001:db8:1::1]", "[2001:db8:1::2]"]
SCHEDS = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "mh", "mhs"]


def flag_names(sched):
    if sched == "sh":
        return ["sh-fallback", "sh-port"]
    if sched in ("mh", "mhs"):
        return ["mh-fallback", "mh-port"]
    return ["flag-1", "flag-2", "flag-3"]


def addr_key(text):
    a = ipaddress.ip_address(text.strip("[]"))
    return (a.version, int(a))


class Model:
    """The expected state, in ipvsadm words."""

    def __init__(self):
        self.services = {}     # (proto, vip, port) -> dict(sched, flags, persist, dests)
        self.timeouts = [900, 120, 300]

    def svc_order(self):
        return sorted(self.services, key=lambda k: (addr_key(k[1])[0], k[0] != "-t",
                                                    addr_key(k[1])[1], k[2]))

    def listing(self):
        out = ["IP Virtual Server version 1.2.1 (size=4096)",
               "Prot LocalAddress:Port Scheduler Flags",
               "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
        for k in self.svc_order():
            proto, vip, port = k
            s = self.services[k]
            line = f"{'TCP' if proto == '-t' else 'UDP'}  {vip}:{port} {s['sched']}"
            if s["flags"]:
                line += f" ({','.join(s['flags'])})"
            if s["persist"]:
                line += f" persistent {s['persist']}"
            if s["sched"] == "mhs":
                line += " unstable 0 entries 0"
            out.append(line)
            for (rip, rport), (w, _x, _y) in sorted(s["dests"].items(),
                                                    key=lambda kv: (addr_key(kv[0][0]), kv[0][1])):
                out.append(f"  -> {f'{rip}:{rport}':<28} {'Masq':<7} {w:<6d} {0:<10d} {0:<10d}")
        return out

    def save(self):
        out = []
        if self.timeouts != [900, 120, 300]:
            out.append("--set {} {} {}".format(*self.timeouts))
        for k in self.svc_order():
            proto, vip, port = k
            s = self.services[k]
            line = f"-A {proto} {vip}:{port} -s {s['sched']}"
            if s["persist"]:
                line += f" -p {s['persist']}"
            if s["flags"]:
                line += f" -b {','.join(s['flags'])}"
            out.append(line)
            for (rip, rport), (w, x, y) in sorted(s["dests"].items(),
                                                  key=lambda kv: (addr_key(kv[0][0]), kv[0][1])):
                line = f"-a {proto} {vip}:{port} -r {rip}:{rport} -m -w {w}"
                if x:
                    line += f" -x {x}"
                if y:
                    line += f" -y {y}"
                out.append(line)
        return out

    def engine_keys(self):
        return {(6 if p == "-t" else 17, addr_key(v)[1] if addr_key(v)[0] == 4
                 else ipaddress.ip_address(v.strip("[]")).packed, port)
                for p, v, port in self.services}


svc_keys = st.tuples(st.sampled_from(["-t", "-u"]), st.sampled_from(VIPS), st.sampled_from(PORTS))


@st.composite
def service_def(draw):
    sched = draw(st.sampled_from(SCHEDS + [None]))
    eff = sched or "wlc"
    names = flag_names(eff)
    flags = [n for n in names if draw(st.booleans())] if draw(st.booleans()) else []
    persist = None
    if eff != "mhs" and draw(st.integers(0, 3)) == 0:
        persist = draw(st.sampled_from([None, 1, 60, 2678400]))   # None: -p alone = 360
        persist = persist or "default"
    return sched, flags, persist


def service_words(cmd, key, sdef):
    proto, vip, port = key
    sched, flags, persist = sdef
    words = [cmd, proto, f"{vip}:{port}"]
    if sched:
        words += ["-s", sched]
    if persist == "default":
        words += ["-p"]
    elif persist:
        words += ["-p", str(persist)]
    if flags:
        words += ["-b", ",".join(flags)]
    return words


def model_service(sdef, old_dests=None):
    sched, flags, persist = sdef
    return {"sched": sched or "wlc", "flags": flags,
            "persist": 360 if persist == "default" else persist,
            "dests": old_dests if old_dests is not None else {}}


dest_vals = st.tuples(st.integers(0, 65535), st.integers(0, 50), st.integers(0, 50)).map(
    lambda t: (t[0], max(t[1], t[2]), min(t[1], t[2])))


class ControlMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.config = Config(clock=ManualClock(0))
        self.engine = Engine()
        self.server = ControlServer("/nonexistent/control.sock", self.config, self.engine,
                                    clock=lambda: 0.0)
        self.model = Model()

    def send(self, words, ok=True, stdin=None):
        req = {"argv": words}
        if stdin is not None:
            req["stdin"] = stdin
        r = self.server.handle(req)
        assert r["ok"] is ok, (words, r)
        if not ok:
            assert r["status"] in (2, 255) and r["error"]
        return r

    # -------------------------------------------------------------- rules
    @rule(key=svc_keys, sdef=service_def())
    def add_service(self, key, sdef):
        if key in self.model.services:
            r = self.send(service_words("-A", key, sdef), ok=False)
            assert r["error"] == "Service already exists"
            return
        self.send(service_words("-A", key, sdef))
        self.model.services[key] = model_service(sdef)

    @rule(key=svc_keys, sdef=service_def())
    def edit_service(self, key, sdef):
        if key not in self.model.services:
            assert self.send(service_words("-E", key, sdef), ok=False)["error"] == "No such service"
            return
        self.send(service_words("-E", key, sdef))
        self.model.services[key] = model_service(sdef, self.model.services[key]["dests"])

    @rule(key=svc_keys)
    def delete_service(self, key):
        proto, vip, port = key
        if key not in self.model.services:
            self.send(["-D", proto, f"{vip}:{port}"], ok=False)
            return
        self.send(["-D", proto, f"{vip}:{port}"])
        del self.model.services[key]

    def _rip(self, key, i):
        rips = RIPS6 if key[1].startswith("[") else RIPS4
        return rips[i % len(rips)]

    @rule(key=svc_keys, i=st.integers(0, 7), rport=st.sampled_from([80, 8080]), vals=dest_vals)
    def add_dest(self, key, i, rport, vals):
        proto, vip, port = key
        rip = self._rip(key, i)
        w, x, y = vals
        words = ["-a", proto, f"{vip}:{port}", "-r", f"{rip}:{rport}", "-m", "-w", str(w),
                 "-x", str(x), "-y", str(y)]
        s = self.model.services.get(key)
        if s is None or (rip, rport) in s["dests"]:
            self.send(words, ok=False)
            return
        self.send(words)
        s["dests"][(rip, rport)] = (w, x, y)

    @rule(key=svc_keys, i=st.integers(0, 7), rport=st.sampled_from([80, 8080]), vals=dest_vals)
    def edit_dest(self, key, i, rport, vals):
        proto, vip, port = key
        rip = self._rip(key, i)
        w, x, y = vals
        words = ["-e", proto, f"{vip}:{port}", "-r", f"{rip}:{rport}", "-m", "-w", str(w)]
        if x:
            words += ["-x", str(x), "-y", str(y)]
        else:
            y = 0
        s = self.model.services.get(key)
        if s is None or (rip, rport) not in s["dests"]:
            self.send(words, ok=False)
            return
        self.send(words)
        s["dests"][(rip, rport)] = (w, x, y)

    @rule(key=svc_keys, i=st.integers(0, 7), rport=st.sampled_from([80, 8080]))
    def delete_dest(self, key, i, rport):
        proto, vip, port = key
        rip = self._rip(key, i)
        words = ["-d", proto, f"{vip}:{port}", "-r", f"{rip}:{rport}"]
        s = self.model.services.get(key)
        if s is None or (rip, rport) not in s["dests"]:
            self.send(words, ok=False)
            return
        self.send(words)
        del s["dests"][(rip, rport)]

    @rule(vals=st.tuples(*[st.integers(0, 5000)] * 3))
    def set_timeouts(self, vals):
        self.send(["--set"] + [str(v) for v in vals])
        for i, v in enumerate(vals):
            if v:
                self.model.timeouts[i] = v

    @precondition(lambda self: len(self.model.services) > 3)
    @rule()
    def clear(self):
        self.send(["-C"])
        self.model.services.clear()

    @rule(key=svc_keys)
    def zero(self, key):
        proto, vip, port = key
        self.send(["-Z", proto, f"{vip}:{port}"], ok=key in self.model.services)
        self.send(["-Z"])

    @rule(words=st.sampled_from([
        ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1:80", "-m", "-w", "2147483648"],
        ["-A", "-t", "10.0.0.1:80", "-s", "nosuch"],
        ["-A", "-t", "10.0.0.9:80", "-s", "mhs", "-p"],
        ["-A", "-u", "10.0.0.9:80", "-s", "rr", "-b", "sh-port"],
        ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1:80", "-g", "--tun-csum"],
        ["-e", "-t", "10.0.0.1:80", "-r", "10.1.0.1:80", "-m", "-x", "1", "-y", "5"],
        ["--set", "1", "2"],
        ["-X"],
    ]))
    def invalid(self, words):
        self.send(words, ok=False)

    @rule(key=svc_keys, sdef=service_def(), n=st.integers(1, 3), bad=st.booleans())
    def restore_batch(self, key, sdef, n, bad):
        """A -R batch creating a fresh service with n dests (one line bad, maybe)."""
        proto, vip, port = key
        fresh = key not in self.model.services
        lines = [" ".join(service_words("-A", key, sdef))]
        dests = {}
        for i in range(n):
            rip = self._rip(key, i)
            lines.append(f"-a {proto} {vip}:{port} -r {rip}:9{i} -m -w {i}")
            dests[(rip, 90 + i)] = (i, 0, 0)
        if bad:
            lines.append(f"-d {proto} {vip}:{port} -r {self._rip(key, 0)}:1")
        r = self.send(["-R"], ok=fresh and not bad, stdin="\n".join(lines) + "\n")
        if fresh and not bad:
            self.model.services[key] = model_service(sdef, dests)
        else:
            assert r["error"].startswith("line ")

    # ---------------------------------------------------------- invariants
    @invariant()
    def listing_equals_model(self):
        r = self.server.handle({"argv": ["-L", "-n"]})
        assert r["output"].split("\n")[:-1] == self.model.listing()

    @invariant()
    def save_equals_model(self):
        r = self.server.handle({"argv": ["-S", "-n"]})
        assert r["output"].split("\n")[:-1] == self.model.save()
        t = self.server.handle({"argv": ["-L", "--timeout"]})["output"]
        assert t == "Timeout (tcp tcpfin udp): {} {} {}\n".format(*self.model.timeouts)
        assert self.engine.timeouts() == tuple(self.model.timeouts)

    @invariant()
    def engine_dispatch_equals_model(self):
        assert {s.key for s in self.engine.services()} == self.model.engine_keys()


ControlMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                            deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestControlServerSequences = ControlMachine.TestCase
