"""The sans-I/O rule (ARCHITECTURE.md): the engine's modules import no I/O,
event loop or clock modules, no scapy, no ipaddress, and never a concrete
scheduler."""
import ast
import pathlib

import pytest

import userlb.dataplane as dp

MODULES = ["engine", "conntrack", "tcpstate", "stats", "frag"]
FORBIDDEN = {"asyncio", "uvloop", "pytun", "socket", "time", "select", "selectors",
             "threading", "scapy", "ipaddress", "logging", "os"}


def imported(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = "." * node.level + mod
            names.add(mod)
    return names


@pytest.mark.parametrize("mod", MODULES)
def test_no_io_imports(mod):
    path = pathlib.Path(dp.__file__).parent / f"{mod}.py"
    names = imported(path)
    for n in names:
        top = n.lstrip(".").split(".")[0]
        assert top not in FORBIDDEN or n.startswith("."), (mod, n)
        assert "sched." not in n and not n.endswith(".sched"), (mod, n)
