"""Request and response bodies (pydantic): the OpenAPI schema schemathesis checks responses against."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["admin", "scientist", "operator", "viewer"]
Scope = Literal["read", "ingest"]
Kind = Literal["water_flow", "water_quality", "energy"]
Value = float | int | str | bool | None


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


# the database keeps naive UTC; responses say so (RFC 3339 date-time needs the offset)
Utc = Annotated[dt.datetime, AfterValidator(_utc)]
# a database row id in a path (SQLite and PostgreSQL integers are 64-bit)
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ID = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: `detail` is a message, or a list of problems (validation, ingest)."""

    detail: str | list[dict[str, Any]] | dict[str, Any]


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(BaseModel):
    refresh_token: str | None = Field(None, max_length=512)


class MeOut(BaseModel):
    kind: Literal["user", "apikey"]
    id: int
    name: str
    role: Role | None
    scopes: list[Scope]


class UserIn(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    password: str = Field(min_length=8, max_length=256)
    role: Role


class UserPatch(BaseModel):
    password: str | None = Field(None, min_length=8, max_length=256)
    role: Role | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: Utc


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: Utc
    revoked_at: Utc | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown once; only its hash is stored")


class SiteIn(BaseModel):
    id: str = ID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=2000)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)


class SiteOut(SiteIn):
    model_config = ConfigDict(from_attributes=True)
    id: str
    created_at: Utc


class SensorBase(BaseModel):
    zone: str = Field("STANDARD", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\\]+$")
    location: str | None = Field(None, max_length=255)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    thresholds: dict[str, float] = Field(default_factory=dict)
    installed_at: dt.date | None = None
    calibrated_at: dt.date | None = None
    gateway_id: str | None = None
    rate_per_s: float | None = Field(None, gt=0, le=1000, description="HTTP ingest rate; default: settings")


class SensorIn(SensorBase):
    id: str = ID
    kind: Kind
    site_id: str
    broker_credentials: bool = Field(False, description="also create its MQTT user; password returned once")


class SensorPatch(BaseModel):
    zone: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\\]+$")
    location: str | None = Field(None, max_length=255)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    thresholds: dict[str, float] | None = None
    installed_at: dt.date | None = None
    calibrated_at: dt.date | None = None
    rate_per_s: float | None = Field(None, gt=0, le=1000)


class SensorOut(SensorBase):
    model_config = ConfigDict(from_attributes=True)
    id: str
    kind: Kind
    site_id: str
    zone: str
    created_at: Utc


class SensorCreated(SensorOut):
    broker_password: str | None = None


class GatewayIn(BaseModel):
    id: str = ID
    site_id: str
    description: str | None = Field(None, max_length=2000)
    broker_credentials: bool = False


class GatewayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    site_id: str
    description: str | None
    created_at: Utc


class GatewayCreated(GatewayOut):
    broker_password: str | None = None


class LatestOut(BaseModel):
    sensor_id: str | None
    site: str | None
    kind: str | None
    zone: str | None
    time: str
    values: dict[str, Value]


class HistoryOut(BaseModel):
    sensor_id: str
    tier: Literal["raw", "rollup_1m", "rollup_1h"]
    interval_s: int | None
    fields: list[str]
    rows: list[dict[str, Value]]


class IngestOut(BaseModel):
    accepted: int
    stale: int = Field(description="not newer than the sensor's newest: stored without a verdict")
    rate_limited: list[str]
    errors: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    fingerprint: str
    status: str
    alertname: str
    severity: str | None
    site: str | None
    zone: str | None
    sensor_id: str | None
    summary: str
    labels: dict[str, Any]
    annotations: dict[str, Any]
    starts_at: Utc
    ends_at: Utc | None
    received_at: Utc
    updated_at: Utc
    acknowledged_by: str | None
    acknowledged_at: Utc | None
    ack_note: str | None


class AckIn(BaseModel):
    note: str | None = Field(None, max_length=2000)


class GrafanaAlert(BaseModel):
    """One alert of Grafana's webhook notification (unknown keys ignored)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: dt.datetime  # noqa: N815 (Grafana's key)
    endsAt: dt.datetime | None = None  # noqa: N815
    fingerprint: str = Field(min_length=1, max_length=64)


class GrafanaWebhook(BaseModel):
    status: str = Field(max_length=32)
    alerts: list[GrafanaAlert] = Field(max_length=10_000)


class WebhookOut(BaseModel):
    recorded: int
    firing: int
    resolved: int


class AlertEventOut(BaseModel):
    time: str
    sensor_id: str | None
    site: str | None
    kind: str | None
    zone: str | None
    severity: str | None
    alert_type: str | None
    risk: float | None
    message: str | None


class ModelOut(BaseModel):
    kind: Kind
    version: str
    active: bool
    created: str
    metrics: dict[str, Any]


class StatusOut(BaseModel):
    ok: bool
    influxdb: dict[str, Any]
    broker: dict[str, Any]
    workers: list[dict[str, Any]]
    models: dict[str, str | None]
