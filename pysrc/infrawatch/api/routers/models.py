"""Model registry: versions with their metrics, activation (workers and HTTP ingest pick it up)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from infrawatch.api.deps import Permit, State
from infrawatch.api.schemas import Kind, ModelOut
from infrawatch.detection.registry import KINDS, RegistryError

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", dependencies=[Depends(Permit("models:read"))])
def list_models(state: State, kind: Kind | None = None) -> list[ModelOut]:
    out = []
    for k in [kind] if kind else list(KINDS):
        for v in state.registry.versions(k):
            out.append(
                ModelOut(kind=k, version=v.version, active=v.active, created=v.created, metrics=v.metrics)
            )
    return out


@router.post("/{kind}/{version}/activate", dependencies=[Depends(Permit("models:activate"))])
def activate(state: State, kind: Kind, version: str) -> ModelOut:
    if not any(v.version == version for v in state.registry.versions(kind)):
        raise HTTPException(404, f"{kind} has no version {version!r}")
    try:
        state.registry.activate(kind, version)
    except RegistryError as e:
        raise HTTPException(404, str(e)) from e
    v = next(v for v in state.registry.versions(kind) if v.version == version)
    return ModelOut(kind=kind, version=v.version, active=v.active, created=v.created, metrics=v.metrics)
