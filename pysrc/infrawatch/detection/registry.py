"""The model registry: one directory per trained version, an `active` pointer per kind.

Layout (plain files, so `rsync` or a shared volume distributes it to workers)::

    <root>/<kind>/<version>/model.json        metadata: features, window, data, metrics, versions
    <root>/<kind>/<version>/<role>.iwm        one TreeEnsemble artifact per role (leak, burst, …)
    <root>/<kind>/active                      the active version's name

A version directory is written under a temporary name and renamed into place, and `active` is
replaced atomically, so a worker polling the registry never sees half a model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrawatch.core import TreeEnsemble

KINDS = ("water_flow", "water_quality", "energy")
# which ensembles each kind's Pipeline entry needs (DESIGN.md §3)
ROLES = {
    "water_flow": ("leak", "burst"),
    "water_quality": ("contamination",),
    "energy": ("expected_kwh", "anomaly"),
}
# settings stored in model.json that the Pipeline entry carries besides the ensembles
_PIPELINE_KEYS = ("bands", "tolerance", "anomaly_types", "persistence")


class RegistryError(Exception):
    """A registry problem the user can act on (the message says how)."""


@dataclass(frozen=True)
class ModelVersion:
    kind: str
    version: str
    path: Path
    meta: dict[str, Any]
    active: bool

    @property
    def created(self) -> str:
        return str(self.meta.get("created", ""))

    @property
    def metrics(self) -> dict[str, Any]:
        m = self.meta.get("metrics", {})
        return m if isinstance(m, dict) else {}


def _check_kind(kind: str) -> None:
    if kind not in ROLES:
        raise RegistryError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


class ModelRegistry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    def versions(self, kind: str) -> list[ModelVersion]:
        """Every stored version of `kind`, oldest first."""
        _check_kind(kind)
        base = self.root / kind
        if not base.is_dir():
            return []
        active = self.active_version(kind)
        out = []
        for d in sorted(base.iterdir()):
            meta_path = d / "model.json"
            if d.is_dir() and not d.name.startswith(".") and meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                out.append(ModelVersion(kind, d.name, d, meta, d.name == active))
        return out

    def active_version(self, kind: str) -> str | None:
        _check_kind(kind)
        p = self.root / kind / "active"
        if not p.is_file():
            return None
        name = p.read_text().strip()
        return name or None

    def fingerprint(self) -> dict[str, str | None]:
        """Active version per kind: a worker reloads when this changes."""
        return {k: self.active_version(k) for k in KINDS}

    def load(self, kind: str, version: str | None = None) -> dict[str, Any]:
        """One kind's entry for `core.Pipeline(models=...)`: ensembles by role, version, settings."""
        _check_kind(kind)
        version = version or self.active_version(kind)
        if version is None:
            raise RegistryError(
                f"no active {kind} model in {self.root}; run `infrawatch train --kind {kind}` "
                f"or `infrawatch models activate {kind} VERSION`"
            )
        d = self.root / kind / version
        if not (d / "model.json").is_file():
            raise RegistryError(
                f"{kind} version {version!r} not found in {self.root}; see `infrawatch models list`"
            )
        meta = json.loads((d / "model.json").read_text())
        entry: dict[str, Any] = {"version": version}
        for role in ROLES[kind]:
            entry[role] = TreeEnsemble.load(str(d / f"{role}.iwm"))
        for key in _PIPELINE_KEYS:
            if key in meta.get("pipeline", {}):
                entry[key] = meta["pipeline"][key]
        return entry

    def load_active(self) -> dict[str, Any]:
        """`core.Pipeline(models=...)` for every kind that has an active version."""
        return {k: self.load(k) for k in KINDS if self.active_version(k) is not None}

    def window(self) -> int | None:
        """The feature window the active models were trained with (they must agree)."""
        windows = {
            int(w)
            for k in KINDS
            if self.active_version(k) and (w := self.versions_meta(k).get("window")) is not None
        }
        if len(windows) > 1:
            raise RegistryError(f"active models disagree on the feature window: {sorted(windows)}; retrain")
        return int(windows.pop()) if windows else None

    def versions_meta(self, kind: str) -> dict[str, Any]:
        v = self.active_version(kind)
        if v is None:
            return {}
        data: dict[str, Any] = json.loads((self.root / kind / v / "model.json").read_text())
        return data

    # ------------------------------------------------------------------ writing
    def save(
        self,
        kind: str,
        ensembles: dict[str, TreeEnsemble],
        meta: dict[str, Any],
        *,
        activate: bool = True,
    ) -> ModelVersion:
        """Store a new version (never overwrites one) and optionally make it active."""
        _check_kind(kind)
        missing = set(ROLES[kind]) - set(ensembles)
        if missing:
            raise RegistryError(f"{kind} models need roles {ROLES[kind]}; missing {sorted(missing)}")
        now = dt.datetime.now(dt.UTC)
        version = f"{kind}-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
        base = self.root / kind
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{version}"
        tmp.mkdir()
        try:
            for role, ens in ensembles.items():
                ens.metadata = {**(ens.metadata or {}), "kind": kind, "role": role, "version": version}
                ens.save(str(tmp / f"{role}.iwm"))
            full = {**meta, "kind": kind, "version": version, "created": now.isoformat()}
            (tmp / "model.json").write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
            _fsync_dir(tmp)
            tmp.rename(base / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if activate:
            self.activate(kind, version)
        return next(v for v in self.versions(kind) if v.version == version)

    def activate(self, kind: str, version: str) -> None:
        _check_kind(kind)
        if not (self.root / kind / version / "model.json").is_file():
            known = ", ".join(v.version for v in self.versions(kind)) or "none"
            raise RegistryError(f"{kind} has no version {version!r} (known: {known})")
        p = self.root / kind / "active"
        tmp = p.with_name(f".active-{secrets.token_hex(4)}")
        tmp.write_text(version + "\n")
        os.replace(tmp, p)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())


class ActiveModels:
    """Keeps a running `core.Pipeline` on the registry's active versions.

    `refresh()` is cheap when nothing changed (it reads the `active` pointers only); when a version
    was activated it loads the new models and swaps them in with `Pipeline.set_models`, which keeps
    every sensor's rolling state.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.fingerprint: dict[str, str | None] | None = None

    def refresh(self, pipeline: Any) -> bool:
        """Swap in newly activated versions; True when the pipeline's models changed."""
        current = self.registry.fingerprint()
        if current == self.fingerprint:
            return False
        pipeline.set_models(self.registry.load_active())
        self.fingerprint = current
        return True
