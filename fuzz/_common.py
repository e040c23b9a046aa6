"""Shared parts of the fuzz targets (fuzz/README in docs/fuzzing.md).

Each target module defines ``one_input(data: bytes) -> None``: it raises only
on a bug (an unhandled exception or a broken invariant), and ``main()`` hands
it to atheris.  The same function runs without atheris in the regression
tests (tests/fuzz/), so a crash input becomes a test by saving its bytes.

Stateful targets (engine, vnet) read their input as a sequence of records so
that the fuzzer can build flows packet by packet::

    u8   dt     time step code (index into DT_STEPS)
    u16  n      big-endian length of what follows
    n    bytes  the record (a packet; vnet: 10-byte header + packet)

A short tail that does not make a whole record is one last record.
"""
import contextlib
import sys

DT_STEPS = (0.0, 0.0, 0.001, 0.5, 3.0, 60.0, 130.0, 1000.0)
MAX_RECORDS = 64


def records(data):
    """bytes -> [(dt, record bytes)] as described above."""
    out = []
    i, n = 0, len(data)
    while i < n and len(out) < MAX_RECORDS:
        dt = DT_STEPS[data[i] & 7]
        if i + 3 > n:
            out.append((dt, data[i + 1:]))
            break
        ln = data[i + 1] << 8 | data[i + 2]
        out.append((dt, data[i + 3:i + 3 + ln]))
        i += 3 + ln
    return out


def pack_records(items):
    """[(dt_code, bytes)] -> the input format (used to write the seed corpus)."""
    out = bytearray()
    for code, raw in items:
        out += bytes((code,)) + len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def instrumented(enabled, include=("userlb",)):
    """Context for a target's imports: atheris's coverage instrumentation of
    the modules under `include` (packages) imported inside it when the target
    runs as a fuzzer (``enabled``), nothing when a test imports the target."""
    if not enabled:
        return contextlib.nullcontext()
    import atheris
    return atheris.instrument_imports(include=list(include))


#: True once run() hands a target to atheris (targets may then keep state
#: between inputs that a test replaying one input must not see)
FUZZING = False


def run(one_input):
    """Run one target under atheris with sys.argv's libFuzzer options."""
    global FUZZING
    import atheris
    FUZZING = True
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
