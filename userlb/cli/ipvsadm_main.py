"""The `ipvsadm` console script: `userlb adm` under ipvsadm's own name.

Programs written for kernel IPVS (ldirectord, keepalived's notify scripts,
teaching material) run `ipvsadm ...` and read its output, exit status and
error messages.  This entry point gives them ipvsadm 1.31's behaviour on top
of `userlb adm` (userlb/cli/adm.py; the listing formats are the control
plane's, byte for byte those of ipvsadm -n):

* No director reachable: ipvsadm's message when the kernel has no IPVS,
  exit status 2, before anything else is looked at (ipvsadm initialises
  first, then parses):
      Can't initialize ipvs: Protocol not available
      Are you sure that IP Virtual Server is built in the kernel or as module?
  (socket not ours: "Permission denied (you must be root)"), followed by one
  line naming the control socket that was tried.
* Parse errors as ipvsadm reports them (measured against the Debian binary,
  ipvsadm 1.31-1): the first option must be a command, else
  "Try `PROG -h' or 'PROG --help' for more information." and status 255;
  an unknown option or a missing argument: "WORD: unknown option" /
  "WORD: missing argument", status 255; a second command:
  "invalid option `WORD'", status 2; the other syntax errors status 2.
* -v / --version names userlb; -h / --help prints the usage; both work
  without a director.
* Without -n, `-L` and `-S` print names as ipvsadm does: the host name of
  an address that resolves (reverse lookup), the service name of a port
  (/etc/services), with ipvsadm's column widths (`TCP  10.99.0.1:http rr`);
  so does `-L -c` (source, virtual and destination columns).

The control socket is $USERLB_CONTROL or /run/userlb/control.sock.
"""
from __future__ import annotations

import errno
import os
import socket
import sys

from ..control import ipvsadm as ia
from ..control import protocol as P
from ..control.ipvsadm_options import COMMAND_OPTS, SHORT
from ..control.ipvsadm_values import BRACKET_HINT
from ..errors import ConfigError
from . import adm

IPVSADM_VERSION = "v1.31 2019/12/24"
NO_IPVS = ("Can't initialize ipvs: {reason}\n"
           "Are you sure that IP Virtual Server is built in the kernel or as module?")
STATUS_POPT = 255


def _userlb_version() -> str:
    try:
        from importlib.metadata import version
        return version("userlb")
    except Exception:   # noqa: BLE001 - not installed as a distribution
        return "0"


def version_text() -> str:
    return (f"ipvsadm {IPVSADM_VERSION} (userlb {_userlb_version()}: IP Virtual Server "
            f"v1.2.1 in userspace over a control socket)\n")


USAGE = """\
Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} -h

virtual-service:  --tcp-service|-t address:port  or  --udp-service|-u address:port
options: --scheduler -s, --persistent -p, --netmask -M, --sched-flags -b,
  --real-server -r, --masquerading -m, --gatewaying -g, --ipip -i, --weight -w,
  --u-threshold -x, --l-threshold -y, --numeric -n, --connection -c, --timeout,
  --stats, --rate, --thresholds, --persistent-conn, --nosort, --exact, --ops -o

This ipvsadm is userlb's: it drives a running `userlb run` director over its
control socket ($USERLB_CONTROL, default /run/userlb/control.sock) instead of
the kernel.  Addresses and ports are numeric.  See `userlb adm --help`.
"""


def _try_help(prog: str) -> str:
    return f"Try `{prog} -h' or '{prog} --help' for more information."


def _is_command_word(w: str) -> bool:
    if w.startswith("--"):
        return w[2:].partition("=")[0] in COMMAND_OPTS
    if w.startswith("-") and len(w) > 1:
        ent = SHORT.get(w[1])
        return ent is not None and ent[0] == "cmd"
    return False


