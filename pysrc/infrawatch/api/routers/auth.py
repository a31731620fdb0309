"""OAuth2 password flow, refresh rotation, logout, `me`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from infrawatch.api import security
from infrawatch.api.deps import Db, Permit, Principal, Public, State, unauthorized
from infrawatch.api.models import User
from infrawatch.api.schemas import LogoutIn, MeOut, RefreshIn, TokenOut

router = APIRouter(prefix="/auth", tags=["auth"])


def _tokens(state: State, db: Db, user: User, refresh: str) -> TokenOut:
    ttl = state.settings.api.access_ttl_s
    return TokenOut(
        access_token=security.issue_access(user, state.jwt_key, ttl), expires_in=ttl, refresh_token=refresh
    )


@router.post("/token", dependencies=[Depends(Public())])
def token(state: State, db: Db, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    """Log in with username and password (form fields, OAuth2 password flow)."""
    user = db.scalar(select(User).where(User.username == form.username))
    ok = state.passwords.verify(form.password, user.password_hash if user else None)
    if user is None or not ok or user.disabled:
        raise unauthorized("wrong username or password")
    refresh = security.issue_refresh(db, user, state.settings.api.refresh_ttl_s)
    db.commit()
    return _tokens(state, db, user, refresh)


@router.post("/refresh", dependencies=[Depends(Public())])
def refresh(state: State, db: Db, body: RefreshIn) -> TokenOut:
    """Trade a refresh token for new tokens; the old one is spent (reusing it revokes the login)."""
    try:
        user, new = security.rotate_refresh(db, body.refresh_token, state.settings.api.refresh_ttl_s)
    except security.AuthError as e:
        db.commit()  # a detected reuse revokes the family even though this call fails
        raise unauthorized(str(e)) from e
    db.commit()
    return _tokens(state, db, user, new)


@router.post("/logout", status_code=204)
def logout(db: Db, body: LogoutIn, me: Annotated[Principal, Depends(Permit("auth:logout"))]) -> Response:
    """End this session: the access token stops working, the refresh token's family is revoked."""
    if me.claims is not None:
        security.revoke_access(db, me.claims)
    if body.refresh_token:
        row = security.refresh_family(db, body.refresh_token)
        if row is not None and row.user_id == me.id:
            security.revoke_family(db, row.family)
    db.commit()
    return Response(status_code=204)


@router.get("/me")
def me(me: Annotated[Principal, Depends(Permit("auth:me"))]) -> MeOut:
    return MeOut(kind=me.kind, id=me.id, name=me.name, role=me.role, scopes=sorted(me.scopes))
