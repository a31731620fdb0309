"""`infrawatch users create` and `infrawatch api serve` as real processes with a stack's settings,
configured the way the local stack configures them (stack_env: secret files, the run directory's
SQLite). Shared by the serve test and the API read benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infrawatch.config import Settings
from infrawatch.ingest.secrets import ensure_secret
from infrawatch.ingest.servers import free_port
from infrawatch.ingest.stack import stack_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServedApi:
    base: str  # http://127.0.0.1:PORT
    auth: dict[str, str]  # the created user's bearer header
    proc: subprocess.Popen[bytes]


@contextmanager
def served_api(
    settings: Settings, username: str, password: str, *, role: str = "admin", timeout_s: float = 30
) -> Iterator[ServedApi]:
    """Create `username` with `role`, serve the API on a free port, log in; stop it afterwards."""
    s = settings
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
        "INFRAWATCH_NEW_USER_PASSWORD": password,
    }
    cli = [sys.executable, "-m", "infrawatch.cli"]
    create = [*cli, "users", "create", username, "--role", role]
    subprocess.run(create, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*cli, "api", "serve", "--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "the API exited"
            assert time.monotonic() < deadline, f"the API did not come up in {timeout_s:.0f} s"
            time.sleep(0.1)
        tok = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": password})
        assert tok.status_code == 200, tok.text
        yield ServedApi(base, {"Authorization": f"Bearer {tok.json()['access_token']}"}, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
