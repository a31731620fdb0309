"""Passwords (argon2 via pwdlib), access JWTs (PyJWT, HS256) and rotating refresh tokens.

Access tokens are short-lived and stateless apart from logout's revocation list. Refresh tokens
are random strings stored only as SHA-256 hashes; each use rotates it (the old one is marked used
and a new one of the same *family* is issued). A used token presented again means it was copied:
the whole family is revoked, so neither the thief nor the victim can go on without logging in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from infrawatch.api.models import ApiKey, RefreshToken, RevokedAccess, User, utcnow

ALGORITHM = "HS256"
API_KEY_PREFIX = "iwk_"


class AuthError(Exception):
    """Missing, invalid, expired or revoked credentials (→ 401)."""


class Passwords:
    """argon2id with the configured cost (a stored hash carries its own parameters, so changing
    the cost never locks anyone out)."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))
        # verified against when the user does not exist, so both cases take the same time
        self._dummy = self._hasher.hash("not-a-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password: str, hashed: str | None) -> bool:
        if hashed is None:
            self._hasher.verify(password, self._dummy)
            return False
        return self._hasher.verify(password, hashed)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str
    jti: str
    expires_at: dt.datetime


def issue_access(user: User, key: str, ttl_s: int, *, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    claims = {
        "sub": str(user.id),
        "role": user.role,
        "type": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + dt.timedelta(seconds=ttl_s)).timestamp()),
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def decode_access(token: str, key: str) -> AccessClaims:
    """Claims of a valid access token; AuthError otherwise (expired, tampered, `alg: none`, …)."""
    try:
        # an explicit algorithm list: a token signed otherwise (or `none`) never verifies
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "jti", "sub", "type"]}
        )
    except jwt.ExpiredSignatureError as e:
        raise AuthError("access token expired: refresh it or log in again") from e
    except jwt.PyJWTError as e:
        raise AuthError(f"invalid access token: {e}") from e
    if claims.get("type") != "access":
        raise AuthError("not an access token")
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError) as e:
        raise AuthError("invalid access token subject") from e
    exp = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC).replace(tzinfo=None)
    return AccessClaims(user_id, str(claims.get("role", "")), str(claims["jti"]), exp)


def issue_refresh(db: Session, user: User, ttl_s: int, family: str | None = None) -> str:
    token = secrets.token_urlsafe(32)
    db.add(
        RefreshToken(
            token_hash=sha256(token),
            family=family or secrets.token_hex(16),
            user_id=user.id,
            expires_at=utcnow() + dt.timedelta(seconds=ttl_s),
        )
    )
    return token


def revoke_family(db: Session, family: str) -> None:
    db.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def rotate_refresh(db: Session, token: str, ttl_s: int) -> tuple[User, str]:
    """Spend `token` for a new one of its family; a reused (already rotated) token revokes the
    family. The caller commits — also on AuthError, so a revocation sticks."""
    row = db.scalar(select(RefreshToken).where(RefreshToken.token_hash == sha256(token)))
    if row is None:
        raise AuthError("unknown refresh token")
    if row.revoked_at is not None:
        raise AuthError("refresh token revoked: log in again")
    if row.used_at is not None:
        revoke_family(db, row.family)
        raise AuthError("refresh token reused: every session of this login is revoked; log in again")
    if row.expires_at <= utcnow():
        raise AuthError("refresh token expired: log in again")
    user = db.get(User, row.user_id)
    if user is None or user.disabled:
        raise AuthError("user disabled")
    row.used_at = utcnow()
    return user, issue_refresh(db, user, ttl_s, family=row.family)


def refresh_family(db: Session, token: str) -> RefreshToken | None:
    return db.scalar(select(RefreshToken).where(RefreshToken.token_hash == sha256(token)))


def revoke_access(db: Session, claims: AccessClaims) -> None:
    if db.get(RevokedAccess, claims.jti) is None:
        db.add(RevokedAccess(jti=claims.jti, expires_at=claims.expires_at))


def access_revoked(db: Session, jti: str) -> bool:
    return db.get(RevokedAccess, jti) is not None


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(30)


def find_api_key(db: Session, key: str) -> ApiKey:
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == sha256(key)))
    if row is None or row.revoked_at is not None:
        raise AuthError("unknown or revoked API key")
    return row
