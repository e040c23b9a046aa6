"""`userlb ipvsadm-shim install|remove|status`: put userlb's `ipvsadm` where
tools look for it (/sbin/ipvsadm, /usr/sbin/ipvsadm), and take it back.

    userlb ipvsadm-shim install [--root DIR] [--control PATH] [--bind]
    userlb ipvsadm-shim remove  [--root DIR]
    userlb ipvsadm-shim status  [--root DIR]

install: the shim is a two-line shell script that runs userlb's ipvsadm
(userlb/cli/ipvsadm_main.py) with this Python and this userlb.  When a
Debian package owns the real ipvsadm, the real one is moved aside with
`dpkg-divert --local --rename --divert PATH.distrib --add PATH` (so package
upgrades keep it there); a real ipvsadm no package owns is renamed to
PATH.userlb-orig.  /sbin and /usr/sbin that are one directory (merged /usr)
get one shim.  Installing twice is a no-op.
remove: deletes the shim and undoes exactly what install did (the diversion
is removed with --rename: the real binary is back, bytes and mode unchanged).
--root DIR: act on the tree under DIR (dpkg-divert --root, dpkg-query
--admindir): for images and tests.
--bind: change nothing on disk: write the shim to a temporary file and
bind-mount it over the existing ipvsadm in the *current mount namespace* --
meant for `unshare -m --propagation private`, where it vanishes with the
namespace.  Refused when the mount namespace is the host's (PID 1's).
--control PATH: the control socket the shim's ipvsadm uses unless
USERLB_CONTROL is set.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile

TARGETS = ("/sbin/ipvsadm", "/usr/sbin/ipvsadm")
MARKER = "# userlb ipvsadm shim"
DIVERT_SUFFIX = ".distrib"
ORIG_SUFFIX = ".userlb-orig"


class ShimError(Exception):
    pass


def shim_text(control: str | None = None) -> str:
    import userlb
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(userlb.__file__)))
    lines = ["#!/bin/sh", f"{MARKER} (`userlb ipvsadm-shim remove` takes it away)"]
    if control:
        lines.append(f': "${{USERLB_CONTROL:={shlex.quote(control)}}}"; export USERLB_CONTROL')
    lines.append(f"USERLB_IPVSADM_ARGV0=\"$0\" PYTHONPATH={shlex.quote(pkg_parent)}"
                 f"${{PYTHONPATH:+:$PYTHONPATH}} exec {shlex.quote(sys.executable)} "
                 f"-m userlb.cli.ipvsadm_main \"$@\"")
    return "\n".join(lines) + "\n"


def is_shim(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return MARKER.encode() in head


def _targets(root: str) -> list[tuple[str, str]]:
    """[(path as tools name it, path on disk under root)], one per real file
    location (merged /usr: /sbin/ipvsadm and /usr/sbin/ipvsadm are one)."""
    seen: set[str] = set()
    out = []
    for t in TARGETS:
        disk = os.path.join(root, t.lstrip("/"))
        parent = os.path.dirname(disk)
        if not os.path.isdir(parent):
            continue
        key = os.path.join(os.path.realpath(parent), os.path.basename(disk))
        if key in seen:
            continue
        seen.add(key)
        out.append((t, disk))
    return out


def _dpkg_root(root: str) -> list[str]:
    return [] if os.path.realpath(root) == "/" else ["--root", root]


def _owned(root: str, path: str) -> bool:
    """A package owns `path` (any of its /sbin, /usr/sbin spellings)."""
    admindir = os.path.join(root, "var/lib/dpkg")
    if not os.path.isdir(admindir):
        return False
    try:
        p = subprocess.run(["dpkg-query", f"--admindir={admindir}", "-S", path],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return False
    return p.returncode == 0


def _dpkg_name(root: str, t: str) -> str | None:
    """The spelling dpkg knows the file under (merged /usr: /sbin/ipvsadm)."""
    names = [t] + [x for x in TARGETS if x != t]
    for n in names:
        if os.path.realpath(os.path.join(root, n.lstrip("/"))) == \
                os.path.realpath(os.path.join(root, t.lstrip("/"))) and _owned(root, n):
            return n
    return None


def _diverted(root: str, name: str) -> bool:
    p = subprocess.run(["dpkg-divert", *_dpkg_root(root), "--truename", name],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0 and p.stdout.strip() != name


def _run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ShimError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")


def _write(path: str, text: str) -> None:
    tmp = path + ".userlb-new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def install(root: str = "/", control: str | None = None) -> list[str]:
    done = []
    text = shim_text(control)
    for t, disk in _targets(root):
        if is_shim(disk):
            _write(disk, text)
            done.append(f"{t}: shim already installed (refreshed)")
            continue
        if os.path.lexists(disk):
            name = _dpkg_name(root, t)
            if name is not None:
                _run(["dpkg-divert", *_dpkg_root(root), "--local", "--rename",
                      "--divert", name + DIVERT_SUFFIX, "--add", name])
                done.append(f"{t}: real ipvsadm diverted to {name}{DIVERT_SUFFIX}")
            else:
                os.rename(disk, disk + ORIG_SUFFIX)
                done.append(f"{t}: real ipvsadm renamed to {t}{ORIG_SUFFIX}")
        _write(disk, text)
        done.append(f"{t}: userlb ipvsadm installed")
    return done


def remove(root: str = "/") -> list[str]:
    done = []
    for t, disk in _targets(root):
        if not is_shim(disk):
            if os.path.lexists(disk):
                done.append(f"{t}: not userlb's shim, left alone")
            continue
        os.unlink(disk)
        done.append(f"{t}: userlb ipvsadm removed")
        names = [n for n in TARGETS
                 if os.path.realpath(os.path.join(root, n.lstrip("/"))) == os.path.realpath(disk)]
        for n in names or [t]:
            if _diverted(root, n):
                _run(["dpkg-divert", *_dpkg_root(root), "--local", "--rename", "--remove", n])
                done.append(f"{t}: diversion removed, real ipvsadm back")
                break
        else:
            if os.path.lexists(disk + ORIG_SUFFIX):
                os.rename(disk + ORIG_SUFFIX, disk)
                done.append(f"{t}: real ipvsadm back from {t}{ORIG_SUFFIX}")
    return done


def status(root: str = "/") -> list[str]:
    out = []
    for t, disk in _targets(root):
        if is_shim(disk):
            out.append(f"{t}: userlb shim")
        elif os.path.lexists(disk):
            out.append(f"{t}: another ipvsadm")
        else:
            out.append(f"{t}: absent")
    return out


def _own_mount_ns() -> bool:
    """Is this process in a mount namespace other than the one it was
    started from?  Compared with PID 1's, or -- where that cannot be read
    (a container's PID 1) -- with the nearest ancestor in another one."""
    try:
        mine = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    try:
        return mine != os.readlink("/proc/1/ns/mnt")
    except OSError:
        pass
    pid = os.getppid()
    while pid > 1:
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") != mine:
                return True
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def bind(control: str | None = None) -> list[str]:
    if not _own_mount_ns():
        raise ShimError("--bind needs a private mount namespace (run it under "
                        "`unshare -m --propagation private`); this is the host's")
    fd, path = tempfile.mkstemp(prefix="userlb-ipvsadm-")
    os.close(fd)
    _write(path, shim_text(control))
    done = []
    try:
        for t, disk in _targets("/"):
            if not os.path.exists(disk):
                continue
            _run(["mount", "--bind", path, disk])
            done.append(f"{t}: userlb ipvsadm bind-mounted (this mount namespace only)")
    finally:
        os.unlink(path)     # the mounts keep the file; nothing is left behind in /tmp
    if not done:
        raise ShimError("--bind: no ipvsadm to mount over (" + ", ".join(TARGETS) + ")")
    return done


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="userlb ipvsadm-shim",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("action", choices=("install", "remove", "status"))
    p.add_argument("--root", default="/", help="act on the tree under DIR")
    p.add_argument("--control", metavar="PATH", help="control socket the shim uses")
    p.add_argument("--bind", action="store_true",
                   help="bind-mount over ipvsadm in this (private) mount namespace")
    a = p.parse_args(argv)
    try:
        if a.action == "install":
            lines = bind(a.control) if a.bind else install(a.root, a.control)
        elif a.action == "remove":
            lines = remove(a.root)
        else:
            lines = status(a.root)
    except (ShimError, OSError) as e:
        print(f"userlb ipvsadm-shim: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0