def _word_with(words: list[str], opt: str) -> str:
    """The argv word an option message is about, as popt names it (whole word)."""
    if opt.startswith("--"):
        for w in words:
            if w == opt or w.startswith(opt + "="):
                return w
        return opt
    c = opt[1:2]
    for w in words:
        if w.startswith("-") and not w.startswith("--") and c in w[1:]:
            return w
    return opt


def translate(words: list[str], e: ConfigError, prog: str) -> tuple[str, int]:
    """A userlb syntax error -> (ipvsadm's message, ipvsadm's exit status)."""
    msg = e.message
    if msg.startswith("no command specified"):
        return _try_help(prog), STATUS_POPT
    head, _, tail = msg.partition(": ")
    if tail in ("unknown option", "missing argument") and head.startswith("-"):
        return f"{_word_with(words, head)}: {tail}", STATUS_POPT
    if msg == "multiple commands specified":
        cmds = [w for w in words if _is_command_word(w) or (
            w.startswith("-") and not w.startswith("--")
            and sum(1 for c in w[1:] if SHORT.get(c, ("", ""))[0] == "cmd") > 1)]
        bad = cmds[1] if len(cmds) > 1 else (cmds[0] if cmds else "")
        return f"invalid option `{bad}'", P.STATUS_SYNTAX
    if BRACKET_HINT in msg:         # userlb adm's newcomer hint; ipvsadm has none
        msg = msg[:msg.index(BRACKET_HINT)]
    if msg.startswith("illegal ") and " specified (" in msg:
        # userlb adm explains why (no name resolution); ipvsadm stops at "specified"
        msg = msg[:msg.index(" specified (") + len(" specified")]
    return msg, P.STATUS_SYNTAX


