"""Schedulers.  Importing this package registers every concrete scheduler."""
import importlib

# module names of the concrete schedulers; each registers itself at import
_MODULES = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "mh", "mhs")

for _m in _MODULES:
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as e:   # during development a module may not exist yet
        if e.name != f"{__name__}.{_m}":
            raise
