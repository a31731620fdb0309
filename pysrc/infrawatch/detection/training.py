"""`infrawatch train`: simulated fleets → `core.FeatureStore` features → scikit-learn ensembles.

The features come from the same Rust `FeatureStore` the workers run, so there is no train/serve
skew. Each kind trains on some simulator seeds, chooses hyperparameters, class weights and score
bands on other (validation) seeds within a time budget, and is scored at the end through the real
`core.Pipeline` on test seeds it never saw; the artifacts, the data used and every figure go into
the registry's `model.json`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sklearn
from scipy.special import expit
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)

from infrawatch import core, sim
from infrawatch.detection import datasets, metrics
from infrawatch.detection.evaluation import EVENT_RULES, evaluate_data, evaluate_sim
from infrawatch.detection.registry import ModelRegistry, ModelVersion

Progress = Callable[[str], None]


ENERGY_TYPES = ("normal", "high_consumption", "low_consumption", "unusual_pattern")


@dataclass
class TrainConfig:
    kind: str
    window: int = 60
    n_sensors: int = 30
    days: float | None = None  # None: the kind's simulator default
    train_seeds: tuple[int, ...] = (11, 12)
    validation_seeds: tuple[int, ...] = (21,)
    test_seeds: tuple[int, ...] = (31, 32)
    max_train_rows: int = 120_000
    time_budget_s: float = 180.0
    n_estimators: int = 100
    random_state: int = 0
    data: str | None = None  # a real data set (folder or CSV) instead of simulated fleets
    feature_set: str = "all"  # or "scale_free" for models meant for other sensors than trained on

    def sim_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"n_sensors": self.n_sensors}
        if self.days is not None:
            kw["days"] = self.days
        return kw


@dataclass
class Candidate:
    family: str
    params: dict[str, Any]
    score: float = float("nan")
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- features
def features(data: sim.SimData, window: int) -> tuple[np.ndarray, list[str]]:
    """The production features of every reading of `data`, in its (time) order."""
    fs = core.FeatureStore(window=window, fields=core.kind_fields(data.kind))
    cols = {f: data.fields[f] for f in fs.fields if f in data.fields}
    x = fs.update_arrays(list(data.sensor_id), data.timestamp_ns, cols)
    return np.asarray(x), list(fs.feature_names)


def _subsample(y: np.ndarray, max_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and sample weights: every positive (up to half the budget), negatives uniformly
    for the rest, each row weighted by the inverse of its class's sampling fraction.

    Without the weights the enriched sample would inflate every probability, and the zone table's
    fixed thresholds (DESIGN.md §3) would page on noise.
    """
    if len(y) <= max_rows:
        return np.arange(len(y)), np.ones(len(y))
    pos_all = np.flatnonzero(y > 0)
    neg_all = np.flatnonzero(y == 0)
    pos = rng.choice(pos_all, min(len(pos_all), max_rows // 2), replace=False)
    neg = rng.choice(neg_all, min(len(neg_all), max_rows - len(pos)), replace=False)
    idx = np.sort(np.concatenate([pos, neg]))
    w = np.where(y[idx] > 0, len(pos_all) / max(len(pos), 1), len(neg_all) / max(len(neg), 1))
    return idx, w / w.mean()


# ---------------------------------------------------------------------------------- model zoo
def _classifier(c: Candidate, n_estimators: int, seed: int) -> Any:
    p = dict(c.params)
    if c.family == "rf":
        return RandomForestClassifier(n_estimators=n_estimators, n_jobs=-1, random_state=seed, **p)
    if c.family == "et":
        return ExtraTreesClassifier(n_estimators=n_estimators, n_jobs=-1, random_state=seed, **p)
    if c.family == "hgb":
        return HistGradientBoostingClassifier(random_state=seed, **p)
    raise ValueError(c.family)


def _candidates(rng: np.random.Generator) -> list[Candidate]:
    grid = [
        Candidate("rf", {"max_depth": d, "min_samples_leaf": leaf, "class_weight": cw, "max_features": mf})
        for d, leaf, cw, mf in itertools.product(
            (10, 14), (2, 10), (None, "balanced_subsample"), ("sqrt", 0.3)
        )
    ]
    grid += [
        Candidate("et", {"max_depth": d, "min_samples_leaf": leaf, "class_weight": cw})
        for d, leaf, cw in itertools.product((12, 16), (2, 8), (None, "balanced"))
    ]
    grid += [
        Candidate("hgb", {"max_iter": it, "learning_rate": lr, "max_leaf_nodes": ln, "class_weight": cw})
        for it, lr, ln, cw in itertools.product((100,), (0.1,), (15, 31), (None, "balanced"))
    ]
    order = rng.permutation(len(grid))
    # the first candidate is a sound default that trains in seconds, so even a tiny budget yields
    # a reasonable model
    default = Candidate(
        "hgb", {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31, "class_weight": None}
    )
    return [default] + [grid[i] for i in order]


# ---------------------------------------------------------------------------------- risk (search)
def _water_flow_alert(leak: np.ndarray, burst: np.ndarray, critical: np.ndarray) -> np.ndarray:
    """risk ≥ HIGH under DESIGN.md §3's table (the Rust core applies the same table in production)."""
    hi_crit = (burst > 0.1) | (leak > 0.4)
    hi_std = (burst > 0.2) | (leak > 0.6)
    return np.where(critical, hi_crit, hi_std)


def _event_f1(data: sim.SimData, alert: np.ndarray) -> metrics.EventScores:
    spans = [metrics.Span(e.sensor_id, e.start_ns, e.end_ns, e.type) for e in data.events]
    return metrics.event_scores(spans, data.sensor_id, data.timestamp_ns, alert, **EVENT_RULES[data.kind])


def _fmt(s: metrics.EventScores) -> str:
    return f"event F1 {s.f1:.3f} P {s.precision:.3f} R {s.recall:.3f}"


def _objective(s: metrics.EventScores) -> float:
    """Event F1, with false alarms beyond the 15% share penalised: paging wrongly costs trust."""
    f1 = 0.0 if np.isnan(s.f1) else s.f1
    fps = 1.0 if np.isnan(s.false_positive_share) else s.false_positive_share
    return f1 - max(0.0, fps - 0.10)


def _best_band(score: np.ndarray, data: sim.SimData) -> tuple[float, metrics.EventScores]:
    """The alert threshold on a [0, 1] score that maximises the objective on validation data."""
    best: tuple[float, float, metrics.EventScores | None] = (-1.0, 0.5, None)
    for t in (*np.round(np.arange(0.3, 0.96, 0.05), 2), 0.97, 0.98, 0.99):
        s = _event_f1(data, score > t)
        obj = _objective(s)
        if obj > best[0]:
            best = (obj, float(t), s)
    assert best[2] is not None
    return best[1], best[2]


_SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0)


def _shift_boosting(
    leak: Any, burst: Any, vx: np.ndarray, vd: sim.SimData, critical: np.ndarray
) -> metrics.EventScores:
    """Move two boosted classifiers' decision points to where the fixed zone table pages best.

    The zone table's probability thresholds are a contract (DESIGN.md §3), so the models adapt to
    it: lowering a gradient-boosting model's baseline log-odds by δ maps every probability p to
    expit(logit(p) − δ) — exactly, in scikit-learn and in the exported ensemble alike. δ for leak
    and for burst is chosen on validation data by the objective; the models are shifted in place.
    """
    raw_l = leak.decision_function(vx)
    raw_b = burst.decision_function(vx)
    best: tuple[float, float, float, metrics.EventScores | None] = (-2.0, 0.0, 0.0, None)
    for dl in _SHIFTS:
        pl = expit(raw_l - dl)
        for db in _SHIFTS:
            s = _event_f1(vd, _water_flow_alert(pl, expit(raw_b - db), critical))
            obj = _objective(s)
            if obj > best[0]:
                best = (obj, dl, db, s)
    _, dl, db, found = best
    assert found is not None
    leak._baseline_prediction = leak._baseline_prediction - dl
    burst._baseline_prediction = burst._baseline_prediction - db
    leak.infrawatch_shift, burst.infrawatch_shift = dl, db
    return found


def bands_from_high(high: float) -> dict[str, float]:
    """MEDIUM below the alert threshold, CRITICAL half-way from it to certainty."""
    return {"medium": round(high * 0.7, 4), "high": high, "critical": round(high + (1 - high) * 0.5, 4)}


# ---------------------------------------------------------------------------------- training
# features that mean the same on any sensor, whatever its scale: a model meant for other buildings
# or series than it was trained on (LEAD, NAB) uses only these
_SCALE_FREE_SUFFIXES = ("_zscore",)
_SCALE_FREE_NAMES = ("count", "dt_s", "hour", "dow", "weekend", "night")


def feature_subset(names: list[str], feature_set: str) -> list[int]:
    if feature_set == "all":
        return list(range(len(names)))
    if feature_set == "scale_free":
        return [i for i, n in enumerate(names) if n.endswith(_SCALE_FREE_SUFFIXES) or n in _SCALE_FREE_NAMES]
    raise ValueError(f"unknown feature set {feature_set!r}; use 'all' or 'scale_free'")


class Trainer:
    """Fits one kind's ensembles on `train` parts, choosing among candidates on `validation`."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: list[sim.SimData],
        validation: list[sim.SimData],
        progress: Progress | None = None,
    ) -> None:
        if cfg.kind not in sim.KINDS:
            raise ValueError(f"unknown kind {cfg.kind!r}; choose one of {', '.join(sim.KINDS)}")
        self.cfg = cfg
        self.say = progress or (lambda _msg: None)
        self.rng = np.random.default_rng(cfg.random_state)
        self.train_parts = train
        self.val_parts = validation
        self.names: list[str] = []

    def _features(self, parts: list[sim.SimData], what: str) -> list[tuple[sim.SimData, np.ndarray]]:
        out = []
        for i, d in enumerate(parts):
            x, names = features(d, self.cfg.window)
            cols = feature_subset(names, self.cfg.feature_set)
            self.names = [names[c] for c in cols]
            out.append((d, np.ascontiguousarray(x[:, cols])))
            self.say(f"{what} part {i + 1}/{len(parts)}: {len(d):,} readings, {len(d.events)} events")
        return out

    def run(self) -> tuple[dict[str, core.TreeEnsemble], dict[str, Any]]:
        t0 = time.monotonic()
        cfg = self.cfg
        labels = self.train_parts[0].label_names if self.train_parts else ()
        seen = (
            set(np.unique(np.concatenate([d.label for d in self.train_parts]))) if self.train_parts else set()
        )
        missing = [labels[i] for i in range(1, len(labels)) if i not in seen and cfg.data is None]
        if missing or not self.train_parts:
            raise ValueError(
                f"the {cfg.kind} training data has no {', '.join(missing) or 'readings'} events; "
                "simulate more sensors or days (--sensors/--days) or add training seeds"
            )
        train = self._features(self.train_parts, "train")
        val = self._features(self.val_parts, "validation")
        # a feature never present in training (e.g. pressure/flow ratio for quality stations)
        # carries no information; dropping it keeps every learner's binning well-defined
        keep = np.flatnonzero(np.any(np.concatenate([~np.isnan(x) for _, x in train]), axis=0))
        self.names = [self.names[i] for i in keep]
        train = [(d, np.ascontiguousarray(x[:, keep])) for d, x in train]
        val = [(d, np.ascontiguousarray(x[:, keep])) for d, x in val]
        if cfg.kind == "water_flow":
            models, pipeline_meta, search = self._water_flow(train, val)
        else:
            models, pipeline_meta, search = self._scored_kind(train, val)
        meta = {
            "window": cfg.window,
            "features": self.names,
            "config": asdict(cfg),
            "data": {
                "train_readings": int(sum(len(d) for d, _ in train)),
                "validation_readings": int(sum(len(d) for d, _ in val)),
                "train_events": int(sum(len(d.events) for d, _ in train)),
                "validation_events": int(sum(len(d.events) for d, _ in val)),
            },
            "search": search,
            "pipeline": pipeline_meta,
            "training_seconds": round(time.monotonic() - t0, 1),
            "versions": _versions(),
        }
        return models, meta

    # -- water_flow: two binary classifiers under the fixed zone table
    def _water_flow(
        self, train: list[Any], val: list[Any]
    ) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        y = np.concatenate([d.label for d, _ in train])
        x = np.concatenate([x for _, x in train])
        idx, w = _subsample(y, self.cfg.max_train_rows, self.rng)
        x, y = x[idx], y[idx]
        vd, vx = val[0]
        for label, what in ((1, "leak"), (2, "burst")):
            if not (y == label).any():
                raise ValueError(
                    f"the training part holds no {what} readings, so no {what} model can be learned; "
                    "use a longer stretch of data or simulated fleets"
                )
        critical = vd.zone == "CRITICAL"
        results = []
        best: tuple[float, Any, Any, Candidate] | None = None
        deadline = time.monotonic() + self.cfg.time_budget_s
        for c in _candidates(self.rng):
            if best is not None and time.monotonic() > deadline:
                break
            leak = _classifier(c, self.cfg.n_estimators, self.cfg.random_state).fit(
                x, y == 1, sample_weight=w
            )
            burst = _classifier(c, self.cfg.n_estimators, self.cfg.random_state).fit(
                x, y == 2, sample_weight=w
            )
            if c.family == "hgb":
                s = _shift_boosting(leak, burst, vx, vd, critical)
                c.params = {**c.params, "shift": [leak.infrawatch_shift, burst.infrawatch_shift]}
            else:
                pl = leak.predict_proba(vx)[:, 1]
                pb = burst.predict_proba(vx)[:, 1]
                s = _event_f1(vd, _water_flow_alert(pl, pb, critical))
            c.score, c.detail = _objective(s), asdict(s)
            results.append(
                {"family": c.family, "params": c.params, "objective": c.score, "validation": c.detail}
            )
            self.say(
                f"candidate {c.family} {c.params}: event F1 {s.f1:.3f} P {s.precision:.3f} R {s.recall:.3f}"
            )
            if best is None or c.score > best[0]:
                best = (c.score, leak, burst, c)
        assert best is not None
        _, leak, burst, c = best
        self.say(f"chose {c.family} {c.params}")
        return (
            {
                "leak": core.TreeEnsemble.from_sklearn(leak, feature_names=self.names),
                "burst": core.TreeEnsemble.from_sklearn(burst, feature_names=self.names),
            },
            {},
            results,
        )

    # -- water_quality / energy: one anomaly classifier, alert threshold chosen on validation
    def _scored_kind(
        self, train: list[Any], val: list[Any]
    ) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        kind = self.cfg.kind
        y = np.concatenate([d.label for d, _ in train])
        x = np.concatenate([x for _, x in train])
        idx, w = _subsample(y, self.cfg.max_train_rows, self.rng)
        xs, ys = x[idx], y[idx]
        vd, vx = val[0]
        results = []
        best: tuple[float, Any, float, Candidate] | None = None
        deadline = time.monotonic() + self.cfg.time_budget_s
        for c in _candidates(self.rng):
            if best is not None and time.monotonic() > deadline:
                break
            m = _classifier(c, self.cfg.n_estimators, self.cfg.random_state).fit(xs, ys, sample_weight=w)
            score = 1.0 - m.predict_proba(vx)[:, 0]
            high, s = _best_band(score, vd)
            c.score, c.detail = _objective(s), asdict(s)
            results.append(
                {
                    "family": c.family,
                    "params": c.params,
                    "threshold": high,
                    "objective": c.score,
                    "validation": c.detail,
                }
            )
            self.say(
                f"candidate {c.family} {c.params}: event F1 {s.f1:.3f} "
                f"P {s.precision:.3f} R {s.recall:.3f} at threshold {high}"
            )
            if best is None or c.score > best[0]:
                best = (c.score, m, high, c)
        assert best is not None
        _, model, high, c = best
        self.say(f"chose {c.family} {c.params}, alert threshold {high}")
        pipeline_meta: dict[str, Any] = {"bands": bands_from_high(high)}
        if kind == "water_quality":
            return (
                {"contamination": core.TreeEnsemble.from_sklearn(model, feature_names=self.names)},
                pipeline_meta,
                results,
            )
        # energy: the expected-use regressor must not see the kWh of the reading it predicts
        ctx = [i for i, n in enumerate(self.names) if not n.startswith("energy_kwh")]
        normal = y == 0
        reg = RandomForestRegressor(
            n_estimators=min(self.cfg.n_estimators, 60),
            max_depth=12,
            min_samples_leaf=5,
            n_jobs=-1,
            random_state=self.cfg.random_state,
        )
        kwh = np.concatenate([d.fields["energy_kwh"] for d, _ in train])
        fit_rows = np.flatnonzero(normal & ~np.isnan(kwh))
        fit_rows = self.rng.choice(fit_rows, min(len(fit_rows), self.cfg.max_train_rows), replace=False)
        reg.fit(x[np.ix_(fit_rows, np.asarray(ctx, np.intp))], kwh[fit_rows])
        pipeline_meta["tolerance"] = 0.25
        if train[0][0].label_names == ENERGY_TYPES:
            # typed labels: the classifier's most probable anomalous class names the anomaly
            pipeline_meta["anomaly_types"] = [ENERGY_TYPES[int(k)] for k in model.classes_]
        return (
            {
                "anomaly": core.TreeEnsemble.from_sklearn(model, feature_names=self.names),
                "expected_kwh": core.TreeEnsemble.from_sklearn(
                    reg, feature_names=[self.names[i] for i in ctx]
                ),
            },
            pipeline_meta,
            results,
        )


def _versions() -> dict[str, str]:
    return {"infrawatch_core": core.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def train(
    cfg: TrainConfig,
    registry: ModelRegistry,
    *,
    activate: bool = True,
    progress: Progress | None = None,
) -> ModelVersion:
    """Train one kind and store it (active by default), with figures on data it never saw.

    Without `cfg.data`: simulated fleets (train/validation/test seeds). With it: a real data set,
    split by time into the first 60% (train), the next 20% (validation) and the latest 20%
    (test, kept for the figures only).
    """
    say = progress or (lambda _msg: None)
    if cfg.data is None:
        train_parts = [sim.simulate(cfg.kind, seed=s, **cfg.sim_kwargs()) for s in cfg.train_seeds]
        val_parts = [sim.simulate(cfg.kind, seed=s, **cfg.sim_kwargs()) for s in cfg.validation_seeds]
        data_meta: dict[str, Any] = {
            "source": "infrawatch.sim",
            "train_seeds": list(cfg.train_seeds),
            "validation_seeds": list(cfg.validation_seeds),
            "test_seeds": list(cfg.test_seeds),
        }
        test_parts = None
    else:
        name, data = datasets.load(cfg.data)
        if data.kind != cfg.kind:
            raise ValueError(f"{cfg.data} is a {data.kind} data set ({name}), not {cfg.kind}")
        train_part, val_part, test_part = datasets.split_by_time(data, (0.6, 0.2, 0.2))
        train_parts, val_parts, test_parts = [train_part], [val_part], [test_part]
        data_meta = {"source": name, "path": str(cfg.data), "split": "time 60/20/20", "readings": len(data)}
    models, meta = Trainer(cfg, train_parts, val_parts, say).run()
    meta["data"] = {**data_meta, **meta["data"]}
    entry = {**models, "version": "candidate", **meta["pipeline"]}
    if test_parts is None:
        test = evaluate_sim(cfg.kind, entry, cfg.test_seeds, cfg.window, cfg.sim_kwargs(), progress=say)
    else:
        r = evaluate_data("test (latest 20%)", test_parts[0], entry, cfg.window)
        say(f"test: {_fmt(r.scores.event)}")
        test = {"pooled": r.scores.as_dict()}
    meta["metrics"] = {"test": test}
    return registry.save(cfg.kind, models, meta, activate=activate)
