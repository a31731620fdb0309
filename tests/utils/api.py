"""The API under test: `create_app` on a temporary SQLite, driven through httpx's ASGI transport.

`ApiHarness` keeps one event loop for its client (the app's ingest lock and writer live on it),
creates users and API keys directly in the database, and logs in through the real token route.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from infrawatch.api import security
from infrawatch.api.app import create_app
from infrawatch.api.deps import AppState
from infrawatch.api.models import ApiKey, User
from infrawatch.config import ApiSettings, InfluxSettings, Settings

PASSWORD = "correct horse battery"
WEBHOOK_TOKEN = "grafana-webhook-token"
JWT_SECRET = "test-secret-of-sixty-four-bytes-so-hs512-forgeries-need-no-warn!"


def api_settings(tmp: Path, base: Settings | None = None, **api: Any) -> Settings:
    """`base` (the stack's settings) or settings pointing at a closed port, plus an API section."""
    if base is None:
        influx = InfluxSettings(
            url="http://127.0.0.1:9",
            api_password=SecretStr("x"),
            writer_password=SecretStr("x"),
            timeout_s=1.0,
        )
        base = Settings(run_dir=tmp, influx=influx)
    fields: dict[str, Any] = {
        "jwt_secret": SecretStr(JWT_SECRET),
        "webhook_token": SecretStr(WEBHOOK_TOKEN),
        "db_url": f"sqlite:///{tmp / 'api.db'}",
        # cheap hashes: the tests log in dozens of times (production keeps pwdlib's cost)
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        **api,
    }
    section = ApiSettings(**fields)
    return base.model_copy(update={"api": section, "model_dir": tmp / "models"})


class ApiHarness:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.state: AppState = self.app.state.infrawatch
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver", timeout=30.0
        )

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kw))

    def concurrently(self, method: str, url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
        """One request per element of `bodies` (keyword arguments), all in flight at once."""

        async def run() -> list[httpx.Response]:
            return list(await asyncio.gather(*(self.client.request(method, url, **kw) for kw in bodies)))

        return self.loop.run_until_complete(run())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.state.aclose())
        self.loop.close()

    # ------------------------------------------------------------------ principals
    def add_user(self, username: str, role: str, password: str = PASSWORD) -> int:
        with self.state.sessions() as s:
            user = User(username=username, password_hash=self.state.passwords.hash(password), role=role)
            s.add(user)
            s.commit()
            return user.id

    def add_key(self, scopes: str, name: str = "integrator") -> str:
        key = security.new_api_key()
        with self.state.sessions() as s:
            s.add(ApiKey(name=name, prefix=key[:12], key_hash=security.sha256(key), scopes=scopes))
            s.commit()
        return key

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        r = self.post("/api/v1/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        tokens: dict[str, Any] = r.json()
        return tokens

    def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login(username)['access_token']}"}
