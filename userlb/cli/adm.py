"""`userlb adm`: ipvsadm for a running userlb director.

    userlb adm [--control PATH] IPVSADM-ARGS...
    userlb adm [--control PATH] --sloppy-tcp on|off
    userlb adm [--control PATH] --sloppy-sctp on|off
    userlb adm [--control PATH] --max-entries N
    userlb adm [--control PATH] --defense NAME=MODE [--amemthresh N]
    userlb adm [--control PATH] --show-settings
    userlb adm [--control PATH] --capture FILE [--count N] [--seconds S]

IPVSADM-ARGS are ipvsadm's (1.31): -A -E -D -C -a -e -d -R -S -Z --set
-L/-l, with -t/-u/--sctp-service SERVICE (IPv6 in brackets: -t [2001:db8::1]:80), -s, -b,
-p [timeout], -M netmask, -r, -m, -w, -x, -y, -o and the listing options -n
--stats --rate --timeout -c --exact --nosort --thresholds --persistent-conn.
-R reads the rules from standard input and adds them to the running
configuration all or nothing (ipvsadm-restore is `-C` then `-R`; here:
`(echo -C; cat rules) | userlb adm -R`).  Addresses and ports are numeric:
-n is implied.

The director is reached over its control socket, by default
/run/userlb/control.sock (`userlb run --control PATH` serves another one;
give the same PATH here, or set USERLB_CONTROL).  Only the user running the
director may use it.

userlb extensions:
  --sloppy-tcp on|off   switch IPVS sloppy TCP at run time (any TCP packet
                        but RST may create a connection); prints the settings
  --sloppy-sctp on|off  the same for SCTP (any chunk but ABORT may create an
                        association's entry, not only INIT; docs/sctp.md)
  --max-entries N       connection entry limit, live (new connections beyond it
                        are refused and counted as conn_limit); prints the settings
  --defense NAME=MODE   IPVS defense strategy, live: drop_entry, drop_packet or
                        secure_tcp = 0 (off), 1/2 (automatic), 3 (on); see
                        docs/ipvs.md §11; prints the settings
  --amemthresh N        free entry slots below which the automatic defenses
                        switch on (default 1024); prints the settings
  --show-settings       print the run-time settings (sloppy_tcp = 0|1, ...)
  --capture FILE        write the next N packets the director receives, each
                        with what it sent for it (before and after the
                        rewrite), to FILE as pcapng (Wireshark, tshark; "-" is
                        standard output); --count N (default 100), waiting at
                        most --seconds S (default 60).  Prints how many were
                        caught.

Exit status, as ipvsadm: 0 success; 2 a syntax error, no director
listening, or access refused; 255 a command the director refused (the
message, e.g. "Service already exists", goes to standard error; for -R the
offending line is named and nothing was changed).
"""
import os
import sys

from ..control import protocol as P

ENV_PATH = "USERLB_CONTROL"


def _usage():
    return __doc__


def split_args(argv):
    """-> (control path or None, extension request or None, ipvsadm words).
    Raises ValueError for a malformed userlb option."""
    path = None
    ext = None
    words = []
    i = 0
    while i < len(argv):
        w = argv[i]
        if w == "--control" or w.startswith("--control="):
            path, i = _option_value(argv, i, "--control", "PATH")
        elif w in ("--sloppy-tcp", "--sloppy-sctp") or w.startswith(
                ("--sloppy-tcp=", "--sloppy-sctp=")):
            name = w.split("=", 1)[0]
            v, i = _option_value(argv, i, name, "on|off")
            vals = {"on": True, "1": True, "yes": True, "off": False, "0": False, "no": False}
            if v not in vals:
                raise ValueError(f"{name}: expected on or off, not {v!r}")
            ext = {"settings": {**_settings_of(ext), name[2:].replace("-", "_"): vals[v]}}
        elif w == "--max-entries" or w.startswith("--max-entries="):
            v, i = _option_value(argv, i, "--max-entries", "N")
            if not (v.isascii() and v.isdigit()):
                raise ValueError(f"--max-entries: expected a positive integer, not {v!r}")
            ext = {"settings": {**_settings_of(ext), "max_entries": int(v)}}
        elif w == "--defense" or w.startswith("--defense="):
            v, i = _option_value(argv, i, "--defense", "NAME=MODE")
            name, _, mode = v.partition("=")
            if name not in ("drop_entry", "drop_packet", "secure_tcp") or mode not in (
                    "0", "1", "2", "3"):
                raise ValueError(f"--defense: expected drop_entry|drop_packet|secure_tcp=0..3, "
                                 f"not {v!r}")
            ext = {"settings": {**_settings_of(ext), name: int(mode)}}
        elif w == "--amemthresh" or w.startswith("--amemthresh="):
            v, i = _option_value(argv, i, "--amemthresh", "N")
            if not (v.isascii() and v.isdigit() and int(v) > 0):
                raise ValueError(f"--amemthresh: expected a positive integer, not {v!r}")
            ext = {"settings": {**_settings_of(ext), "amemthresh": int(v)}}
        elif w == "--show-settings":
            ext = {"settings": _settings_of(ext)}
        elif w in ("--capture", "--count", "--seconds") or w.startswith(
                ("--capture=", "--count=", "--seconds=")):
            name = w.split("=", 1)[0]
            v, i = _option_value(argv, i, name, "FILE" if name == "--capture" else "N")
            if ext is not None and "capture" not in ext:
                raise ValueError(f"{name} cannot be combined with --sloppy-tcp / "
                                 f"--max-entries / --show-settings")
            cap = dict((ext or {}).get("capture", {}))
            if name == "--capture":
                cap["file"] = v
            else:
                try:
                    num = int(v) if name == "--count" else float(v)
                except ValueError:
                    raise ValueError(f"{name}: expected a number, not {v!r}") from None
                cap[name[2:]] = num
            ext = {"capture": cap}
        else:
            words.append(w)
        i += 1
    if ext is not None and "capture" in ext:
        cap = ext["capture"]
        if "file" not in cap:
            raise ValueError("--count / --seconds go with --capture FILE")
        cap.setdefault("count", 100)
        cap.setdefault("seconds", 60.0)
        try:
            P.capture_args({"count": cap["count"], "seconds": cap["seconds"]})
        except P.ProtocolError as e:
            raise ValueError(str(e)) from None
    if ext is not None and words:
        raise ValueError(f"--sloppy-tcp / --max-entries / --show-settings / --capture cannot "
                         f"be combined "
                         f"with ipvsadm "
                         f"arguments ({' '.join(words)})")
    return path, ext, words


