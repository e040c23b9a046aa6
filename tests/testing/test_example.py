"""The example project (examples/failover) the way its CI job runs it: a
clean virtualenv, `pip install` of userlb from this checkout and of the
example with its test extra, then `pytest` in the example -- the plugin comes
from the installed package's entry point, nothing from this checkout is on
the path.

Offline once primed: the dependencies' wheels are kept in
.cache/example-wheels (filled by `pip download` the first time, with
whatever index pip is configured for) and installed with --no-index.  The
sources are copied to a temporary directory first, so that the build leaves
nothing in the checkout."""
import os
import pathlib
import shutil
import subprocess
import sys
import time
import tomllib

import pytest

from helpers.netns import needs_root

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "failover"
WHEELS = ROOT / ".cache" / "example-wheels"

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

# what the CI job of docs/testing-with-userlb.md runs (test_docs.py compares)
PIP_INSTALL = ["-m", "pip", "install"]
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]


def requirements():
    """userlb's dependencies, the example's test extra (but userlb) and the
    build backend: what the clean virtualenv installs."""
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ex = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    reqs = list(ours["project"]["dependencies"])
    reqs += [r for r in ex["project"]["optional-dependencies"]["test"] if r != "userlb"]
    reqs += ex["build-system"]["requires"] + ours["build-system"]["requires"]
    return sorted(set(reqs))


def prime_wheels():
    """Every wheel needed, in WHEELS (downloaded only when one is missing)."""
    reqs = requirements()
    WHEELS.mkdir(parents=True, exist_ok=True)
    offline = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-index",
                              "--find-links", str(WHEELS), "-d", str(WHEELS), *reqs],
                             capture_output=True, text=True, timeout=120)
    if offline.returncode == 0:
        return
    online = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary",
                             ":all:", "-d", str(WHEELS), *reqs],
                            capture_output=True, text=True, timeout=600)
    assert online.returncode == 0, (
        f"cannot fetch the wheels for the example's virtualenv ({' '.join(reqs)}):\n"
        f"{online.stderr}")


def copy_sources(dest):
    """What `pip install <checkout>` builds from, and the example project."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    src = dest / "userlb-src"
    shutil.copytree(ROOT / "userlb", src / "userlb", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(EXAMPLE, dest / "failover", ignore=ignore)
    return src, dest / "failover"


def test_example_project_in_a_clean_virtualenv(tmp_path):
    t0 = time.monotonic()
    prime_wheels()
    src, example = copy_sources(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV", "PYTHONHOME")}
    env["USERLB_LAB_DIR"] = str(tmp_path / "state")
    env["PIP_NO_INDEX"] = "1"
    p = subprocess.run([py, *PIP_INSTALL, "-q", "--no-index", "--find-links",
                        str(WHEELS), str(src), f"{example}[test]"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    t_install = time.monotonic() - t0
    # the installed package, not this checkout
    where = subprocess.run([py, "-c", "import userlb.testing, toyweb; "
                            "print(userlb.testing.__file__); print(toyweb.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
    p = subprocess.run([py, *PYTEST],
                       cwd=example, capture_output=True, text=True, env=env, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "5 passed" in p.stdout, out
    # nothing of the example's labs is left: no state, no process that
    # belongs to a lab kept in our state directory (their command lines name it)
    assert not any((tmp_path / "state").iterdir())
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert [line for line in ps.splitlines() if str(tmp_path / "state") in line] == []
    # the entry point's name is the documented switch: `-p no:userlb`
    p = subprocess.run([py, *PYTEST, "-p", "no:userlb", "-k", "every_server"], cwd=example,
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "fixture 'userlb_lab' not found" in p.stdout, p.stdout
    print(f"clean virtualenv + install: {t_install:.1f}s, "
          f"example tests: {time.monotonic() - t0 - t_install:.1f}s")
