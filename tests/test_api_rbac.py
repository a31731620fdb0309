"""RBAC matrix from the app's own route table: every route × every role, API-key scope and the
anonymous caller gets the status the permission table (infrawatch.api.permissions) intends.

A route without a permission guard, or a non-API route not listed as public, fails here; so does
a guard naming a permission the table lacks (Permission() refuses it at import)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.utils.api import WEBHOOK_TOKEN, ApiHarness, api_settings

from infrawatch.api import permissions
from infrawatch.api.app import route_table
from infrawatch.api.deps import Permission

ROOT = Path(__file__).resolve().parent.parent
CALLERS = ("admin", "scientist", "operator", "viewer", "key:read", "key:ingest", "anonymous")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiHarness, dict[str, dict[str, str]]]]:
    h = ApiHarness(api_settings(tmp_path_factory.mktemp("rbac")))
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for role in permissions.ROLES:
        h.add_user(f"u-{role}", role)
        headers[role] = h.bearer(f"u-{role}")
    for scope in permissions.SCOPES:
        headers[f"key:{scope}"] = {"X-API-Key": h.add_key(scope)}
    try:
        yield h, headers
    finally:
        h.close()


def guards(dependant: Any) -> Iterator[Permission]:
    for d in dependant.dependencies:
        if isinstance(d.call, Permission):
            yield d.call
        yield from guards(d)


def route_permissions(api: ApiHarness) -> list[tuple[str, str, str, Any]]:
    """(method, path, permission, route) for every route the app serves."""
    out = []
    for route in route_table(api.app):
        dependant = getattr(route, "dependant", None)
        methods = sorted(set(route.methods or ()) - {"HEAD"})
        if dependant is None:
            assert route.path in permissions.PUBLIC_PATHS, f"{route.path} has no permission and is not public"
            perms = [permissions.PUBLIC]
        else:
            perms = sorted({g.permission for g in guards(dependant)})
            assert len(perms) == 1, f"{methods} {route.path}: expected one permission guard, found {perms}"
        out += [(m, route.path, perms[0], route) for m in methods]
    return out


def expected(permission: str, caller: str) -> set[int] | None:
    """The statuses a caller must get; None: anything but 401/403 (and never a 5xx but 503)."""
    if permission == permissions.PUBLIC:
        return None
    if permission == permissions.WEBHOOK:
        return {401}  # no caller here carries Grafana's token
    if caller == "anonymous":
        return {401}
    role, scopes = (None, frozenset({caller[4:]})) if caller.startswith("key:") else (caller, frozenset())
    return None if permissions.allowed(permission, role, scopes) else {403}


INT_PARAMS = ("user_id", "key_id", "alert_id")


def fill(path: str) -> str:
    # ids that exist nowhere: a permitted DELETE must not remove the test's own users
    return re.sub(r"\{(\w+)\}", lambda m: "999999" if m.group(1) in INT_PARAMS else "x-none", path)


def test_every_route_has_one_known_permission(api: tuple[ApiHarness, Any]) -> None:
    rows = route_permissions(api[0])
    assert len(rows) > 40
    assert {p for _, _, p, _ in rows} <= set(permissions.PERMISSIONS)
    # every permission of the table guards some route (no dead rows)
    assert set(permissions.PERMISSIONS) == {p for _, _, p, _ in rows}


def test_matrix(api: tuple[ApiHarness, dict[str, dict[str, str]]]) -> None:
    h, headers = api
    failures = []
    checked = 0
    for method, path, permission, _ in route_permissions(h):
        url = fill(path)
        for caller in CALLERS:
            body: dict[str, Any] = {}
            if method in ("POST", "PATCH", "PUT"):
                body = {"data": {}} if path.endswith("/auth/token") else {"json": {}}
            r = h.request(method, url, headers=headers[caller], **body)
            want = expected(permission, caller)
            checked += 1
            ok = r.status_code in want if want else r.status_code not in (401, 403)
            if r.status_code >= 500 and r.status_code != 503:
                ok = False
            if path.endswith("/auth/logout") and r.status_code == 204:
                headers[caller] = h.bearer(f"u-{caller}")  # that session has ended: a new one
            if not ok:
                failures.append(f"{caller:10} {method:6} {path}: {r.status_code} (want {want or 'allowed'})")
    assert not failures, "\n".join(failures)
    assert checked >= 40 * len(CALLERS)


def test_webhook_token_is_the_only_way_in(api: tuple[ApiHarness, dict[str, dict[str, str]]]) -> None:
    h, headers = api
    body = {"status": "firing", "alerts": []}
    assert h.post("/api/v1/alerts/webhook", json=body, headers=headers["admin"]).status_code == 401
    r = h.post("/api/v1/alerts/webhook", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert r.status_code == 200, r.text


def test_readme_documents_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert permissions.markdown_table() in readme, "README 'HTTP API' must show permissions.markdown_table()"
