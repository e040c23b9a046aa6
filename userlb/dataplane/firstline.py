"""The first line (docs/flood-experiment.md): an nftables rule set in the
director's namespace that thins a flood of new connections before it costs
Python anything.  Installed by `userlb run --syn-limit ...`, removed on exit.

What it does, in table ``inet userlb_fl_<DEVICE>`` (one per TUN device, so
an instance recognises its own):

* chain ``into_tun`` (hook forward, priority filter - 10): for packets that
  leave through the TUN device and open a connection (TCP SYN without ACK,
  SCTP INIT):

  - per source prefix (``prefix4``/``prefix6`` bits, default /24 and /64):
    at most ``per_prefix`` a second (burst twice that) -- a dynamic set with
    a rate limit per element (timeout 60 s, at most 65536 prefixes);
  - in total: at most ``total`` a second (burst the same).

  Excess is dropped (nftables counters: `nft list table inet userlb_fl_DEV`).
* optionally (``prio``): packets that open a connection get the skb
  priority 1 (TC_PRIO_FILLER), and the TUN device the `pfifo_fast` qdisc,
  whose priomap puts priority 1 in its last band and priority 0 (every
  other packet) in the middle one, sent first; each band has its own ring.
  With a kernel whose TUN device stops its queue when the reader lags
  (instead of dropping at its ring), the backlog then waits in the qdisc
  and established flows overtake the SYNs: established first, in the
  kernel (docs/flood-experiment.md).
* optionally (``notrack``) chain ``raw`` (hook prerouting, priority raw): the
  packets to the VIPs and from the TUN device skip conntrack, in case
  something else in the namespace loaded it.

Kill -9: the table carries the device in its name; the next `userlb run`
with that device replaces it in one transaction (``add table; delete table;
table {...}``), and `remove()` deletes it.  Requires the `nft` program
(Debian package nftables).
"""
import ipaddress
import shutil
import subprocess

TABLE_PREFIX = "userlb_fl_"


class FirstLineError(Exception):
    """nft is missing or refused the rule set (message for humans)."""


def table_name(dev):
    return TABLE_PREFIX + "".join(c if c.isalnum() else "_" for c in dev)


def _mask4(bits):
    return str(ipaddress.IPv4Network(f"0.0.0.0/{bits}").netmask)


def _mask6(bits):
    return str(ipaddress.IPv6Network(f"::/{bits}").netmask)


def ruleset(dev, total=0, per_prefix=0, prefix4=24, prefix6=64, notrack=False, vips=(),
            prio=False):
    """The nft script (a text) that installs or replaces the table."""
    t = table_name(dev)
    new_tcp = "tcp flags & (syn | ack) == syn"
    new_sctp = "sctp chunk init exists"
    lines = [f"add table inet {t}", f"delete table inet {t}", f"table inet {t} {{"]
    if per_prefix:
        for fam, typ in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
            lines.append(f"  set src{fam} {{ type {typ}; size 65536; flags dynamic,timeout; "
                         f"timeout 60s; }}")
    lines.append('  chain into_tun { type filter hook forward priority filter - 10; '
                 'policy accept;')
    for new in (new_tcp, new_sctp):
        if per_prefix:
            lim = f"limit rate over {per_prefix}/second burst {2 * per_prefix} packets"
            lines.append(f'    oifname "{dev}" {new} update @src4 {{ ip saddr & '
                         f'{_mask4(prefix4)} {lim} }} counter drop')
            lines.append(f'    oifname "{dev}" {new} update @src6 {{ ip6 saddr & '
                         f'{_mask6(prefix6)} {lim} }} counter drop')
        if total:
            lines.append(f'    oifname "{dev}" {new} limit rate over {total}/second '
                         f'burst {total} packets counter drop')
        if prio:
            lines.append(f'    oifname "{dev}" {new} meta priority set 0:1')
    lines.append("  }")
    if notrack:
        lines.append("  chain raw { type filter hook prerouting priority raw; policy accept;")
        lines.append(f'    iifname "{dev}" notrack')
        v4 = [str(v) for v in vips if ":" not in str(v)]
        v6 = [str(v) for v in vips if ":" in str(v)]
        if v4:
            lines.append(f"    ip daddr {{ {', '.join(v4)} }} notrack")
        if v6:
            lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} notrack")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(script=None, args=()):
    nft = shutil.which("nft")
    if nft is None:
        raise FirstLineError("the first line needs nft (apt-get install nftables)")
    p = subprocess.run([nft] + (["-f", "-"] if script is not None else list(args)),
                       input=script, text=True, capture_output=True, timeout=30)
    if p.returncode:
        raise FirstLineError(f"nft: {p.stderr.strip()}")
    return p.stdout


class FirstLine:
    """The rule set of one TUN device: `install()` (replaces a left-over),
    `remove()` (idempotent), `counters()`."""

    def __init__(self, dev, total=0, per_prefix=0, prefix4=24, prefix6=64, notrack=False,
                 vips=(), prio=False):
        if not (total or per_prefix or notrack or prio):
            raise FirstLineError("first line: nothing to do (no limit, no notrack)")
        if not 0 <= prefix4 <= 32 or not 0 <= prefix6 <= 128:
            raise FirstLineError("first line: prefix lengths 0..32 and 0..128")
        self.dev = dev
        self.table = table_name(dev)
        self.script = ruleset(dev, total, per_prefix, prefix4, prefix6, notrack, vips, prio)
        self.prio = prio
        self.installed = False
        self.replaced = False

    def install(self):
        self.replaced = exists(self.dev)
        _nft(self.script)
        self.installed = True
        if self.prio:
            _tc("qdisc", "replace", "dev", self.dev, "root", "pfifo_fast")

    def remove(self):
        if not self.installed:
            return
        self.installed = False
        if self.prio:
            try:
                _tc("qdisc", "del", "dev", self.dev, "root")
            except FirstLineError:
                pass            # the device is gone (with its qdisc)
        if exists(self.dev):
            _nft(args=["delete", "table", "inet", self.table])

    def counters(self):
        """Packets dropped by the first line (sum of its counters)."""
        out = _nft(args=["list", "table", "inet", self.table])
        n = 0
        for w in out.split("counter packets ")[1:]:
            n += int(w.split()[0])
        return n


def _tc(*args):
    tc = shutil.which("tc")
    if tc is None:
        raise FirstLineError("--syn-prio needs tc (apt-get install iproute2)")
    p = subprocess.run([tc, *args], text=True, capture_output=True, timeout=30)
    if p.returncode:
        raise FirstLineError(f"tc {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def exists(dev):
    try:
        out = _nft(args=["list", "tables", "inet"])
    except FirstLineError:
        return False
    return f"table inet {table_name(dev)}" in out.splitlines()


def parse_limit(text):
    """`--syn-limit TOTAL[,PER_PREFIX[/BITS4[/BITS6]]]` -> (total, per_prefix,
    bits4, bits6); ValueError for anything else."""
    total, _, rest = text.partition(",")
    bits4, bits6 = 24, 64
    per = "0"
    if rest:
        parts = rest.split("/")
        per = parts[0]
        if len(parts) > 1:
            bits4 = int(parts[1])
        if len(parts) > 2:
            bits6 = int(parts[2])
        if len(parts) > 3:
            raise ValueError("too many '/'")
    t, p = int(total), int(per)
    if t < 0 or p < 0 or not (0 <= bits4 <= 32 and 0 <= bits6 <= 128) or not (t or p):
        raise ValueError("rates >= 0 (not both 0), prefix lengths 0..32 / 0..128")
    return t, p, bits4, bits6
