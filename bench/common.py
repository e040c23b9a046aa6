"""Helpers shared by the benchmarks: timing loops and the JSON line format."""
import json
import statistics
import time


def emit(name, value, unit, **extra):
    """Print one benchmark result line."""
    obj = {"name": name, "value": value, "unit": unit}
    obj.update(extra)
    print(json.dumps(obj), flush=True)


def ns_per_call(fn, n, runs=5):
    """Median over `runs` runs of the time per call of fn(), called n times per run (ns)."""
    results = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        results.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(results)


def median_of(fn, runs=5):
    """Median of fn() over runs (fn returns a number)."""
    return statistics.median(fn() for _ in range(runs))
