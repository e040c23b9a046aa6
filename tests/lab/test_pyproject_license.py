"""The package builds without a deprecation warning (issue 21: the first
`make` printed setuptools' "project.license as a TOML table is deprecated"
three times): the licence is an SPDX string, which needs setuptools >= 77,
and the build requires that."""
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_string_and_setuptools_can_read_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    (req,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", req.replace(" ", ""))
    assert m and int(m.group(1)) >= 77, req


def test_wheel_builds_without_deprecation_warning(tmp_path):
    """What `make` does (pip, isolated build with the setuptools the build
    requires), on a copy of the sources (the build writes build/ and
    *.egg-info next to pyproject.toml)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "userlb", src / "userlb",
                    ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                        str(tmp_path / "wheel"), str(src)],
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "deprecat" not in out.lower(), out
    (whl,) = (tmp_path / "wheel").glob("userlb-*.whl")
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: MIT" in z.read(name).decode().splitlines()
