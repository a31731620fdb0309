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
from collections.abc import Callable, Iterator
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
from infrawatch.detection.evaluation import EVENT_RULES, evaluate_data, evaluate_sim, probation_end_ns
from infrawatch.detection.registry import ModelRegistry, ModelVersion

Progress = Callable[[str], None]
NS = metrics.NS


ENERGY_TYPES = ("normal", "high_consumption", "low_consumption", "unusual_pattern")
# water_flow chooses two decision shifts and two k-of-n rules on validation: one seed holds a
# few dozen incidents, too few to tell settings apart (the choice flipped from seed to seed)
VALIDATION_SEEDS = {"water_flow": (21, 22, 23)}


@dataclass
class TrainConfig:
    kind: str
    window: int = 60
    n_sensors: int = 30
    days: float | None = None  # None: the kind's simulator default
    train_seeds: tuple[int, ...] = (11, 12, 13, 14)  # four: leaks are few and varied
    # None: the kind's default (`VALIDATION_SEEDS`)
    validation_seeds: tuple[int, ...] | None = None
    test_seeds: tuple[int, ...] = (31, 32)
    max_train_rows: int = 120_000
    time_budget_s: float = 180.0
    # Try exactly this many candidates (in the seeded order) whatever the time: figures that do
    # not depend on how busy the machine is. None: as many as `time_budget_s` allows.
    max_candidates: int | None = None
    n_estimators: int = 100
    random_state: int = 0
    data: str | None = None  # a real data set (folder or CSV) instead of simulated fleets
    feature_set: str = "all"  # or "scale_free" for models meant for other sensors than trained on

    def validation(self) -> tuple[int, ...]:
        if self.validation_seeds is not None:
            return self.validation_seeds
        return VALIDATION_SEEDS.get(self.kind, (21,))

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
    for the rest, each row weighted by the inverse of its class's sampling fraction. Rows labelled
    −1 (ambiguous, see `training_labels`) are never drawn.

    Without the weights the enriched sample would inflate every probability, and the zone table's
    fixed thresholds (DESIGN.md §3) would page on noise.
    """
    if len(y) <= max_rows and not (y < 0).any():
        return np.arange(len(y)), np.ones(len(y))
    pos_all = np.flatnonzero(y > 0)
    neg_all = np.flatnonzero(y == 0)
    pos = rng.choice(pos_all, min(len(pos_all), max_rows // 2), replace=False)
    neg = rng.choice(neg_all, min(len(neg_all), max_rows - len(pos)), replace=False)
    idx = np.sort(np.concatenate([pos, neg]))
    w = np.where(y[idx] > 0, len(pos_all) / max(len(pos), 1), len(neg_all) / max(len(neg), 1))
    return idx, w / w.mean()


# what of a simulated incident the features can see, hence what a model is taught to page on
LEAK_SKIP_S = 3600  # the first hour of a leak ramp: a few percent of extra flow, not yet a leak
LEAK_KEEP_S = 24 * 3600  # after a day the time-of-day profiles have learnt the leak as usual
BURST_KEEP_S = 3600  # a burst is paged at its onset; once the window is past the step it is level


def training_labels(data: sim.SimData) -> np.ndarray:
    """Per-reading training labels: `data.label`, with the ambiguous part of each simulated incident
    set to −1 (left out of training, neither incident nor normal).

    An event is caught by any alert in it, so a model need only learn the stretch where the
    production features show the incident: a leak from an hour into its ramp until a day has
    passed (the `hod_dev` profiles then hold the leak as the usual level, and no feature can tell
    it from normal — taught as positive, those readings only teach the model to page on normal
    flow), a burst in its first hour. Scoring is unchanged: every reading of every event counts.
    """
    y = data.label.astype(np.int8)
    index = {s.sensor_id: i for i, s in enumerate(data.sensors)}
    for e in data.events:
        rows = np.flatnonzero(
            (data.sensor_index == index[e.sensor_id])
            & (data.timestamp_ns >= e.start_ns)
            & (data.timestamp_ns < e.end_ns)
        )
        age = (data.timestamp_ns[rows] - e.start_ns) / NS
        if e.type == "leak":
            y[rows[(age < LEAK_SKIP_S) | (age >= LEAK_KEEP_S)]] = -1
        elif e.type == "burst":
            y[rows[age >= BURST_KEEP_S]] = -1
    return y


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
def _event_f1(data: sim.SimData, alert: np.ndarray, probation: bool = False) -> metrics.EventScores:
    """Event figures of `alert` on `data`; with `probation`, as the evaluation scores them (the first
    10% of the span, at least a day, is history: its alerts and the events starting in it ignored)."""
    spans = [metrics.Span(e.sensor_id, e.start_ns, e.end_ns, e.type) for e in data.events]
    if probation and len(data):
        end = probation_end_ns(data.timestamp_ns)
        spans = [e for e in spans if e.start_ns >= end]
        alert = np.asarray(alert, bool) & (data.timestamp_ns >= end)
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


_SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0)
# (k, n) confirmation rules tried on validation: page when k of a sensor's last n verdicts are HIGH
PERSISTENCE = (
    (1, 1),
    (2, 3),
    (3, 5),
    (5, 10),
    (8, 15),
    (2, 16),
    (10, 30),
    (3, 31),
    (20, 45),
    (5, 61),
    (30, 60),
)


class FastEvents:
    """`metrics.event_scores` for many alert vectors over one data set, with the same rules and the
    probationary period of the evaluation (tests check the figures equal): the search scores
    hundreds of shift × persistence settings per candidate, the reference takes a quarter second.

    Also the NumPy twin of the Rust pipeline's k-of-n `Persistence` (`confirm`), in the same
    per-sensor reading order.
    """

    def __init__(self, data: sim.SimData, tolerance_ns: int, merge_gap_ns: int) -> None:
        ts = np.asarray(data.timestamp_ns, np.int64)
        self.order = np.lexsort((ts, data.sensor_index))
        self.sensor = np.asarray(data.sensor_index)[self.order]
        self.ts = ts[self.order]
        self.scored = self.ts >= probation_end_ns(ts) if len(ts) else np.ones(0, bool)
        first: np.ndarray = (
            np.flatnonzero(np.r_[True, self.sensor[1:] != self.sensor[:-1]])
            if len(ts)
            else np.zeros(0, np.int64)
        )
        self.group_start = np.repeat(first, np.diff(np.r_[first, len(ts)])).astype(np.int64)
        self.merge_gap_ns = merge_gap_ns
        p_end = probation_end_ns(ts) if len(ts) else 0
        index = {s.sensor_id: i for i, s in enumerate(data.sensors)}
        ev = [
            (index[e.sensor_id], e.start_ns, max(e.end_ns, e.start_ns + tolerance_ns))
            for e in data.events
            if e.start_ns >= p_end
        ]
        self.n_events = len(ev)
        self.ev_sensor = np.array([e[0] for e in ev], np.int64)
        self.ev_lo = np.array([e[1] for e in ev], np.int64)
        self.ev_hi = np.array([e[2] for e in ev], np.int64)

    def confirm(self, high: np.ndarray, k: int, n: int) -> np.ndarray:
        """Readings (sorted order) that stay HIGH under k-of-n persistence, from `high` (sorted)."""
        if k <= 1:
            return high
        cs = np.concatenate([[0], np.cumsum(high, dtype=np.int64)])
        i = np.arange(len(high))
        lo = np.maximum(i - n + 1, self.group_start)
        return np.asarray(high & (cs[i + 1] - cs[lo] >= k))

    def sort(self, alert: np.ndarray) -> np.ndarray:
        return np.asarray(alert, bool)[self.order]

    def scores(self, alert_sorted: np.ndarray) -> tuple[float, float, float, float]:
        """(precision, recall, F1, false-positive share) of alerts given in sorted order."""
        a = np.flatnonzero(alert_sorted & self.scored)
        if not len(a):
            return float("nan"), 0.0 if self.n_events else float("nan"), float("nan"), float("nan")
        s, t = self.sensor[a], self.ts[a]
        new = np.r_[True, (s[1:] != s[:-1]) | (t[1:] - t[:-1] > self.merge_gap_ns)]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(a)] - 1
        r_sensor, r_lo, r_hi = s[starts], t[starts], t[ends] + 1
        true_runs = 0
        if self.n_events:
            hit = (
                (r_sensor[:, None] == self.ev_sensor[None, :])
                & (r_lo[:, None] < self.ev_hi[None, :])
                & (self.ev_lo[None, :] < r_hi[:, None])
            )
            true_runs = int(hit.any(axis=1).sum())
        caught = 0
        if self.n_events:
            j = np.searchsorted(s, self.ev_sensor, side="left")
            j_end = np.searchsorted(s, self.ev_sensor, side="right")
            for e in range(self.n_events):
                seg = t[j[e] : j_end[e]]
                q = int(np.searchsorted(seg, self.ev_lo[e]))
                caught += int(q < len(seg) and seg[q] < self.ev_hi[e])
        runs = len(starts)
        p = true_runs / runs if runs else float("nan")
        r = caught / self.n_events if self.n_events else float("nan")
        f1 = metrics._f1(p, r)  # the reference's own harmonic mean (NaN rules included)
        fps = (runs - true_runs) / runs if runs else float("nan")
        return p, r, f1, fps


def _objective_of(p: float, r: float, f1: float, fps: float) -> float:
    f1 = 0.0 if np.isnan(f1) else f1
    fps = 1.0 if np.isnan(fps) else fps
    return f1 - max(0.0, fps - 0.10)


def _tune_water_flow(
    leak: Any, burst: Any, vx: np.ndarray, vd: sim.SimData, critical: np.ndarray, fast: FastEvents
) -> tuple[metrics.EventScores, dict[str, tuple[int, int]]]:
    """Choose how the two classifiers page under the fixed zone table: decision shifts for boosted
    models, and a k-of-n persistence rule per model — on validation data, by the objective.

    The zone table's probability thresholds are a contract (DESIGN.md §3), so the models adapt to
    it: lowering a gradient-boosting model's baseline log-odds by δ maps every probability p to
    expit(logit(p) − δ) — exactly, in scikit-learn and in the exported ensemble alike. Each model
    also gets its own rule (k of a sensor's last n verdicts HIGH by its probability, applied by the
    Rust pipeline before paging): a leak shows at a few readings an hour, a burst at every one.
    The leak and burst settings are found by coordinate ascent (the other held fixed, twice
    round); boosted models are shifted in place. Returns the reference figures of the chosen
    setting and the rules.
    """
    boosted = hasattr(leak, "_baseline_prediction")
    if boosted:
        raw_l, raw_b = leak.decision_function(vx), burst.decision_function(vx)
        shifts: tuple[float, ...] = _SHIFTS
    else:
        raw_l, raw_b = leak.predict_proba(vx)[:, 1], burst.predict_proba(vx)[:, 1]
        shifts = (0.0,)

    def high(raw: np.ndarray, d: float, crit_bound: float, std_bound: float) -> np.ndarray:
        p = expit(raw - d) if boosted else raw
        return fast.sort(np.where(critical, p > crit_bound, p > std_bound))

    # HIGH by the zone table from each probability alone (CRITICAL zone bound, STANDARD bound)
    highs = {
        "leak": [high(raw_l, d, 0.4, 0.6) for d in shifts],
        "burst": [high(raw_b, d, 0.1, 0.2) for d in shifts],
    }
    zero = shifts.index(0.0)
    chosen = {"leak": (zero, (1, 1)), "burst": (zero, (1, 1))}

    def alerts(role: str, setting: tuple[int, tuple[int, int]]) -> np.ndarray:
        return fast.confirm(highs[role][setting[0]], *setting[1])

    for role in ("burst", "leak", "burst", "leak"):
        other = alerts("leak" if role == "burst" else "burst", chosen["leak" if role == "burst" else "burst"])
        best = (-9.0, chosen[role])
        for i in range(len(shifts)):
            for rule in PERSISTENCE:
                obj = _objective_of(*fast.scores(alerts(role, (i, rule)) | other))
                if obj > best[0]:
                    best = (obj, (i, rule))
        chosen[role] = best[1]
    dl, db = shifts[chosen["leak"][0]], shifts[chosen["burst"][0]]
    if boosted:
        leak._baseline_prediction = leak._baseline_prediction - dl
        burst._baseline_prediction = burst._baseline_prediction - db
        leak.infrawatch_shift, burst.infrawatch_shift = dl, db
    alert_sorted = alerts("leak", chosen["leak"]) | alerts("burst", chosen["burst"])
    alert = np.empty(len(alert_sorted), bool)
    alert[fast.order] = alert_sorted
    return _event_f1(vd, alert, probation=True), {r: chosen[r][1] for r in ("leak", "burst")}


def bands_from_high(high: float) -> dict[str, float]:
    """MEDIUM below the alert threshold, CRITICAL half-way from it to certainty."""
    return {"medium": round(high * 0.7, 4), "high": high, "critical": round(high + (1 - high) * 0.5, 4)}


# ---------------------------------------------------------------------------------- training
# features that mean the same on any sensor, whatever its scale: a model meant for other buildings
# or series than it was trained on (LEAD, NAB) uses only these
_SCALE_FREE_SUFFIXES = ("_zscore",)
_SCALE_FREE_NAMES = ("count", "dt_s", "hour", "dow", "weekend", "night")


# features only some kinds' models read: the day-over-day deviation finds leaks (flow above its
# level of earlier days); the other kinds' models were chosen without it and do not need it
_KIND_SUFFIXES = {"water_flow": ("_day_dev", "_day_dev_1h", "_day_dev_3h")}
_ALL_KIND_SUFFIXES = tuple(x for xs in _KIND_SUFFIXES.values() for x in xs)


def feature_subset(names: list[str], feature_set: str, kind: str | None = None) -> list[int]:
    """Columns of the store row `names` that a `kind` model trained with `feature_set` reads."""
    mine = _KIND_SUFFIXES.get(kind or "", ())
    own = [i for i, n in enumerate(names) if not n.endswith(_ALL_KIND_SUFFIXES) or n.endswith(mine)]
    if feature_set == "all":
        return own
    if feature_set == "scale_free":
        return [i for i in own if names[i].endswith(_SCALE_FREE_SUFFIXES) or names[i] in _SCALE_FREE_NAMES]
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
            cols = feature_subset(names, self.cfg.feature_set, self.cfg.kind)
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
        # simulated incidents: only what the features can see is taught (real data: every label)
        y = np.concatenate([d.label if self.cfg.data else training_labels(d) for d, _ in train])
        x = np.concatenate([x for _, x in train])
        # the leak model learns on every reading: `{field}_day_dev(_1h)` compare each with the
        # same time on earlier days (the `hod_dev` profile mostly holds today's readings)
        y_leak = y
        # each model's sample is balanced on its own incident (the other one is a negative)
        idx, w = _subsample(np.where(y < 0, -1, y == 2).astype(np.int8), self.cfg.max_train_rows, self.rng)
        idx_l, w_l = _subsample(
            np.where(y_leak < 0, -1, y_leak == 1).astype(np.int8), self.cfg.max_train_rows, self.rng
        )
        x_l, y_l = x[idx_l], y_leak[idx_l]
        x, y = x[idx], y[idx]
        vd, vx = sim.concat([d for d, _ in val]), np.concatenate([x for _, x in val])
        for label, what, yy in ((1, "leak", y_l), (2, "burst", y)):
            if not (yy == label).any():
                raise ValueError(
                    f"the training part holds no {what} readings, so no {what} model can be learned; "
                    "use a longer stretch of data or simulated fleets"
                )
        critical = vd.zone == "CRITICAL"
        fast = FastEvents(vd, **EVENT_RULES["water_flow"])
        results = []
        best: tuple[float, Any, Any, Candidate] | None = None
        for c in self._search():
            leak = _classifier(c, self.cfg.n_estimators, self.cfg.random_state).fit(
                x_l, y_l == 1, sample_weight=w_l
            )
            burst = _classifier(c, self.cfg.n_estimators, self.cfg.random_state).fit(
                x, y == 2, sample_weight=w
            )
            s, rule = _tune_water_flow(leak, burst, vx, vd, critical, fast)
            if c.family == "hgb":
                c.params = {**c.params, "shift": [leak.infrawatch_shift, burst.infrawatch_shift]}
            c.params = {**c.params, "persistence": {r: list(kn) for r, kn in rule.items()}}
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
        rules = {r: {"k": int(kn[0]), "n": int(kn[1])} for r, kn in c.params["persistence"].items()}
        return (
            {
                "leak": core.TreeEnsemble.from_sklearn(leak, feature_names=self.names),
                "burst": core.TreeEnsemble.from_sklearn(burst, feature_names=self.names),
            },
            {"persistence": rules},
            results,
        )

    def _search(self) -> Iterator[Candidate]:
        """The candidates to try: the first `max_candidates` of the seeded order, or else as many
        as start within the time budget (the first always does)."""
        deadline = time.monotonic() + self.cfg.time_budget_s
        for i, c in enumerate(_candidates(self.rng)):
            if self.cfg.max_candidates is not None:
                if i >= self.cfg.max_candidates:
                    return
            elif i > 0 and time.monotonic() > deadline:
                return
            yield c

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
        for c in self._search():
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
        val_parts = [sim.simulate(cfg.kind, seed=s, **cfg.sim_kwargs()) for s in cfg.validation()]
        data_meta: dict[str, Any] = {
            "source": "infrawatch.sim",
            "train_seeds": list(cfg.train_seeds),
            "validation_seeds": list(cfg.validation()),
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
