"""The pytest plugin of userlb: fixtures that build a load-balancer lab
(`userlb.testing.LbLab`) in network namespaces.

Loaded by the `pytest11` entry point of the userlb package (or `-p
userlb.testing.plugin`); it does nothing until a test asks for a fixture, and
importing it needs no root.

Fixtures (function scope):

* `userlb_lab` -- an LbLab that is up.  Its options (LbLab's keywords) come
  from the closest `@pytest.mark.userlb_lab(...)` marker (test, class or
  module `pytestmark`; the closer one wins per keyword) and from indirect
  parametrization (`parametrize("userlb_lab", [{...}], indirect=True)`,
  which wins over the markers; `schedulers(...)` writes that for you).
* `userlb_lab_factory` -- a function LbLab-keywords -> LbLab that is up, for
  tests that want several labs or build them late.

Without root, /dev/net/tun or iproute2 both fixtures skip the test with the
reason (not an error).  After the test -- passed, failed, or interrupted
with Ctrl-C (SIGINT) or SIGTERM -- every namespace and process of its labs
is removed; while a lab is being removed, SIGINT and SIGTERM wait.  Labs of
an earlier test process that was killed outright (SIGKILL) are removed when
the next session first builds one (`sweep_stale`).
"""
from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from . import LbLab

MARKER = "userlb_lab"
_SWEPT = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**options): options of the userlb_lab fixture (keywords of "
        "userlb.testing.LbLab: servers, rules, scheduler, scheduler_flags, server_command, "
        "server_port, clients, sloppy_tcp, directors)")


def schedulers(*names: str, **options: Any) -> pytest.MarkDecorator:
    """Run the test once per scheduler: `@schedulers("mh", "sh", "rr")` on a
    test that uses `userlb_lab` (options: more LbLab keywords for each)."""
    return pytest.mark.parametrize(MARKER, [dict(options, scheduler=n) for n in names],
                                   indirect=True, ids=list(names))


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a lab is up: SIGTERM ends the test like Ctrl-C does (pytest then
    tears the fixtures down) instead of killing the process on the spot."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _signals_wait() -> Iterator[None]:
    """SIGINT and SIGTERM are held back (not lost) while a lab is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _close_all(labs: list[LbLab]) -> None:
    errors: list[str] = []
    with _signals_wait():
        for lab in reversed(labs):
            errors += lab.close()
    if errors:
        warnings.warn("userlb lab removal: " + "; ".join(errors), stacklevel=1)


@pytest.fixture
def userlb_lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., LbLab]]:
    """A function LbLab-keywords -> LbLab that is up; all removed after the test."""
    from . import LbLab, sweep_stale, unavailable_reason
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"userlb lab: {reason}")
    if not request.config.stash.get(_SWEPT, False):
        request.config.stash[_SWEPT] = True
        sweep_stale()
    labs: list[LbLab] = []

    def make(**options: Any) -> LbLab:
        lab = LbLab(**options)
        labs.append(lab)
        return lab.up()             # a half-built lab is removed by up() itself

    with _sigterm_interrupts():
        try:
            yield make
        finally:
            _close_all(labs)


@pytest.fixture
def userlb_lab(request: pytest.FixtureRequest,
               userlb_lab_factory: Callable[..., LbLab]) -> LbLab:
    """A load-balancer lab that is up (see the module docstring for its options)."""
    options: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers(MARKER))):
        options.update(mark.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, dict):
            raise TypeError("indirect parametrization of userlb_lab takes dicts of "
                            "LbLab keywords")
        options.update(param)
    return userlb_lab_factory(**options)


__all__ = ["schedulers", "userlb_lab", "userlb_lab_factory"]
