"""The longest test files first: `make test` runs a file per worker at a time (pytest-xdist's
``--dist loadfile``, which hands the files out in collection order), so a long file started
last would run alone at the end while the other worker idles."""

from __future__ import annotations

from typing import Final

import pytest

LONGEST_FIRST: Final = (
    "tests/reliability/test_crash_restart.py",
    "tests/reliability/test_dependency_faults.py",
    "tests/reliability/test_two_replicas.py",
    "tests/demo/test_demo_sandbox.py",
    "tests/e2e/test_uninstrumented.py",
    "tests/e2e/test_operator.py",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the order within a file, and of the rest, is kept
