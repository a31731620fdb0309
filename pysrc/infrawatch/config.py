"""The one configuration of infrawatch: pydantic-settings, every field overridable by environment.

Environment variables are `INFRAWATCH_<FIELD>` (nested with `__`, e.g.
`INFRAWATCH_INFLUX__URL`). Secrets are never defaults: each password comes from its environment
variable (`INFRAWATCH_INFLUX__WRITER_PASSWORD`) or from the file its `*_FILE` twin names
(`INFRAWATCH_INFLUX__WRITER_PASSWORD_FILE`) — the local stack writes such files, mode 0600, under
its run directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from infrawatch.errors import UserError


class ConfigError(UserError):
    """A setting is missing or unusable; the message says which variable to set."""


def secret(value: SecretStr | None, file: Path | None, name: str) -> str:
    """The secret from its variable, else from the file its `_FILE` twin names."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read {name}_FILE={file}: {e.strerror}") from e
    raise ConfigError(f"no secret for {name}: set INFRAWATCH_{name} or INFRAWATCH_{name}_FILE")


class InfluxSettings(BaseModel):
    """InfluxDB 1.x HTTP API v1 (or a server speaking it): one user per role."""

    url: str = "http://127.0.0.1:8086"
    database: str = "infrawatch"
    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    admin_password_file: Path | None = None
    writer_user: str = "writer"
    writer_password: SecretStr | None = None
    writer_password_file: Path | None = None
    grafana_user: str = "grafana"
    grafana_password: SecretStr | None = None
    grafana_password_file: Path | None = None
    api_user: str = "api"
    api_password: SecretStr | None = None
    api_password_file: Path | None = None
    # Retention of the three tiers (InfluxQL durations) and how often the rollups run.
    raw_duration: str = "7d"
    rollup_1m_duration: str = "90d"
    rollup_1h_duration: str = "260w"
    timeout_s: float = Field(10.0, gt=0)

    def password(self, role: str) -> str:
        """The password of `role` (admin, writer, grafana, api)."""
        value: SecretStr | None = getattr(self, f"{role}_password")
        file: Path | None = getattr(self, f"{role}_password_file")
        return secret(value, file, f"INFLUX__{role.upper()}_PASSWORD")


class BrokerSettings(BaseModel):
    """The MQTT broker the workers subscribe to (Mosquitto)."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    worker_user: str = "worker"
    worker_password: SecretStr | None = None
    worker_password_file: Path | None = None
    # Mosquitto's password file and ACL file, managed by `infrawatch broker add-sensor` etc.
    password_file: Path = Path("run/mosquitto/passwd")
    acl_file: Path = Path("run/mosquitto/acl")
    keepalive_s: int = Field(30, ge=5)

    def password(self) -> str:
        return secret(self.worker_password, self.worker_password_file, "BROKER__WORKER_PASSWORD")


class WorkerSettings(BaseModel):
    """One ingest worker: batching, spool, dead letters, stats."""

    id: str = "worker-1"
    # `i/N`: this worker owns the sensors (and gateways) whose id hashes to i modulo N.
    partition: str = "0/1"
    batch_size: int = Field(2000, ge=1)
    # how long a batch may wait to fill: at 5,000 readings/s most of the publish→stored p50
    batch_timeout_ms: int = Field(50, ge=1)
    spool_dir: Path = Path("run/spool")
    spool_max_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    deadletter_dir: Path = Path("run/deadletter")
    deadletter_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    deadletter_backups: int = Field(5, ge=1)
    stats_interval_s: float = Field(10.0, gt=0)
    state_file: Path = Path("run/state/features.bin")
    model_poll_s: float = Field(5.0, gt=0)
    rate_per_s: float = Field(1.0, gt=0)
    burst: float = Field(1.0, gt=0)
    max_keys: int = Field(10_000_000, ge=1)


class GrafanaSettings(BaseModel):
    """A running Grafana for `infrawatch grafana sync`, and the contact points' secrets.

    The contact-point fields are also the environment variables Grafana's file provisioning
    interpolates (`${INFRAWATCH_GRAFANA__API_WEBHOOK_TOKEN}`, …): one name for both ways in.
    """

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None  # a service-account token (preferred) …
    token_file: Path | None = None
    user: str | None = None  # … or basic auth
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0)
    # the datasource URL Grafana uses to reach InfluxDB (default: influx.url)
    influx_url: str | None = None
    api_webhook_url: str | None = None  # the API's receiver, …/api/v1/alerts/webhook
    api_webhook_token: SecretStr | None = None
    api_webhook_token_file: Path | None = None
    emergency_email: str | None = None
    ops_email: str | None = None
    staff_email: str | None = None
    it_email: str | None = None
    slack_webhook_url: SecretStr | None = None  # optional integrations: on when set
    pagerduty_key: SecretStr | None = None
    teams_webhook_url: SecretStr | None = None
    runbook_url: str | None = None  # where grafana/RUNBOOKS.md is published (alert annotations)

    def auth(self) -> str | tuple[str, str]:
        """The token, else (user, password); ConfigError says what to set."""
        if self.token is not None or self.token_file is not None:
            return secret(self.token, self.token_file, "GRAFANA__TOKEN")
        if self.user:
            return (self.user, secret(self.password, self.password_file, "GRAFANA__PASSWORD"))
        raise ConfigError(
            "no Grafana credentials: set INFRAWATCH_GRAFANA__TOKEN(_FILE) to a service-account token, "
            "or INFRAWATCH_GRAFANA__USER and INFRAWATCH_GRAFANA__PASSWORD(_FILE)"
        )


class ApiSettings(BaseModel):
    """The FastAPI service (`infrawatch api`): auth, its SQL database, HTTP ingest."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # HS256 signing key of the access tokens; the Grafana webhook's bearer token
    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    webhook_token: SecretStr | None = None
    webhook_token_file: Path | None = None
    access_ttl_s: int = Field(900, ge=1)
    # argon2id cost of new password hashes (pwdlib's defaults)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    refresh_ttl_s: int = Field(14 * 86400, ge=1)
    # SQLAlchemy URL of the registry, users and alert history; default sqlite under run_dir
    db_url: str | None = None
    # HTTP ingest token bucket per sensor (a sensor's registry entry may override the rate)
    ingest_rate_per_s: float = Field(1.0, gt=0)
    ingest_burst: float = Field(1.0, gt=0)
    ingest_max_keys: int = Field(1_000_000, ge=1)
    # SIGHUPed after the API creates broker users for a new sensor or gateway
    broker_pid_file: Path | None = None

    def jwt_key(self) -> str:
        return secret(self.jwt_secret, self.jwt_secret_file, "API__JWT_SECRET")

    def webhook_key(self) -> str:
        return secret(self.webhook_token, self.webhook_token_file, "API__WEBHOOK_TOKEN")

    def database_url(self, run_dir: Path) -> str:
        return self.db_url or f"sqlite:///{Path(run_dir).resolve() / 'api.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFRAWATCH_", env_nested_delimiter="__", extra="ignore")

    model_dir: Path = Field(Path("models"), description="the model registry (one directory per kind)")
    window: int = Field(60, ge=2, le=10_000, description="readings per sensor in the feature window")
    run_dir: Path = Field(Path("run"), description="the local stack's servers, data, secrets and logs")
    influx: InfluxSettings = InfluxSettings()
    broker: BrokerSettings = BrokerSettings()
    worker: WorkerSettings = WorkerSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    api: ApiSettings = ApiSettings()


def load_settings() -> Settings:
    return Settings()
