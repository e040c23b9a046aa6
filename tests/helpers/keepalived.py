"""Reading a director's real servers and weights in keepalived lab tests."""
import time


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
