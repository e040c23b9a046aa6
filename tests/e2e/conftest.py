"""The small client -- director -- real server topology of localvip_topo.py
as a fixture (`topo`), created per test and removed even on failure; a test
module may define its own `topo` instead."""
import pytest
from localvip_topo import Topo


@pytest.fixture
def topo(tmp_path):
    t = Topo()
    try:
        yield t.up(str(tmp_path))
    finally:
        t.down()
