"""Shared pytest configuration.

Hypothesis runs derandomized by default, so CI is repeatable: a failure found once is found
every time. `HYPOTHESIS_PROFILE=explore` draws fresh examples (and more of them) instead.

The `stack` fixture starts real InfluxDB and Mosquitto processes (tests/utils/stack.py).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from tests.utils.stack import Stack, start_stack

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Real InfluxDB + Mosquitto on free loopback ports with the schema applied; stopped after."""
    s = start_stack(tmp_path / "run")
    try:
        yield s
    finally:
        s.close()
