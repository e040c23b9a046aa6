"""docs/testing-with-userlb.md shows the code the tests run: its example
test file is examples/failover/tests/test_failover.py byte for byte, and its
CI job runs the commands tests/testing/test_example.py runs."""
import pathlib
import re
import shlex

from test_example import PIP_INSTALL, PYTEST
from yaml_subset import read_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "testing-with-userlb.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_example_block_is_the_example_file():
    marker = re.search(r"<!-- this block is (\S+) .*?-->\n```python\n(.*?)```", DOC, flags=re.S)
    assert marker, "the marked example block is missing"
    path, body = marker.groups()
    assert path == "examples/failover/tests/test_failover.py"
    assert body == (ROOT / path).read_text()


def test_ci_job_runs_what_the_test_runs():
    (yml,) = blocks("yaml")
    job = read_yaml(yml)["jobs"]["example"]
    runs = [shlex.split(s["run"]) for s in job["steps"] if isinstance(s, dict) and "run" in s]
    venv, install, test = runs
    assert venv == ["python", "-m", "venv", "/tmp/venv"]
    assert install[0] == "/tmp/venv/bin/pip" and ["-m", "pip", *install[1:2]] == PIP_INSTALL
    assert install[2:] == [".", "./examples/failover[test]"]
    assert test[:3] == ["cd", "examples/failover", "&&"]
    assert test[3:5] == ["sudo", "/tmp/venv/bin/python"] and test[5:] == PYTEST


def test_links_resolve():
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", DOC):
        assert (ROOT / "docs" / target).resolve().exists(), target
