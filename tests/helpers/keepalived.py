"""keepalived lab tests: a `userlb run --keepalived` director in the lab, and
reading its real servers and weights."""
import sys
import time

from userlb.lab.base import REPLY_FROM, TUN


def run_argv(lab, path, extra=()):
    """`userlb run --keepalived PATH` with the lab's device, control socket,
    stats file and reply prefixes."""
    argv = [sys.executable, "-m", "userlb.cli.main", "run", "--keepalived", path, "--tun", TUN,
            "--control", lab.control_path, "--stats-file", lab.stats_path, *extra]
    for p in REPLY_FROM:
        argv += ["--reply-from", p]
    return argv


def start_director(lab, conf, extra=()):
    """Write `conf` to the lab's keepalived.conf (path in lab.kconf) and start
    the director on it; returns once it is ready."""
    lab.kconf = str(lab.dir / "keepalived.conf")
    with open(lab.kconf, "w") as f:
        f.write(conf)
    lab.start("director", lab.director, run_argv(lab, lab.kconf, extra), ready="ready",
              log=lab.director_log)


def listing(lab):
    """{(vip line, 'rip:port'): weight} from `userlb adm -L -n`."""
    out = lab.adm("-L", "-n")
    text = out if isinstance(out, str) else out.stdout
    rows, svc = {}, None
    for line in text.splitlines():
        if line.startswith(("TCP", "UDP")):
            svc = line.split()[1]
        elif line.strip().startswith("->") and "Masq" in line:
            w = line.split()
            rows[(svc, w[1])] = int(w[3])
    return rows


def director_log(lab):
    with open(lab.director_log) as f:
        return f.read()


def wait_listing(lab, want, timeout=15, absent=()):
    """Wait until the listing holds every (service, real server): weight of
    `want` and none of `absent`; returns the listing (AssertionError with the
    log on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = listing(lab)
        if all(got.get(k) == v for k, v in want.items()) and not any(k in got for k in absent):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"listing never became {want}: {got}\n{director_log(lab)}")
        time.sleep(0.2)
