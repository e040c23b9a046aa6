"""`userlb lab up --metrics ADDR:PORT` passes the option to the directors, and
`start-director` after `kill-director` starts the director with it again (the
lab keeps it in its state), so the metrics endpoint comes back."""
import json
import os
import subprocess
import sys

import pytest

from helpers.netns import needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

METRICS = "127.0.0.1:9787"


def test_start_director_keeps_the_up_options(tmp_path):
    env = dict(os.environ, USERLB_LAB_DIR=str(tmp_path))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab"] + list(args),
                              capture_output=True, text=True, env=env, timeout=120)

    def scrape(ns):
        return subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "5",
                               f"http://{METRICS}/metrics"], capture_output=True, text=True,
                              timeout=30).stdout

    try:
        p = run("up", "--directors", "2", "--servers", "2", "--clients", "1",
                "--metrics", METRICS)
        assert p.returncode == 0, p.stderr
        st = json.loads(run("status", "--json").stdout)
        assert st["director_extra"] == ["--metrics", METRICS]
        ns1 = st["director_namespaces"][0]
        assert f"metrics: ip netns exec {ns1} curl -s http://{METRICS}/metrics" in p.stdout
        assert "node_ipvs_connections_total" in scrape(ns1)
        assert run("kill-director", "1").returncode == 0
        assert scrape(ns1) == ""
        p = run("start-director", "1")
        assert p.returncode == 0, p.stderr
        st = json.loads(run("status", "--json").stdout)
        argv = open(f"/proc/{st['pids']['director1']}/cmdline").read().split("\0")
        assert argv[argv.index("--metrics") + 1] == METRICS
        assert "node_ipvs_connections_total" in scrape(ns1)
    finally:
        run("down", "--all")
