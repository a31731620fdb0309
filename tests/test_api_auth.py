"""Token flows: login, expiry, refresh rotation, reuse detection (revokes the family), logout,
tampered and `alg: none` tokens, API keys, and `infrawatch users create`."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select
from tests.utils.api import JWT_SECRET, PASSWORD, ApiHarness, api_settings

from infrawatch import cli
from infrawatch.api import security
from infrawatch.api.models import ApiKey, User

ME = "/api/v1/auth/me"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiHarness]:
    h = ApiHarness(api_settings(tmp_path))
    h.add_user("alice", "operator")
    try:
        yield h
    finally:
        h.close()


def me(api: ApiHarness, token: str) -> int:
    return api.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code


def refresh(api: ApiHarness, token: str) -> tuple[int, dict[str, str]]:
    r = api.post("/api/v1/auth/refresh", json={"refresh_token": token})
    return r.status_code, r.json()


def test_login_and_me(api: ApiHarness) -> None:
    tokens = api.login("alice")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    r = api.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 200
    assert r.json() == {"kind": "user", "id": 1, "name": "alice", "role": "operator", "scopes": []}
    claims = jwt.decode(tokens["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900
    assert len(claims["jti"]) == 32
    bad = api.post("/api/v1/auth/token", data={"username": "alice", "password": "wrong password"})
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"] == "Bearer"
    assert (
        api.post("/api/v1/auth/token", data={"username": "nobody", "password": PASSWORD}).status_code == 401
    )
    assert api.get(ME).status_code == 401


def test_expired_access_token(api: ApiHarness) -> None:
    with api.state.sessions() as s:
        user = s.scalars(select(User)).one()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    expired = security.issue_access(user, JWT_SECRET, 60, now=past)
    valid = security.issue_access(user, JWT_SECRET, 60)
    assert me(api, valid) == 200
    r = api.get(ME, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_refresh_rotates_and_reuse_revokes_the_family(api: ApiHarness) -> None:
    first = api.login("alice")
    code, second = refresh(api, first["refresh_token"])
    assert code == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert me(api, second["access_token"]) == 200
    code, third = refresh(api, second["refresh_token"])
    assert code == 200
    # the spent first token comes back (a thief's copy): refused, and the whole login is revoked
    code, body = refresh(api, first["refresh_token"])
    assert code == 401
    assert "reused" in body["detail"]
    code, _ = refresh(api, third["refresh_token"])
    assert code == 401
    # another login of the same user is another family: untouched
    other = api.login("alice")
    assert refresh(api, other["refresh_token"])[0] == 200
    assert refresh(api, "not-a-token")[0] == 401


def test_expired_refresh_token(tmp_path: Path) -> None:
    h = ApiHarness(api_settings(tmp_path, refresh_ttl_s=1))
    try:
        h.add_user("bob", "viewer")
        tokens = h.login("bob")
        with h.state.sessions() as s:
            for row in s.scalars(select(security.RefreshToken)):
                row.expires_at = row.expires_at - dt.timedelta(seconds=5)
            s.commit()
        code, body = refresh(h, tokens["refresh_token"])
        assert code == 401
        assert "expired" in body["detail"]
    finally:
        h.close()


def test_logout_ends_access_and_refresh(api: ApiHarness) -> None:
    tokens = api.login("alice")
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = api.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=auth)
    assert r.status_code == 204
    assert me(api, tokens["access_token"]) == 401
    assert refresh(api, tokens["refresh_token"])[0] == 401


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_and_alg_none_tokens(api: ApiHarness) -> None:
    token = api.login("alice")["access_token"]
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    # role raised to admin, old signature kept
    forged = f"{header}.{_b64({**claims, 'role': 'admin', 'sub': '1'})}.{signature}"
    assert me(api, forged) == 401
    # signature bytes flipped
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert me(api, f"{header}.{payload}.{flipped}") == 401
    # alg none, no signature
    none = jwt.encode(claims, key=None, algorithm="none")
    assert me(api, none) == 401
    assert me(api, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.") == 401
    # signed with another key; HS512 with the right key (only HS256 is accepted)
    assert me(api, jwt.encode(claims, "another secret of enough bytes!!" * 2, algorithm="HS256")) == 401
    assert me(api, jwt.encode(claims, JWT_SECRET, algorithm="HS512")) == 401
    # a valid signature on a token of another type
    assert me(api, jwt.encode({**claims, "type": "refresh"}, JWT_SECRET, algorithm="HS256")) == 401
    assert me(api, token) == 200


def test_disabled_user_and_revoked_key(api: ApiHarness) -> None:
    token = api.login("alice")["access_token"]
    key = api.add_key("read")
    assert api.get(ME, headers={"X-API-Key": key}).status_code == 200
    assert api.get(ME, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with api.state.sessions() as s:
        s.scalars(select(User)).one().disabled = True
        s.scalars(select(ApiKey)).one().revoked_at = dt.datetime(2026, 1, 1)
        s.commit()
    assert me(api, token) == 401
    assert api.get(ME, headers={"X-API-Key": key}).status_code == 401
    assert api.get(ME, headers={"X-API-Key": "iwk_guessed"}).status_code == 401


def test_admin_manages_users_and_keys(api: ApiHarness) -> None:
    api.add_user("root", "admin")
    auth = api.bearer("root")
    r = api.post(
        "/api/v1/users", json={"username": "carol", "password": PASSWORD, "role": "viewer"}, headers=auth
    )
    assert r.status_code == 201
    assert (
        api.post(
            "/api/v1/users", json={"username": "carol", "password": PASSWORD, "role": "viewer"}, headers=auth
        ).status_code
        == 409
    )
    assert api.login("carol")["access_token"]
    r = api.post("/api/v1/apikeys", json={"name": "scada", "scopes": ["ingest"]}, headers=auth)
    assert r.status_code == 201
    key = r.json()["key"]
    assert api.get(ME, headers={"X-API-Key": key}).json()["scopes"] == ["ingest"]
    listed = api.get("/api/v1/apikeys", headers=auth).json()
    assert "key" not in listed[0]
    assert listed[0]["prefix"] == key[:12]
    assert api.request("DELETE", f"/api/v1/apikeys/{r.json()['id']}", headers=auth).status_code == 204
    assert api.get(ME, headers={"X-API-Key": key}).status_code == 401


def test_users_create_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("INFRAWATCH_API__DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("INFRAWATCH_NEW_USER_PASSWORD", "first admin password")
    monkeypatch.setenv("INFRAWATCH_API__ARGON2_MEMORY_KIB", "1024")
    assert cli.main(["users", "create", "root"]) == 0
    assert cli.main(["users", "create", "root"]) == 1  # exists: a message, not a traceback
    h = ApiHarness(api_settings(tmp_path, db_url=f"sqlite:///{db}"))
    try:
        assert h.login("root", "first admin password")["access_token"]
    finally:
        h.close()
