#!/usr/bin/env python3
"""Run every benchmark module bench/bench_*.py in its own process.

Each benchmark prints one JSON object per line:
{"name": ..., "value": ..., "unit": ...}.  This runner passes those lines
through unchanged (other output goes to stderr) and exits non-zero if a
benchmark failed.  `make bench` runs it; `bench/run.py NAME...` runs only the
modules whose file name contains one of the NAMEs.
"""
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def main(argv):
    mods = sorted(HERE.glob("bench_*.py"))
    if argv:
        mods = [m for m in mods if any(a in m.name for a in argv)]
    failed = []
    for mod in mods:
        proc = subprocess.run([sys.executable, str(mod)], stdout=subprocess.PIPE,
                              text=True, cwd=HERE.parent)
        for line in proc.stdout.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                print(line, file=sys.stderr)
                continue
            if isinstance(obj, dict) and {"name", "value", "unit"} <= obj.keys():
                print(json.dumps(obj), flush=True)
            else:
                print(line, file=sys.stderr)
        if proc.returncode:
            failed.append(mod.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
