"""Shared test set-up: tiers by marker, and helpers for Beam tests.

Tests under tests/unit are marked ``unit`` automatically; integration tests
mark themselves. Integration tests never skip: a missing service is a failure
with a message saying how to start it (``make stack-up``).
"""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/unit/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.unit)
