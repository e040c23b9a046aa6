"""The fuzz targets of fuzz/ (docs/fuzzing.md): a short bounded atheris pass
of each (a few thousand executions from its corpus in the repository, fixed
seed), and every corpus file run through the target without atheris."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
# target -> executions of the short pass (about 2-5 s each on one core)
TARGETS = {"packet_parse": 50_000, "engine_process": 5_000, "vnet_path": 5_000,
           "ipvsadm_rules": 8_000, "control_protocol": 3_000}


def _target(name):
    sys.path.insert(0, str(FUZZ))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(FUZZ))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_files_pass_the_target(name):
    files = sorted((FUZZ / "corpus" / name).iterdir())
    assert 5 <= len(files) <= 100
    assert sum(f.stat().st_size for f in files) < 64 * 1024      # a small corpus
    mod = _target(name)
    for f in files:
        mod.one_input(f.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_atheris_pass(name, tmp_path):
    pytest.importorskip("atheris")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    work = tmp_path / "corpus"
    work.mkdir()
    p = subprocess.run(
        [sys.executable, str(FUZZ / f"{name}.py"), f"-runs={TARGETS[name]}", "-seed=1",
         "-max_total_time=20", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
         str(work), str(FUZZ / "corpus" / name)],
        env=env, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "Uncaught Python exception" not in out
    assert not list(tmp_path.glob("crash-*")), out[-4000:]
    runs = [int(ln.split()[-1]) for ln in out.splitlines()
            if ln.startswith("stat::number_of_executed_units")]
    assert runs and runs[0] >= min(TARGETS[name], 1000), out[-2000:]
