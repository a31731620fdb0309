"""`infrawatch users create` and `infrawatch api serve` as real processes, configured the way the
local stack configures them (stack_env: secret files, the run directory's SQLite)."""

from __future__ import annotations

import httpx
import pytest
from tests.utils.served_api import served_api
from tests.utils.stack import Stack

pytestmark = pytest.mark.integration


def test_serve_with_the_stack_settings(stack: Stack) -> None:
    with served_api(stack.settings, "root", "served admin password", timeout_s=20) as api:
        status = httpx.get(f"{api.base}/api/v1/status", headers=api.auth)
        assert status.status_code == 200, status.text
        assert status.json()["broker"]["ok"]
        assert (stack.settings.run_dir / "api.db").is_file()  # the default database, under the run directory
