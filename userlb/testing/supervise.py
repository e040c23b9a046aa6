"""Run a user's command as a lab real server, so that the lab can stop it.

    python -m userlb.testing.supervise --lab TAG --name NAME -- ARGV...

`userlb.testing` starts this wrapper (not ARGV itself) inside the real
server's namespace, in a session of its own: the lab recognises its
processes by the lab tag on their command line (userlb/lab/processes.py,
`ours`), which a user's own command does not carry.  The wrapper runs ARGV
as its child, in its process group, and

* on SIGTERM or SIGINT sends SIGTERM to the whole group (a shell and what it
  started, too), waits GRACE seconds, then SIGKILLs the group;
* exits with the child's status when the child ends by itself;
* gives the child PR_SET_PDEATHSIG = SIGKILL, so the child does not outlive a
  wrapper that was killed with SIGKILL.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

GRACE = 3.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the wrapper dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stop_group(child: subprocess.Popen[bytes]) -> int:
    """SIGTERM to our process group (not to ourselves), SIGKILL after GRACE."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = os.getpgrp()
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        if child.poll() is not None:
            break
        time.sleep(0.02)
    else:
        child.kill()
    code = child.wait()
    # whatever the command left behind in the group (a shell's children)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.killpg(group, signal.SIGKILL)     # ends this process too
    except ProcessLookupError:
        pass
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="userlb.testing.supervise")
    p.add_argument("--lab", required=True, help="the lab's tag (ulb-SUFFIX)")
    p.add_argument("--name", required=True, help="the real server's name (s1, s2, ...)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given after --")
    stop = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)
    except OSError as e:
        print(f"userlb.testing.supervise: {args.name}: cannot run {command[0]}: {e}",
              file=sys.stderr, flush=True)
        return 127
    while not stop:
        code = child.poll()
        if code is not None:
            return code if code >= 0 else 128 - code
        time.sleep(0.05)
    return _stop_group(child)


if __name__ == "__main__":
    sys.exit(main())
