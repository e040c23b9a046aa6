"""The layering of docs/architecture.md ("Layering"), for every module under
userlb/.  Dependencies point one way::

    cli -> control -> dataplane.engine -> {proto, xmit, nat, packet, csum,
    conntrack, tcpstate, frag, stats} -> sched.base -> model

`sched/` and the dataplane (except its drivers) do no I/O and read no clock;
the engine reaches concrete schedulers through the registry only; `lab/` is
used by the CLI alone.  RULES below says it as a table; every module found
under userlb/ at test time is scanned (with `ast`, without importing it), so
a new module is covered the day it appears, and a module no row claims (a
new package) fails `test_every_module_has_a_layer` until the table says
where it sits.
"""
from __future__ import annotations

import ast
import fnmatch
import pathlib
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "userlb"

# Modules that talk to the kernel, the event loop or the clock.
IO_MODULES = ("asyncio", "uvloop", "pytun", "pyroute2", "socket", "select", "selectors",
              "time", "threading", "subprocess", "signal", "os", "logging")
# Heavy or control-plane-only libraries that never belong in the packet path.
FOREIGN = ("scapy", "ipaddress")

# The dataplane's drivers: they own file descriptors, routes and sockets.
DP_DRIVERS = ("userlb.dataplane.tun", "userlb.dataplane.steering",
              "userlb.dataplane.localvip", "userlb.dataplane.firstline",
              "userlb.dataplane.l2out")
# Modules that sit above the engine and drive it (drivers, vnet header glue).
DP_ABOVE_ENGINE = DP_DRIVERS + ("userlb.dataplane.vnet",)


class Rule(NamedTuple):
    modules: str                   # fnmatch glob over dotted module names
    forbidden: tuple[str, ...]     # globs over imported module names
    why: str
    allowed: tuple[str, ...] = ()  # exceptions to `forbidden`
    exempt: tuple[str, ...] = ()   # modules the glob matches but the rule spares


def _tree(*pkgs: str) -> tuple[str, ...]:
    """Globs for packages and everything under them."""
    return tuple(g for p in pkgs for g in (p, p + ".*"))


RULES = (
    # -- the bottom: model, errors, clock import nothing above them
    Rule("userlb.errors", ("userlb", "userlb.*"), "errors is a leaf"),
    Rule("userlb.clock", ("userlb", "userlb.*"), "clock is a leaf"),
    Rule("userlb.model", ("userlb", "userlb.*"),
         "model is the truth everything else reads; it depends on nothing above",
         allowed=("userlb.errors",)),
    # -- schedulers: below the dataplane, sans-I/O
    Rule("userlb.sched*", ("userlb", "userlb.*"),
         "sched imports only model, clock, errors and itself",
         allowed=("userlb.model", "userlb.clock", "userlb.errors", "userlb.sched",
                  "userlb.sched.*")),
    Rule("userlb.sched*", _tree(*IO_MODULES, *FOREIGN),
         "schedulers do no I/O and read no clock (one is injected)"),
    # -- dataplane: below control, no I/O but in its drivers, no concrete scheduler
    Rule("userlb.dataplane*", _tree("userlb.control", "userlb.cli", "userlb.lab"),
         "the dataplane is below the control plane"),
    Rule("userlb.dataplane*", ("userlb.sched", "userlb.sched.*"),
         "the engine reaches concrete schedulers through the registry only",
         allowed=("userlb.sched.base",)),
    Rule("userlb.dataplane*", _tree(*IO_MODULES, *FOREIGN),
         "the packet path does no I/O and reads no clock (drivers pass `now`)",
         exempt=DP_DRIVERS),
    Rule("userlb.dataplane*", DP_ABOVE_ENGINE,
         "the engine and its parts never reach up to the drivers",
         exempt=DP_ABOVE_ENGINE),
    Rule("userlb.dataplane*", ("userlb.dataplane.engine",),
         "the engine's parts (packet, csum, nat, conntrack, ...) are below it",
         exempt=DP_ABOVE_ENGINE + ("userlb.dataplane.engine",)),
    # the codecs: plain struct work, nothing but each other below them
    Rule("userlb.dataplane.packet", ("userlb.*",),
         "the packet codec is a leaf (protocol numbers come from model)",
         allowed=("userlb.dataplane.csum", "userlb.model")),
    Rule("userlb.dataplane.csum", ("userlb.*",), "checksums are a leaf"),
    # -- control: below the CLI
    Rule("userlb.control*", _tree("userlb.cli", "userlb.lab"),
         "the control plane is below the CLI and never uses the lab"),
    # -- exporters: read the control plane's counters for `userlb run`; below the CLI
    Rule("userlb.exporters*", _tree("userlb.cli", "userlb.lab", "userlb.testing"),
         "the exporters read the config and engine counters; the CLI starts them"),
    # -- lab: used by the CLI only, never uses it
    Rule("userlb.lab*", _tree("userlb.cli", "userlb.testing"),
         "the lab is driven by the CLI and userlb.testing, not the reverse"),
    # -- testing: the API for other projects' tests; a client of the lab (as the CLI is)
    Rule("userlb.testing*", _tree("userlb.cli"),
         "userlb.testing drives the lab and the control socket, never the CLI"),
    # -- announce: a client of the control socket for BGP speakers; below the CLI
    Rule("userlb.announce*", _tree("userlb.cli", "userlb.lab", "userlb.testing",
                                   "userlb.dataplane", "userlb.exporters"),
         "userlb announce talks to the director over its control socket only"),
    Rule("userlb.cli*", (), "the CLI is the top: it may import any layer"),
    Rule("userlb", (), "the package root"),
)

