"""Traffic from the client namespace: one-shot runs and long-lived sessions.

`Sessions.client_py(FUNC, **kw)` runs `userlb.lab.client FUNC` once and
returns its JSON answer; `ClientSession` drives a long-running one (`session`:
steady echo traffic; `stream`: long-lived connections streaming checked data,
`Streams`) over its stdin/stdout, one JSON line per command.
"""
import json
import subprocess
import sys

from .base import LabError, sh
from .processes import child_env


def client_argv(func: str, kw: dict) -> list[str]:
    """The command line of `userlb.lab.client FUNC 'JSON-KWARGS'`."""
    return [sys.executable, "-m", "userlb.lab.client", func, json.dumps(kw)]


class Sessions:
    """Running things in a Lab's namespaces (mixed into it: uses its client)."""

    def exec(self, ns, argv, input=None, timeout=120, check=True):
        return sh(["ip", "netns", "exec", ns] + argv, input=input, timeout=timeout, check=check)

    def client_py(self, func, timeout=120, **kw):
        """Run userlb.lab.client.FUNC(**kw) inside the client namespace; its JSON result."""
        p = self.exec(self.client, client_argv(func, kw), timeout=timeout)
        return json.loads(p.stdout)

    def session(self, **kw):
        """Long-lived flows with steady traffic in the client namespace
        (userlb.lab.client.session); see ClientSession."""
        return ClientSession(self, kw)


class ClientSession:
    """Drives a long-running `userlb.lab.client MODE` (session, stream) in the
    client namespace over its stdin/stdout: one JSON line per command."""

    def __init__(self, lab, kw, mode="session", close_timeout=10.0):
        self.mode = mode
        self.close_timeout = close_timeout
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.client] + client_argv(mode, kw),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=child_env())
        self.flows = self._read()["flows"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise LabError(f"client {self.mode} ended: {err.strip()}")
        return json.loads(line)

    def _cmd(self, word):
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()
        return self._read()

    def report(self):
        return self._cmd("report")

    def pause(self):
        return self._cmd("pause")

    def resume(self):
        return self._cmd("resume")

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.close()
                self.p.wait(timeout=self.close_timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Streams(ClientSession):
    """`userlb.lab.client stream` in the client namespace, driven over its
    stdin/stdout: long-lived TCP echo connections with checked data."""

    def __init__(self, lab, vip_ports, count=50, chunk=1024, interval=0.05, timeout=20.0,
                 sources=None):
        kw = dict(vip_ports=vip_ports, sources=sources or lab.clients4 + lab.clients6,
                  count=count, chunk=chunk, interval=interval, timeout=timeout)
        self.timeout = timeout
        super().__init__(lab, kw, mode="stream", close_timeout=timeout + 10)

    def finish(self):
        """Stop streaming, half-close, wait for every echo's EOF; the final report."""
        return self._cmd("finish")
