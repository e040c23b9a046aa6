"""The lab's processes: the real servers and `userlb run` on each director.

Every process is started inside its namespace in a session of its own, its
PID recorded in the lab's state under a key ("director", "director2", "s1",
...).  Only a process whose command line carries the lab's tag or suffix is
ever signalled (`ours`): a PID that was reused by something else is left
alone.  The directors are talked to as an operator would: SIGHUP (reload the
rules file), SIGUSR1 (write the stats file), `userlb adm --control` and the
control socket.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

from .base import DISCARD, EXTRA_ECHO, REPLY_FROM, TUN, LabError, sh, short

ROOT = pathlib.Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment of a lab child: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def wait_for(cond, timeout, what):
    """Poll cond() every 20 ms until it returns something true (returned);
    after timeout seconds LabError(what, or what() if it is callable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise LabError(what() if callable(what) else what)


class Processes:
    """Process control of a Lab (mixed into it: uses its dir, pids, tag,
    sfx, servers, far, director_ns, n_directors, sloppy, paths and save())."""

    # ------------------------------------------------------------ any process
    def start(self, key, ns, argv, ready=None, log=None, timeout=15):
        """Start argv in namespace ns (new session, PID recorded under key);
        wait until `ready` appears in its stderr log."""
        log = log or str(self.dir / f"{key}.log")
        with open(log, "w") as lf:
            p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                                 stdout=lf, stderr=lf, start_new_session=True, env=child_env())
        self.pids[key] = p.pid
        self.save()
        if ready is None:
            return p

        def is_ready():
            with open(log) as f:
                text = f.read()
            if ready in text:
                return True
            if p.poll() is not None:
                raise LabError(f"{key} exited with {p.returncode}:\n{text.strip()}")
            return False

        def late():
            with open(log) as f:
                return f"{key} not ready after {timeout}s:\n{f.read().strip()}"

        wait_for(is_ready, timeout, late)
        return p

    def stop(self, key, timeout=5, hard=False):
        """Stop the process recorded under key, if any (SIGTERM; SIGKILL at
        once with hard=True): its PID or None."""
        pid = self.pids.pop(key, None)
        self.save()
        if pid:
            if hard and self.ours(pid):
                _sigkill(pid)
            self._kill(pid, timeout)
        return pid

    def ours(self, pid):
        """Does pid run one of this lab's commands?"""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return self.tag in cmd or self.sfx in cmd

    def _kill(self, pid, timeout=5):
        if not self.ours(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wpid, _ = os.waitpid(pid, os.WNOHANG)
                if wpid == pid:
                    return
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    return
                try:   # not our child (another `userlb lab` process started it)
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().split(")")[-1].split()[0] == "Z":
                            return
                except OSError:
                    return
            time.sleep(0.02)
        _sigkill(pid)

    def kill_all(self):
        """Stop every process of the lab, the directors first (so that they
        remove their routes while their namespaces exist); the errors."""
        errors = []
        keys = sorted(self.pids, key=lambda k: not k.startswith("director"))
        for key in keys:
            try:
                self._kill(self.pids[key])
            except Exception as e:   # noqa: BLE001
                errors.append(f"{key}: {e}")
        self.pids = {}
        return errors

    def _start_servers(self):
        for ns, _a4, _a6 in self.servers + ([self.far] if self.far else []):
            self.start_server(ns)

    # the real servers one by one (a hook: userlb.testing runs users' own
    # commands as real servers by overriding start_server)
    def start_server(self, ns):
        """Start the real server of namespace ns (the lab's servers.py), PID
        under its short name ("s1")."""
        return self.start(short(ns), ns,
                          [sys.executable, "-m", "userlb.lab.servers", "--name", short(ns),
                           "--discard", str(DISCARD), "--more-echo",
                           f"{EXTRA_ECHO[0]}-{EXTRA_ECHO[-1]}", "--lab", self.tag],
                          ready="ready")

    def stop_server(self, ns, hard=False):
        """Stop the real server of namespace ns (SIGTERM, SIGKILL with hard=True)."""
        return self.stop(short(ns), hard=hard)

    # ------------------------------------------------- per-director names
    # (K = 1: the names of the one-director lab)
    def director_key(self, k=1):
        return "director" if self.n_directors == 1 else f"director{k}"

    def control_of(self, k=1):
        return str(self.dir / ("control.sock" if self.n_directors == 1 else f"control-{k}.sock"))

    def log_of(self, k=1):
        return str(self.dir / ("director.log" if self.n_directors == 1 else f"director-{k}.log"))

    def stats_of(self, k=1):
        return str(self.dir / ("stats.txt" if self.n_directors == 1 else f"stats-{k}.txt"))

    def director_pid(self, k=1):
        return self.pids.get(self.director_key(k))

    # ------------------------------------------------------------- directors
    def director_argv(self, sloppy=None, extra=(), k=1):
        sloppy = self.sloppy if sloppy is None else sloppy
        argv = [sys.executable, "-m", "userlb.cli.main", "run", "--config", self.rules_path,
                "--tun", TUN, "--stats-file", self.stats_of(k), "--control", self.control_of(k)]
        for p in REPLY_FROM:
            argv += ["--reply-from", p]
        if sloppy:
            argv.append("--sloppy-tcp")
        return argv + list(getattr(self, "director_extra", ())) + list(extra)

    def start_director(self, sloppy=None, extra=()):
        """Start the director (K >= 2: every director, all with the same rules)."""
        if sloppy is not None:
            self.sloppy = sloppy
        if self.n_directors == 1:
            return self._start_one(1, extra=extra)
        return [self._start_one(k, extra=extra) for k in range(1, self.n_directors + 1)]

    def _start_one(self, k, sloppy=None, extra=()):
        return self.start(self.director_key(k), self.director_ns[k - 1],
                          self.director_argv(sloppy=sloppy, extra=extra, k=k),
                          ready="ready", log=self.log_of(k))

    def running_directors(self):
        """Numbers of the directors whose process runs."""
        return [k for k in range(1, self.n_directors + 1)
                if self.director_pid(k) and self.ours(self.director_pid(k))]

    def _talking_to(self):
        """The directors a reload or `adm_all` goes to."""
        return [1] if self.n_directors == 1 else self.running_directors()

    def stop_director(self, timeout=10):
        for k in range(1, self.n_directors + 1):
            self.stop(self.director_key(k), timeout)

    def signal_director(self, sig, k=None):
        """Send sig to the director (K >= 2: k, or every running director)."""
        ks = [k] if k is not None else self._talking_to()
        if not ks:
            raise LabError("no director is running")
        for k in ks:
            pid = self.director_pid(k)
            if not pid or not self.ours(pid):
                raise LabError("the director is not running" if self.n_directors == 1
                               else f"director {k} is not running")
            os.kill(pid, sig)

    def reload(self, text=None):
        """Write a new rules file (if given) and make the director(s) re-read it.
        Returns the (last) director's log line."""
        if text is not None:
            self.write_rules(text)
        ks = self._talking_to()
        before = {k: self._log_count("SIGHUP", k) for k in ks}
        for k in ks:
            self.signal_director(signal.SIGHUP, k)
        lines = []
        for k in ks:
            wait_for(lambda k=k: self._log_count("SIGHUP", k) > before[k], 10,
                     f"director {k} did not answer SIGHUP")
            with open(self.log_of(k)) as f:
                last = [line for line in f if "SIGHUP" in line][-1]
            if "applied" not in last:
                raise LabError(last.strip())
            lines.append(last.strip())
        return lines[-1]

    def _log_count(self, word, k=1):
        try:
            with open(self.log_of(k)) as f:
                return sum(1 for line in f if word in line)
        except FileNotFoundError:
            return 0

    def stats(self, timeout=5, k=None):
        """Ask the director (SIGUSR1) for its listing + counters (K >= 2:
        director k, default the first running one)."""
        if k is None:
            run = self.running_directors() if self.n_directors > 1 else [1]
            k = run[0] if run else 1
        path = self.stats_of(k)
        old = _mtime(path)
        self.signal_director(signal.SIGUSR1, k)

        def written():
            if _mtime(path) not in (old, None):
                with open(path) as f:
                    return (f.read(),)
            return None

        return wait_for(written, timeout, "the director did not write its stats")[0]

    def adm(self, *args, input=None, k=None):
        """`userlb adm --control <this lab's socket> ARGS` (CompletedProcess);
        K >= 2: director k (default 1)."""
        path = self.control_path if k is None else self.control_of(k)
        return sh([sys.executable, "-m", "userlb.cli.main", "adm", "--control", path]
                  + list(args), input=input, check=False)

    def adm_all(self, *args, input=None):
        """The same `userlb adm` command on every running director: {k: CompletedProcess}."""
        return {k: self.adm(*args, input=input, k=k) for k in self._talking_to()}

    def control_request(self, req, k=1):
        """One request on director k's control socket (userlb.control.protocol),
        without starting a process: the decoded response."""
        from ..control import protocol
        return protocol.request(self.control_of(k), req)


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _sigkill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
