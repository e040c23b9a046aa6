"""The health checker: `python -m toyweb.healthcheck VIP:PORT`.

What keepalived's HTTP_GET check does, in a few lines: read the service's
real servers from `ipvsadm -S -n`, GET http://RIP:PORT/health from each, and
set the weight of those that do not answer 200 to 0 (no new connections;
established ones go on), and of those that answer again back to 1.  It
calls the `ipvsadm` found on PATH: the kernel's in production, userlb's in
the tests.
"""
import subprocess
import sys
import urllib.request


def ipvsadm(*args):
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True,
                          text=True).stdout


def healthy(rip, timeout=1.0):
    host = rip.rsplit(":", 1)[0]
    url = f"http://{host}:{rip.rsplit(':', 1)[1]}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def check(service):
    """One round over the real servers of TCP service VIP:PORT; returns
    {rip: weight set}."""
    changes = {}
    for line in ipvsadm("-S", "-n").splitlines():
        w = line.split()
        if w[:3] != ["-a", "-t", service]:
            continue
        rip, weight = w[w.index("-r") + 1], int(w[w.index("-w") + 1])
        want = 1 if healthy(rip) else 0
        if want != weight:
            ipvsadm("-e", "-t", service, "-r", rip, "-m", "-w", str(want))
            changes[rip] = want
    return changes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    for rip, weight in check(argv[0]).items():
        print(f"{rip} weight {weight}")


if __name__ == "__main__":
    main()
