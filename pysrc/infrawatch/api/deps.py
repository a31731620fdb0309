"""FastAPI dependencies: the app's shared state, the database session, the caller and its rights.

Every route takes exactly one `Permit(permission)` (or `Public()`, `WebhookToken()`) among its
dependencies; the permission names an entry of `permissions.PERMISSIONS`. 401 when the caller has
no valid credential, 403 when it has one that the table does not grant.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from infrawatch import core
from infrawatch.api import permissions, security
from infrawatch.api.models import User
from infrawatch.config import Settings
from infrawatch.detection.registry import ActiveModels, ModelRegistry
from infrawatch.ingest.influx_admin import InfluxClient
from infrawatch.ingest.writer import InfluxWriter

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    jwt_key: str
    webhook_token: str | None
    registry: ModelRegistry
    passwords: security.Passwords
    _reader: InfluxClient | None = None
    _writer: InfluxWriter | None = None
    pipeline: core.Pipeline | None = None
    bare_pipeline: core.Pipeline | None = None
    models: ActiveModels | None = None
    pipeline_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def reader(self) -> InfluxClient:
        """InfluxDB as the read-only `api` user (created on first use: the service starts without it)."""
        if self._reader is None:
            self._reader = InfluxClient(self.settings, "api")
        return self._reader

    @property
    def writer(self) -> InfluxWriter:
        """InfluxDB as the `writer` role, for HTTP ingest (the workers' writer)."""
        if self._writer is None:
            self._writer = InfluxWriter(self.settings.influx, attempts=2)
        return self._writer

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            await self._writer.aclose()
        self.engine.dispose()


# async where no I/O happens: a sync dependency costs a threadpool hop per request
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.infrawatch
    return state


State = Annotated[AppState, Depends(app_state)]


async def db_session(state: State) -> AsyncIterator[Session]:
    # opened and closed on the event loop (no threadpool hop); a sync route uses it in its thread
    with state.sessions() as s:
        yield s


Db = Annotated[Session, Depends(db_session)]


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "apikey"]
    id: int
    name: str
    role: str | None
    scopes: frozenset[str]
    claims: security.AccessClaims | None = None


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    state: State,
    db: Db,
    bearer: Annotated[str | None, Depends(oauth2)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The caller: an API key, or a user by access token. A JWT check and one or two primary-key
    reads of the local SQL database (well under a millisecond): done on the event loop, it spares
    every request a threadpool hop."""
    key = api_key or (bearer if bearer and bearer.startswith(security.API_KEY_PREFIX) else None)
    try:
        if key is not None:
            row = security.find_api_key(db, key)
            principal = Principal("apikey", row.id, row.name, None, frozenset(row.scopes.split()))
        elif not bearer:
            raise security.AuthError("not authenticated: send Authorization: Bearer TOKEN or X-API-Key")
        else:
            claims = security.decode_access(bearer, state.jwt_key)
            if security.access_revoked(db, claims.jti):
                raise security.AuthError("access token revoked (logged out)")
            user = db.get(User, claims.user_id)
            if user is None or user.disabled:
                raise security.AuthError("user unknown or disabled")
            principal = Principal("user", user.id, user.username, user.role, frozenset(), claims)
    except security.AuthError as e:
        raise unauthorized(str(e)) from e
    finally:
        # end the read transaction: the pooled connection goes back before the route runs (a route
        # waiting on InfluxDB must not hold it, or concurrent reads would drain the pool)
        db.commit()
    return principal


class Permission:
    """Base of the route guards; `permission` names the table entry (the RBAC test reads it)."""

    permission: str

    def __init__(self, permission: str) -> None:
        if permission not in permissions.PERMISSIONS:
            raise KeyError(f"permission {permission!r} is not in permissions.PERMISSIONS")
        self.permission = permission


class Permit(Permission):
    async def __call__(self, principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not permissions.allowed(self.permission, principal.role, principal.scopes):
            who = f"role {principal.role}" if principal.role else f"API key scopes {sorted(principal.scopes)}"
            raise HTTPException(403, f"{who} may not {self.permission}")
        return principal


class Public(Permission):
    def __init__(self) -> None:
        super().__init__(permissions.PUBLIC)

    async def __call__(self) -> None:
        return None


class WebhookToken(Permission):
    """Grafana's webhook contact point sends `Authorization: Bearer <token>`."""

    def __init__(self) -> None:
        super().__init__(permissions.WEBHOOK)

    async def __call__(self, state: State, bearer: Annotated[str | None, Depends(oauth2)]) -> None:
        expected = state.webhook_token
        if expected is None:
            raise HTTPException(503, "webhook disabled: set INFRAWATCH_API__WEBHOOK_TOKEN(_FILE)")
        if not bearer or not hmac.compare_digest(bearer.encode(), expected.encode()):
            raise unauthorized("webhook token missing or wrong")


def permit(permission: str) -> Any:
    """`Depends(Permit(permission))`, for a route's parameter list."""
    return Depends(Permit(permission))


Caller = Principal