def _settings_of(ext):
    """The settings collected so far; ValueError if --capture came first."""
    if ext is not None and "settings" not in ext:
        raise ValueError("--capture cannot be combined with --sloppy-tcp / --max-entries / "
                         "--show-settings")
    return (ext or {}).get("settings", {})


def _option_value(argv, i, name, what):
    """The value of argv[i] (`NAME=VALUE`, or `NAME VALUE`) -> (value, index
    of the option's last word).  ValueError when the value is missing."""
    w = argv[i]
    if "=" in w:
        return w.split("=", 1)[1], i
    if i + 1 >= len(argv):
        raise ValueError(f"{name}: missing {what}")
    return argv[i + 1], i + 1


def main(argv, stdin=None, stdout=None, stderr=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        path, ext, words = split_args(list(argv))
    except ValueError as e:
        print(f"userlb adm: {e}", file=stderr)
        return P.STATUS_SYNTAX
    path = path or os.environ.get(ENV_PATH) or P.DEFAULT_PATH

    if ext is not None and "capture" in ext:
        return _capture(path, ext["capture"], stdout, stderr)
    if ext is not None:
        req = ext
    else:
        # syntax first, locally: no director is needed to learn of a typo
        from ..control import ipvsadm as ia
        from ..errors import ConfigError
        try:
            cmd = ia.parse_argv(words)
        except ConfigError as e:
            print(e.message, file=stderr)
            return P.STATUS_SYNTAX
        if cmd.cmd == ia.HELP:
            stdout.write(_usage())
            return 0
        if cmd.cmd == ia.VERSION:
            from ..control.server import version_text
            stdout.write(version_text())
            return 0
        req = {"argv": words}
        if cmd.cmd == ia.RESTORE:
            try:
                req["stdin"] = stdin.read()
            except UnicodeDecodeError as e:
                print(f"userlb adm: -R: standard input is not UTF-8 text ({e.reason} "
                      f"at byte {e.start})", file=stderr)
                return P.STATUS_SYNTAX

    try:
        resp = P.request(path, req)
    except P.NoDirector:
        print(f"no userlb director is listening on {path} (is `userlb run` running?)",
              file=stderr)
        return P.STATUS_SYNTAX
    except PermissionError:
        print(f"permission denied: {path} belongs to the director's user "
              f"(only that user may use it)", file=stderr)
        return P.STATUS_SYNTAX
    except (P.ProtocolError, OSError) as e:
        print(f"userlb adm: {path}: {e}", file=stderr)
        return P.STATUS_SYNTAX
    out = resp.get("output") or ""
    if out:
        try:
            stdout.write(out)
            stdout.flush()
        except BrokenPipeError:          # `userlb adm -Lnc | head`
            _quiet_stdout()
    if not resp.get("ok"):
        err = resp.get("error") or "failed"
        print(err, file=stderr)
        status = resp.get("status")
        return status if isinstance(status, int) and status else P.STATUS_REFUSED
    return 0


def _capture(path, cap, stdout, stderr):
    """--capture FILE: ask the director for the packets, write the file."""
    import base64
    req = {"capture": {"count": cap["count"], "seconds": cap["seconds"]}}
    try:
        resp = P.request(path, req, timeout=cap["seconds"] + 30.0)
    except P.NoDirector:
        print(f"no userlb director is listening on {path} (is `userlb run` running?)",
              file=stderr)
        return P.STATUS_SYNTAX
    except PermissionError:
        print(f"permission denied: {path} belongs to the director's user", file=stderr)
        return P.STATUS_SYNTAX
    except (P.ProtocolError, OSError) as e:
        print(f"userlb adm: {path}: {e}", file=stderr)
        return P.STATUS_SYNTAX
    if not resp.get("ok"):
        print(resp.get("error") or "failed", file=stderr)
        status = resp.get("status")
        return status if isinstance(status, int) and status else P.STATUS_REFUSED
    data = base64.b64decode(resp.get("pcap") or "")
    try:
        if cap["file"] == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            with open(cap["file"], "wb") as f:
                f.write(data)
    except OSError as e:
        print(f"userlb adm: --capture {cap['file']}: {e.strerror}", file=stderr)
        return 1
    n = resp.get("packets", 0)
    msg = (f"{n} packet(s) received by the director captured"
           + ("" if n >= cap["count"] else f" (of {cap['count']}: --seconds "
                                            f"{cap['seconds']:g} ran out)")
           + ("" if cap["file"] == "-" else f" to {cap['file']}"))
    print(msg, file=stderr if cap["file"] == "-" else stdout)
    return 0


def _quiet_stdout():
    """The reader went away: no traceback when Python flushes stdout at exit."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