def probe(path: str) -> str | None:
    """None when a director listens at `path`, else the reason ipvsadm gives."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
        return None
    except PermissionError:
        return "Permission denied (you must be root)"
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return "Permission denied (you must be root)"
        return os.strerror(errno.ENOPROTOOPT)
    finally:
        s.close()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.environ.get("USERLB_IPVSADM_ARGV0") or (
        sys.argv[0] if sys.argv and sys.argv[0] else "ipvsadm")
    if words and not _is_command_word(words[0]):
        print(_try_help(prog), file=sys.stderr)
        return STATUS_POPT
    try:
        cmd = ia.parse_argv(words)
    except ConfigError as e:
        cmd = None
        err = e
    if cmd is not None and cmd.cmd == ia.VERSION:
        sys.stdout.write(version_text())
        return 0
    if cmd is not None and cmd.cmd == ia.HELP:
        sys.stdout.write(version_text() + USAGE.format(p=prog))
        return 0
    path = os.environ.get(adm.ENV_PATH) or P.DEFAULT_PATH
    reason = probe(path)
    if reason is not None:
        print(NO_IPVS.format(reason=reason), file=sys.stderr)
        print(f"(userlb: no director answers on {path}; start `userlb run` or set "
              f"{adm.ENV_PATH})", file=sys.stderr)
        return P.STATUS_SYNTAX
    if cmd is None:
        msg, status = translate(words, err, prog)
        print(msg, file=sys.stderr)
        return status
    if cmd.cmd == ia.LIST and not cmd.numeric and cmd.connections:
        return _named(path, words, False, False, conns=True)
    if cmd.cmd in (ia.LIST, ia.SAVE) and not cmd.numeric and not cmd.connections \
            and not cmd.timeouts_list and not cmd.daemon:
        return _named(path, words, cmd.cmd == ia.SAVE, cmd.stats or cmd.rate)
    return adm.main(["--control", path, *words])


# ------------------------------------------------------------- names (no -n)
def _proto_of(word: str) -> str:
    return {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "-t": "tcp", "-u": "udp",
            "--tcp-service": "tcp", "--udp-service": "udp",
            "--sctp-service": "sctp"}.get(word, "tcp")


def anyname(endpoint: str, proto: str, resolve=None, service=None) -> str:
    """'10.0.0.1:80' / '[2001:db8::1]:80' -> what ipvsadm prints without -n:
    the host name if the address resolves (reverse lookup), the service name
    if the port has one for this protocol (/etc/services), each else numeric;
    at most 59 characters (ipvsadm's buffer)."""
    resolve = resolve or _host_name
    service = service or _service_name
    addr, _, port = endpoint.rpartition(":")
    v6 = addr.startswith("[")
    bare = addr[1:-1] if v6 else addr
    host = resolve(bare) or bare
    name = service(int(port), proto) if port.isdigit() else None
    out = (f"[{host}]" if v6 else host) + ":" + (name or port)
    return out[:59]


def _host_name(addr: str) -> str | None:
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return None


def _service_name(port: int, proto: str) -> str | None:
    try:
        return socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return None


def name_listing(text: str, save: bool, pad33: bool = False, **kw) -> str:
    """Numeric `-L` / `-S` output -> ipvsadm's output without -n: each
    endpoint replaced by anyname(), with ipvsadm's column rules (a service
    name is cut at 33 characters and a destination at 28 for IPv4, and
    padded to those widths where the numeric listing pads)."""
    out = []
    proto = "tcp"
    for line in text.split("\n"):
        w = line.split(" ")
        if save and len(w) >= 3 and w[0] in ("-A", "-E", "-a", "-e") and w[1] in ("-t", "-u",
                                                                              "--sctp-service"):
            proto = _proto_of(w[1])
            w[2] = anyname(w[2], proto, **kw)
            if "-r" in w[3:]:
                i = w.index("-r", 3)
                w[i + 1] = anyname(w[i + 1], proto, **kw)
            out.append(" ".join(w))
        elif not save and w[0] in ("TCP", "UDP", "SCTP") and line[len(w[0]):].startswith("  "):
            proto = _proto_of(w[0])
            tok = line[len(w[0]) + 2:].split(" ", 1)[0]
            old = f"{w[0]}  {tok}"
            new = f"{w[0]}  {anyname(tok, proto, **kw)}"
            if not tok.startswith("["):
                new = new[:33]
            if pad33:       # --stats / --rate: "%-33s" then the numbers
                out.append(new.ljust(33) + line[max(33, len(old)):])
            else:
                out.append(new + line[len(old):])
        elif not save and line.startswith("  -> ") and not line.startswith("  -> RemoteAddress"):
            tok = line[5:].split(" ", 1)[0]
            name = anyname(tok, proto, **kw)
            if not tok.startswith("["):
                name = name[:28]
            rest = line[5 + max(28, len(tok)):]
            out.append("  -> " + name.ljust(28) + rest)
        else:
            out.append(line)
    return "\n".join(out)


def name_connections(text: str, **kw) -> str:
    """Numeric `-L -c` output -> ipvsadm's without -n: the source, virtual
    and destination endpoints through anyname(), in its columns (`%-3s
    %-6s %-11s %-18s %-18s %s`; a longer name pushes the rest right)."""
    out = []
    for line in text.split("\n"):
        w = line.split()
        if len(w) >= 6 and w[0] in ("TCP", "UDP", "SCTP"):
            proto = _proto_of(w[0])
            src, vip, dst = (anyname(x, proto, **kw) for x in w[3:6])
            line = " ".join([f"{w[0]:<3} {w[1]:<6} {w[2]:<11} {src:<18} {vip:<18} {dst}",
                             *w[6:]])
        out.append(line)
    return "\n".join(out)


def _named(path: str, words: list[str], save: bool, pad33: bool, conns: bool = False) -> int:
    import io
    buf = io.StringIO()
    status = adm.main(["--control", path, *words], stdout=buf)
    text = buf.getvalue()
    if text:
        try:
            sys.stdout.write(name_connections(text) if conns else
                             name_listing(text, save, pad33))
            sys.stdout.flush()
        except BrokenPipeError:
            adm._quiet_stdout()
    return status


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
