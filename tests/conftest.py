"""pytest configuration shared by every test directory: the `netns` fixture.
Helpers live in the tests/helpers package (tests/ is on sys.path, see
pyproject's pythonpath)."""
import shutil
import subprocess
import uuid

import pytest

from helpers.netns import HAVE_ROOT, HAVE_TUN, ROOT_REASON


@pytest.fixture
def netns():
    """A fresh, empty network namespace (lo up); yields its name; deleted after."""
    if not (HAVE_ROOT and HAVE_TUN):
        pytest.skip(ROOT_REASON)
    if shutil.which("ip") is None:
        pytest.fail("iproute2 missing: `make sysdeps` (apt-get install iproute2)")
    name = f"ulbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
