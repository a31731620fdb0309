"""`infrawatch users create` and `infrawatch api serve` as real processes, configured the way the
local stack configures them (stack_env: secret files, the run directory's SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.utils.stack import Stack

from infrawatch.ingest.secrets import ensure_secret
from infrawatch.ingest.servers import free_port
from infrawatch.ingest.stack import stack_env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_serve_with_the_stack_settings(stack: Stack, tmp_path: Path) -> None:
    s = stack.settings
    port = free_port()
    api = s.api.model_copy(
        update={
            "port": port,
            "jwt_secret_file": ensure_secret(s.run_dir / "secrets" / "api-jwt"),
            "webhook_token_file": ensure_secret(s.run_dir / "secrets" / "api-webhook"),
        }
    )
    env = {
        **os.environ,
        **stack_env(s.model_copy(update={"api": api})),
        "PYTHONPATH": f"{ROOT / 'pysrc'}{os.pathsep}{ROOT}",
        "INFRAWATCH_NEW_USER_PASSWORD": "served admin password",
    }
    cli = [sys.executable, "-m", "infrawatch.cli"]
    subprocess.run([*cli, "users", "create", "root"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*cli, "api", "serve", "--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the API did not come up in 20 s"
            time.sleep(0.1)
        tok = httpx.post(
            f"{base}/api/v1/auth/token", data={"username": "root", "password": "served admin password"}
        )
        assert tok.status_code == 200
        auth = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        status = httpx.get(f"{base}/api/v1/status", headers=auth)
        assert status.status_code == 200, status.text
        assert status.json()["broker"]["ok"]
        assert (s.run_dir / "api.db").is_file()  # the default database, under the run directory
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
