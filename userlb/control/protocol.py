"""The control socket's wire format: JSON lines, one request, one response.

The director (`userlb run`) serves a unix stream socket (default
DEFAULT_PATH = /run/userlb/control.sock; `userlb run --control PATH` and
`userlb adm --control PATH` pick another one).  A client writes one request
per line and reads one response line per request; several requests may share
one connection, in order.  Every line is a UTF-8 JSON object followed by
"\\n" (JSON never contains a raw newline, so framing is trivial).

Requests (exactly one of argv / rules / settings):

    {"argv": ["-A", "-t", "10.0.0.1:80", "-s", "mh"]}
        one ipvsadm command (the words after `ipvsadm`);
    {"argv": ["-R"], "stdin": "-A -t ...\\n-a -t ...\\n"}
        ipvsadm -R: the rules come in "stdin"; all or nothing;
    {"rules": "-A -t ...\\n"}
        shorthand for the previous one;
    {"settings": {"sloppy_tcp": true}}
        userlb run-time settings (extension): set the given ones;
    {"settings": {}}
        show them (nothing set);
    {"state": true}
        the configuration as ipvsadm -R rules and the last weights (for
        `userlb simulate --control`);
    {"capture": {"count": N, "seconds": S}}
        record the next N packets the director receives, with what it sends
        for each, for at most S seconds (`userlb adm --capture FILE`); the
        answer carries the pcapng file base64-encoded in "pcap" and the
        number of packets received in "packets".

An optional "id" (any JSON value) is echoed back unchanged.

Response:

    {"ok": true,  "output": "<text for stdout>", "error": "",        "status": 0}
    {"ok": false, "output": "",                 "error": "<message>", "status": 255}

`status` is the exit code `userlb adm` ends with, as ipvsadm's: 0 success,
2 a syntax error (ipvsadm's fail(2, ...)) or a refused peer, 255 a command
the director refused (ipvsadm returns -1 for a kernel error: "Service
already exists", "No such destination", ...).

Access: only the user that owns the socket (the one running the director) may
use it at all -- not even listings for others, and root is not an exception
unless it is that user.  The socket file is mode 0600 and the server also
checks the peer's uid (SO_PEERCRED) on every connection.
"""
from __future__ import annotations

import json
import socket
import struct
from typing import Any

#: a decoded request or response
Message = dict[str, Any]

DEFAULT_PATH = "/run/userlb/control.sock"

#: longest request line the server accepts (a big -R file fits)
MAX_LINE = 64 * 1024 * 1024

STATUS_OK = 0
STATUS_SYNTAX = 2
STATUS_REFUSED = 255

_UCRED = struct.Struct("3i")     # pid, uid, gid


class ProtocolError(Exception):
    """A request line that is not a valid request."""


def encode(obj: Message) -> bytes:
    """One JSON line (bytes, newline-terminated)."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> Message:
    """bytes/str line -> dict; ProtocolError when it is not a JSON object."""
    if isinstance(line, bytes):
        # decoded here as UTF-8: json.loads(bytes) guesses UTF-16/32 from NUL
        # bytes and would report binary garbage as a "utf-16" error
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"not a JSON line: not UTF-8 text ({e.reason} at byte "
                                f"{e.start}); the control socket takes one JSON object "
                                f"a line") from None
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    except RecursionError:
        raise ProtocolError("not a JSON line: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a request must be a JSON object")
    return obj


def response(ok: bool, output: str = "", error: str = "", status: int | None = None,
             req_id: Any = None) -> Message:
    if status is None:
        status = STATUS_OK if ok else STATUS_REFUSED
    r: Message = {"ok": bool(ok), "output": output, "error": error, "status": status}
    if req_id is not None:
        r["id"] = req_id
    return r


def check_request(req: Message) -> str:
    """Validate the shape of a decoded request; return its kind:
    'argv' | 'rules' | 'settings' | 'state'.  Raises ProtocolError."""
    kinds = [k for k in ("argv", "rules", "settings", "state", "capture") if k in req]
    if len(kinds) != 1:
        raise ProtocolError("a request needs exactly one of 'argv', 'rules', 'settings', "
                            "'state', 'capture'")
    kind = kinds[0]
    if kind == "argv":
        argv = req["argv"]
        if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv):
            raise ProtocolError("'argv' must be a list of strings")
        if "stdin" in req and not isinstance(req["stdin"], str):
            raise ProtocolError("'stdin' must be a string")
    elif kind == "rules":
        if not isinstance(req["rules"], str):
            raise ProtocolError("'rules' must be a string")
    elif kind == "state":
        if req["state"] is not True:
            raise ProtocolError("'state' must be true")
    elif kind == "capture":
        capture_args(req["capture"])
    else:
        if not isinstance(req["settings"], dict):
            raise ProtocolError("'settings' must be an object")
    return kind


#: bounds of a capture request
MAX_CAPTURE_COUNT = 100_000
MAX_CAPTURE_SECONDS = 3600.0


def capture_args(c: Any) -> tuple[int, float]:
    """The (count, seconds) of a capture request's object.  Raises
    ProtocolError."""
    if not isinstance(c, dict) or set(c) - {"count", "seconds"}:
        raise ProtocolError("'capture' must be an object with 'count' and 'seconds'")
    n: Any = c.get("count")
    t: Any = c.get("seconds")
    if type(n) is not int or not 1 <= n <= MAX_CAPTURE_COUNT:
        raise ProtocolError(f"capture count must be an integer from 1 to {MAX_CAPTURE_COUNT}")
    if type(t) not in (int, float) or not 0 < t <= MAX_CAPTURE_SECONDS:
        raise ProtocolError(f"capture seconds must be a number above 0 and at most "
                            f"{MAX_CAPTURE_SECONDS:g}")
    return n, float(t)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    uid: int = _UCRED.unpack(raw)[1]
    return uid


def peer_cred(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return int(pid), int(uid)


class NoDirector(Exception):
    """Nobody listens on the control socket."""


def request(path: str, req: Message, timeout: float = 30.0) -> Message:
    """Blocking client: send one request to the socket at `path`, return the
    decoded response.  Raises NoDirector when nothing listens there,
    PermissionError when the socket is not ours, ProtocolError on a bad
    answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            raise NoDirector(path) from e
        data = encode(req)
        if len(data) > MAX_LINE:
            raise ProtocolError(f"request too large: {len(data)} bytes, the control socket "
                                f"takes lines of at most {MAX_LINE} bytes")
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass          # the server hung up early (a refusal): read its answer
        buf = bytearray()
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                if buf:
                    break
                raise ProtocolError("the director reset the connection without an "
                                    "answer") from None
            if not chunk:
                break
            buf += chunk
        if not buf:
            raise ProtocolError("the director closed the connection without an answer")
        return decode(bytes(buf))
    finally:
        s.close()
