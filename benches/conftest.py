"""Benchmarks run against the release build; each group pits the Rust core against what a user would pick."""

from __future__ import annotations

import pytest

from infrawatch import _core


def pytest_sessionstart(session: pytest.Session) -> None:
    if _core.__build_profile__ != "release":
        pytest.exit(
            "infrawatch._core is a debug build: benchmarks need the release build — run `make bench` "
            "(or `maturin develop --release`)",
            returncode=2,
        )
