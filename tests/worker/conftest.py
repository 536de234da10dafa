"""Fixtures for the worker tests (the helpers themselves are in rawguest.py)."""

import pytest

from rawguest import Host


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    yield h
    h.close()
