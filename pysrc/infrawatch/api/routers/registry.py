"""The registry: sites, sensors, gateways. Creating a sensor or gateway can create its MQTT user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from infrawatch.api.deps import Db, Permit, State
from infrawatch.api.models import Gateway, Sensor, Site
from infrawatch.api.schemas import (
    GatewayCreated,
    GatewayIn,
    GatewayOut,
    Kind,
    SensorCreated,
    SensorIn,
    SensorOut,
    SensorPatch,
    SiteIn,
    SiteOut,
)
from infrawatch.ingest import broker_admin

router = APIRouter(tags=["registry"])
Read = Depends(Permit("registry:read"))
Write = Depends(Permit("registry:write"))


def _commit(db: Db, what: str) -> None:
    try:
        db.commit()
    except IntegrityError as e:
        db.rollback()
        raise HTTPException(409, f"{what} exists, or refers to a site/gateway that does not") from e


def _broker_user(state: State, user: str, role: broker_admin.Role) -> str:
    password = broker_admin.add_users(state.settings, [(user, role)])[user]
    pid = state.settings.api.broker_pid_file
    if pid is not None:
        broker_admin.reload_broker(pid)
    return password


# ------------------------------------------------------------------ sites
@router.get("/sites", dependencies=[Read])
def list_sites(db: Db) -> list[SiteOut]:
    return [SiteOut.model_validate(s) for s in db.scalars(select(Site).order_by(Site.id))]


@router.post("/sites", status_code=201, dependencies=[Write])
def create_site(db: Db, body: SiteIn) -> SiteOut:
    site = Site(**body.model_dump())
    db.add(site)
    _commit(db, f"site {body.id!r}")
    return SiteOut.model_validate(site)


@router.get("/sites/{site_id}", dependencies=[Read])
def get_site(db: Db, site_id: str) -> SiteOut:
    site = db.get(Site, site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}")
    return SiteOut.model_validate(site)


@router.delete("/sites/{site_id}", status_code=204, dependencies=[Write])
def delete_site(db: Db, site_id: str) -> Response:
    site = db.get(Site, site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}")
    if db.scalar(select(Sensor.id).where(Sensor.site_id == site_id).limit(1)) is not None:
        raise HTTPException(409, f"site {site_id!r} still has sensors; delete them first")
    if db.scalar(select(Gateway.id).where(Gateway.site_id == site_id).limit(1)) is not None:
        raise HTTPException(409, f"site {site_id!r} still has gateways; delete them first")
    db.delete(site)
    db.commit()
    return Response(status_code=204)


# ------------------------------------------------------------------ sensors
@router.get("/sensors", dependencies=[Read])
def list_sensors(
    db: Db,
    site: str | None = None,
    kind: Kind | None = None,
    zone: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[SensorOut]:
    q = select(Sensor).order_by(Sensor.id)
    if site is not None:
        q = q.where(Sensor.site_id == site)
    if kind is not None:
        q = q.where(Sensor.kind == kind)
    if zone is not None:
        q = q.where(Sensor.zone == zone)
    return [SensorOut.model_validate(s) for s in db.scalars(q.limit(limit).offset(offset))]


@router.post("/sensors", status_code=201, dependencies=[Write])
def create_sensor(state: State, db: Db, body: SensorIn) -> SensorCreated:
    if db.get(Site, body.site_id) is None:
        raise HTTPException(422, f"no site {body.site_id!r}: create it first (POST /api/v1/sites)")
    if body.gateway_id is not None and db.get(Gateway, body.gateway_id) is None:
        raise HTTPException(422, f"no gateway {body.gateway_id!r}")
    sensor = Sensor(**body.model_dump(exclude={"broker_credentials"}))
    db.add(sensor)
    _commit(db, f"sensor {body.id!r}")
    password = _broker_user(state, sensor.id, "sensor") if body.broker_credentials else None
    return SensorCreated(**SensorOut.model_validate(sensor).model_dump(), broker_password=password)


def _sensor(db: Db, sensor_id: str) -> Sensor:
    sensor = db.get(Sensor, sensor_id)
    if sensor is None:
        raise HTTPException(404, f"no sensor {sensor_id!r}")
    return sensor


@router.get("/sensors/{sensor_id}", dependencies=[Read])
def get_sensor(db: Db, sensor_id: str) -> SensorOut:
    return SensorOut.model_validate(_sensor(db, sensor_id))


@router.patch("/sensors/{sensor_id}", dependencies=[Write])
def update_sensor(db: Db, sensor_id: str, body: SensorPatch) -> SensorOut:
    sensor = _sensor(db, sensor_id)
    for k, v in body.model_dump(exclude_unset=True).items():
        if k == "zone" and v is None:
            continue
        setattr(sensor, k, v if k != "thresholds" or v is not None else {})
    db.commit()
    return SensorOut.model_validate(sensor)


@router.delete("/sensors/{sensor_id}", status_code=204, dependencies=[Write])
def delete_sensor(state: State, db: Db, sensor_id: str) -> Response:
    db.delete(_sensor(db, sensor_id))
    db.commit()
    broker_admin.remove_user(state.settings, sensor_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ gateways
@router.get("/gateways", dependencies=[Read])
def list_gateways(db: Db, site: str | None = None) -> list[GatewayOut]:
    q = select(Gateway).order_by(Gateway.id)
    if site is not None:
        q = q.where(Gateway.site_id == site)
    return [GatewayOut.model_validate(g) for g in db.scalars(q)]


@router.post("/gateways", status_code=201, dependencies=[Write])
def create_gateway(state: State, db: Db, body: GatewayIn) -> GatewayCreated:
    if db.get(Site, body.site_id) is None:
        raise HTTPException(422, f"no site {body.site_id!r}: create it first (POST /api/v1/sites)")
    gw = Gateway(**body.model_dump(exclude={"broker_credentials"}))
    db.add(gw)
    _commit(db, f"gateway {body.id!r}")
    password = _broker_user(state, gw.id, "gateway") if body.broker_credentials else None
    return GatewayCreated(**GatewayOut.model_validate(gw).model_dump(), broker_password=password)


@router.get("/gateways/{gateway_id}", dependencies=[Read])
def get_gateway(db: Db, gateway_id: str) -> GatewayOut:
    gw = db.get(Gateway, gateway_id)
    if gw is None:
        raise HTTPException(404, f"no gateway {gateway_id!r}")
    return GatewayOut.model_validate(gw)


@router.delete("/gateways/{gateway_id}", status_code=204, dependencies=[Write])
def delete_gateway(state: State, db: Db, gateway_id: str) -> Response:
    gw = db.get(Gateway, gateway_id)
    if gw is None:
        raise HTTPException(404, f"no gateway {gateway_id!r}")
    db.delete(gw)
    db.commit()
    broker_admin.remove_user(state.settings, gateway_id)
    return Response(status_code=204)
