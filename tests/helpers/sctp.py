"""SCTP in the lab for tests: an SCTP service over the lab's real servers, and
raw-socket SCTP endpoints (userlb.lab.sctp_peer; this kernel has no SCTP
module) serving it in each real server's namespace."""
import json
import os
import subprocess
import sys

from userlb.lab import VIP4
from userlb.lab.rules import service_lines

PORT = 3868
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def service_rules(lab, sched="mh"):
    """The lab's rules plus an SCTP service VIP4:PORT over its real servers."""
    extra = "\n".join(service_lines("--sctp-service", VIP4, PORT, f"-s {sched}",
                                    [a4 for _n, a4, _a6 in lab.servers])) + "\n"
    return lab.rules_text(extra=extra)


def start_servers(lab):
    """An SCTP endpoint on PORT in each real server's namespace, ready."""
    servers = []
    try:
        for ns, _a4, _a6 in lab.servers:
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                                  "userlb.lab.sctp_peer", "serve", "--port", str(PORT)],
                                 stdout=subprocess.PIPE, text=True, env=ENV)
            servers.append(p)
            assert json.loads(p.stdout.readline())["event"] == "ready"
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers):
    for p in servers:
        p.terminate()
        p.wait(10)


def client_argv(src, sport, count, interval=0.05, limit=30.0):
    """argv of one client association to VIP4:PORT (userlb.lab.sctp_peer client)."""
    return [sys.executable, "-m", "userlb.lab.sctp_peer", "client", "--src", src,
            "--dst", VIP4, "--dport", str(PORT), "--sport", str(sport), "--count", str(count),
            "--interval", str(interval), "--limit", str(limit)]
