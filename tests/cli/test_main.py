"""`userlb` itself: --version, and the top-level help naming every command
and every `lab` action (as a subprocess through the installed script's module)."""
import argparse
import subprocess
import sys
from importlib.metadata import version

from userlb.cli import lab as lab_cli
from userlb.cli.main import COMMANDS


def _userlb(*args):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", *args],
                          capture_output=True, text=True, timeout=60)


def test_version():
    for flag in ("--version", "-V"):
        p = _userlb(flag)
        assert p.returncode == 0 and p.stdout == f"userlb {version('userlb')}\n", p


def test_help_lists_every_command_and_every_lab_action():
    p = _userlb("--help")
    assert p.returncode == 0 and "--version" in p.stdout
    for name in COMMANDS:
        assert f"  {name} " in p.stdout
    sub = next(a for a in lab_cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    lab_line = next(line for line in p.stdout.splitlines() if line.strip().startswith("lab "))
    for action in sub.choices:
        assert action in lab_line, (action, lab_line)


def test_readme_run_synopsis_names_every_option():
    from pathlib import Path

    from userlb.cli.run import build_parser
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    synopsis = readme[readme.index("userlb run --config rules.conf"):]
    synopsis = synopsis[:synopsis.index("```")]
    for action in build_parser()._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                assert opt in synopsis, opt
