"""Schedulers.  Importing this package registers every concrete scheduler:
each module of the package is imported, and the scheduler modules register
their classes by name (base.register), so the registry is the one list of
scheduler names."""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
