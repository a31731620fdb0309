"""The one configuration of infrawatch: pydantic-settings, every field overridable by environment.

Environment variables are `INFRAWATCH_<FIELD>` (nested with `__`, e.g.
`INFRAWATCH_INFLUX__URL`). Secrets are never defaults: they come from the environment or from
files named by `*_FILE` variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFRAWATCH_", env_nested_delimiter="__", extra="ignore")

    model_dir: Path = Field(Path("models"), description="the model registry (one directory per kind)")
    window: int = Field(60, ge=2, le=10_000, description="readings per sensor in the feature window")


def load_settings() -> Settings:
    return Settings()
