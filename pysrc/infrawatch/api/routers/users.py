"""Users (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from infrawatch.api.deps import Db, Permit, State
from infrawatch.api.models import User
from infrawatch.api.schemas import RowId, UserIn, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(Permit("users:manage"))])


def _get(db: Db, user_id: RowId) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return user


@router.get("")
def list_users(db: Db) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in db.scalars(select(User).order_by(User.id))]


@router.post("", status_code=201)
def create_user(state: State, db: Db, body: UserIn) -> UserOut:
    user = User(username=body.username, password_hash=state.passwords.hash(body.password), role=body.role)
    db.add(user)
    try:
        db.commit()
    except IntegrityError as e:
        db.rollback()
        raise HTTPException(409, f"user {body.username!r} exists") from e
    return UserOut.model_validate(user)


@router.get("/{user_id}")
def get_user(db: Db, user_id: RowId) -> UserOut:
    return UserOut.model_validate(_get(db, user_id))


@router.patch("/{user_id}")
def update_user(state: State, db: Db, user_id: RowId, body: UserPatch) -> UserOut:
    user = _get(db, user_id)
    if body.password is not None:
        user.password_hash = state.passwords.hash(body.password)
    if body.role is not None:
        user.role = body.role
    if body.disabled is not None:
        user.disabled = body.disabled
    db.commit()
    return UserOut.model_validate(user)


@router.delete("/{user_id}", status_code=204)
def delete_user(db: Db, user_id: RowId) -> Response:
    db.delete(_get(db, user_id))
    db.commit()
    return Response(status_code=204)
