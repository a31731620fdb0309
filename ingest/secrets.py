"""Secrets of a local stack: generated once into `run_dir/secrets/`, mode 0600, reused after.

Production supplies the same secrets through the environment (or `*_FILE` variables naming files
its secret store mounts); the local stack and the tests point the `*_FILE` settings at these.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from infrawatch.config import BrokerSettings, InfluxSettings, Settings

INFLUX_ROLES = ("admin", "writer", "grafana", "api")


def ensure_secret(path: Path) -> Path:
    """A random secret in `path` (created 0600 when missing); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path


def local_settings(
    run_dir: Path,
    *,
    influx_url: str,
    broker_host: str = "127.0.0.1",
    broker_port: int,
    base: Settings | None = None,
) -> Settings:
    """Settings for servers under `run_dir`: URLs/ports given, every secret a file in run_dir/secrets."""
    run_dir = Path(run_dir)
    sec = run_dir / "secrets"
    base = base or Settings()
    influx = InfluxSettings(
        **{
            **base.influx.model_dump(exclude={f"{r}_password" for r in INFLUX_ROLES}),
            "url": influx_url,
            **{f"{r}_password_file": ensure_secret(sec / f"influx-{r}") for r in INFLUX_ROLES},
        }
    )
    broker = BrokerSettings(
        **{
            **base.broker.model_dump(exclude={"worker_password"}),
            "host": broker_host,
            "port": broker_port,
            "worker_password_file": ensure_secret(sec / "broker-worker"),
            "password_file": run_dir / "mosquitto" / "passwd",
            "acl_file": run_dir / "mosquitto" / "acl",
        }
    )
    worker = base.worker.model_copy(
        update={
            "spool_dir": run_dir / "spool",
            "deadletter_dir": run_dir / "deadletter",
            "state_file": run_dir / "state" / "features.bin",
        }
    )
    return base.model_copy(update={"run_dir": run_dir, "influx": influx, "broker": broker, "worker": worker})
