"""The director's log: one line per event on stderr, as text
(`userlb run: MESSAGE`, the default) or as JSON lines (`--log-format json`:
{"time", "level", "prog", "msg"} plus the event's fields), filtered by
`--log-level`.  The control plane and `userlb run` log through `log()`; the
packet path never logs (it counts)."""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LOGGER = logging.getLogger("userlb")
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class _Json(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "prog": self.prog, "msg": record.getMessage()}
        out.update(getattr(record, "fields", None) or {})
        return json.dumps(out, sort_keys=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each line (tests and
    callers may replace it after configure())."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: str = "info", fmt: str = "text", prog: str = "userlb run",
              stream: TextIO | None = None) -> None:
    """Set the log's level and format (replaces an earlier configuration)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler: logging.Handler = (logging.StreamHandler(stream) if stream is not None
                                else _Stderr())
    handler.setFormatter(_Json(prog) if fmt == "json"
                         else logging.Formatter(f"{prog}: %(message)s"))
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False


def log(msg: str, level: str = "info", **fields: Any) -> None:
    """One log line; `fields` go into the JSON form (the text form has the
    message only)."""
    if not LOGGER.handlers:
        configure()
    LOGGER.log(getattr(logging, level.upper()), msg, extra={"fields": fields})
    for h in LOGGER.handlers:
        h.flush()
