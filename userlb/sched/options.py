"""Per-service scheduler options (`svc.options`, userlb extensions of
ipvsadm): the parsing shared by the schedulers that read them.

* `int_option(raw)`: an option value given as an int (not a bool) or as a
  string of decimal digits (surrounding blanks allowed); None otherwise.
* `table_size(options)`: `mh_table_size`, the Maglev table size M of mh,
  mh-backport and mhs: one of maglev.PRIMES, default maglev.DEFAULT_SIZE
  (absent or None); anything else raises ConfigError.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigError
from . import maglev

OPT_TABLE_SIZE = "mh_table_size"


def int_option(raw: object) -> int | None:
    """`raw` as an int: an int that is not a bool, or a decimal string."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def table_size(options: Mapping[str, object] | None) -> int:
    """The validated Maglev table size M from a service's options."""
    raw = options.get(OPT_TABLE_SIZE) if options else None
    if raw is None:
        return maglev.DEFAULT_SIZE
    m = int_option(raw)
    if m is None or m not in maglev.PRIMES:
        raise ConfigError(
            f"invalid {OPT_TABLE_SIZE} {raw!r}: must be one of "
            + " ".join(str(p) for p in maglev.PRIMES))
    return m