# Who may import the lab: the CLI, userlb.testing and the lab itself (checked
# for everyone else).
LAB_USERS = ("userlb.cli", "userlb.cli.*", "userlb.lab", "userlb.lab.*", "userlb.testing",
             "userlb.testing.*")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(node: ast.AST):
    """Every node under `node` except the bodies of `if TYPE_CHECKING:`
    (annotations only: no dependency when the program runs)."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def imports(name: str, path: pathlib.Path) -> set[str]:
    """Absolute names of the modules `path` imports when it runs (at any
    depth, function-level imports included; `if TYPE_CHECKING:` blocks left
    out).  `from pkg import x` counts as `pkg.x` when that is a module of
    userlb, else as `pkg`."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in MODULES else mod)
    return out


def _match(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def violations(name: str, imported: set[str]) -> list[str]:
    found = []
    for rule in RULES:
        if not fnmatch.fnmatchcase(name, rule.modules) or _match(name, rule.exempt):
            continue
        for imp in sorted(imported):
            if _match(imp, rule.forbidden) and not _match(imp, rule.allowed):
                found.append(f"{name} imports {imp}: {rule.why}")
    if not _match(name, LAB_USERS):
        found += [f"{name} imports {imp}: the lab is used by the CLI only"
                  for imp in sorted(imported) if _match(imp, ("userlb.lab", "userlb.lab.*"))]
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layering(name):
    assert violations(name, imports(name, MODULES[name])) == []


def test_every_module_has_a_layer():
    """A module no rule names (a new package) must be given a row first."""
    assert [n for n in MODULES if not any(fnmatch.fnmatchcase(n, r.modules) for r in RULES)] == []


def test_the_scan_sees_the_tree():
    """Guard against a scan that finds nothing (and so passes vacuously)."""
    for pkg in ("userlb.sched", "userlb.dataplane", "userlb.control", "userlb.cli", "userlb.lab"):
        assert pkg in MODULES and sum(n.startswith(pkg + ".") for n in MODULES) >= 3, pkg
    assert {"userlb.sched.base", "userlb.sched.mh", "userlb.dataplane.engine"} <= MODULES.keys()
    assert "userlb.sched.base" in imports("userlb.sched.mh", MODULES["userlb.sched.mh"])


def test_type_checking_imports_are_not_dependencies(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nimport struct\n"
                   "if TYPE_CHECKING:\n    from .sched.base import Scheduler\n"
                   "else:\n    import time\n"
                   "def f():\n    import socket\n")
    assert imports("userlb.m", src) == {"typing", "struct", "time", "socket"}


@pytest.mark.parametrize("name, imported, rule", [
    ("userlb.dataplane.engine", {"userlb.sched.mh"}, "registry"),
    ("userlb.dataplane.engine", {"userlb.sched"}, "registry"),
    ("userlb.dataplane.nat", {"time"}, "no I/O"),
    ("userlb.dataplane.conntrack", {"userlb.dataplane.engine"}, "below it"),
    ("userlb.dataplane.engine", {"userlb.dataplane.tun"}, "never reach up"),
    ("userlb.sched.mhs", {"asyncio"}, "no I/O"),
    ("userlb.sched.base", {"userlb.control.config"}, "only model, clock"),
    ("userlb.sched.mh", {"userlb.dataplane.packet"}, "only model, clock"),
    ("userlb.clock", {"userlb.model"}, "leaf"),
    ("userlb.model", {"userlb.sched.base"}, "depends on nothing above"),
    ("userlb.control.server", {"userlb.lab"}, "CLI only"),
    ("userlb.dataplane.packet", {"userlb.dataplane.nat"}, "leaf"),
])
def test_the_table_catches(name, imported, rule):
    """Each kind of breach is reported (the table is not vacuous)."""
    assert any(rule in v for v in violations(name, imported))


@pytest.mark.parametrize("name, imported", [
    ("userlb.dataplane.engine", {"userlb.sched.base", "struct", "userlb.model"}),
    ("userlb.dataplane.tun", {"os", "socket", "pytun", "userlb.dataplane.engine"}),
    ("userlb.cli.run", {"asyncio", "userlb.lab", "userlb.control.config"}),
])
def test_the_table_allows(name, imported):
    assert violations(name, imported) == []
