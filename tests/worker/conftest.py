"""Fixtures for the worker tests (the helpers themselves are in rawguest.py)."""

import pytest

from rawguest import Host
from test_process import worker  # noqa: F401 (the fixture: a real worker process, for the tests beside it too)


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    yield h
    h.close()
