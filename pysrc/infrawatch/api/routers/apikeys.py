"""API keys for integrators (admin only): shown once at creation, stored as SHA-256."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from sqlalchemy import select

from infrawatch.api import security
from infrawatch.api.deps import Db, Permit, Principal
from infrawatch.api.models import ApiKey, utcnow
from infrawatch.api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, RowId

router = APIRouter(prefix="/apikeys", tags=["apikeys"])
Admin = Annotated[Principal, Depends(Permit("apikeys:manage"))]


def _out(k: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=k.id,
        name=k.name,
        prefix=k.prefix,
        scopes=k.scopes.split(),
        created_at=k.created_at,
        revoked_at=k.revoked_at,
    )


@router.get("")
def list_keys(db: Db, _: Admin) -> list[ApiKeyOut]:
    return [_out(k) for k in db.scalars(select(ApiKey).order_by(ApiKey.id))]


@router.post("", status_code=201)
def create_key(db: Db, body: ApiKeyIn, me: Admin) -> ApiKeyCreated:
    key = security.new_api_key()
    row = ApiKey(
        name=body.name,
        prefix=key[:12],
        key_hash=security.sha256(key),
        scopes=" ".join(sorted(set(body.scopes))),
        created_by=me.id if me.kind == "user" else None,
    )
    db.add(row)
    db.commit()
    return ApiKeyCreated(**_out(row).model_dump(), key=key)


@router.delete("/{key_id}", status_code=204)
def revoke_key(db: Db, key_id: RowId, _: Admin) -> Response:
    row = db.get(ApiKey, key_id)
    if row is None:
        raise HTTPException(404, f"no API key {key_id}")
    row.revoked_at = row.revoked_at or utcnow()
    db.commit()
    return Response(status_code=204)
