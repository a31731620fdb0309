"""core.TreeEnsemble: exact parity with scikit-learn 1.9 on every supported estimator, including
NaN, ±1e30, values exactly at thresholds and float64 values that round across a threshold in
float32; Saabas contributions; the artifact (round trip and every kind of bad file)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.ensemble._iforest import _average_path_length
from sklearn.linear_model import LogisticRegression

from infrawatch._core import TreeEnsemble

N_FEATURES = 5
ATOL = 1e-9


def _data(n: int, n_classes: int | None, nan: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)) * rng.choice([0.01, 1.0, 100.0], size=N_FEATURES)
    score = x[:, 0] / x[:, 0].std() + 0.8 * x[:, 1] / x[:, 1].std() + 0.5 * rng.normal(size=n)
    if n_classes is None:
        y: np.ndarray = np.abs(score * 3.0 + 1.0)  # non-negative for the poisson loss
    else:
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    if nan:
        x[rng.random(x.shape) < 0.1] = np.nan
    return x, y


def _thresholds(est: Any) -> dict[int, list[float]]:
    """Split thresholds per (global) feature, read from the fitted sklearn model."""
    out: dict[int, list[float]] = {f: [] for f in range(N_FEATURES)}
    if hasattr(est, "_predictors"):
        for preds in est._predictors:
            for p in preds:
                for node in p.nodes[p.nodes["is_leaf"] == 0]:
                    out[int(node["feature_idx"])].append(float(node["num_threshold"]))
        return out
    ests = np.ravel(est.estimators_)
    feats = getattr(est, "estimators_features_", [None] * len(ests))
    sub = isinstance(est, IsolationForest) and est._max_features != N_FEATURES
    for e, fmap in zip(ests, feats, strict=True):
        t = e.tree_
        for f, thr in zip(t.feature[t.feature >= 0], t.threshold[t.feature >= 0], strict=True):
            out[int(fmap[f] if sub else f)].append(float(thr))
    return out


def _edge_rows(est: Any, base: np.ndarray, nan: bool, seed: int = 1) -> np.ndarray:
    """Rows whose values sit exactly at, just around, and across-in-float32 the model's
    thresholds, plus extremes; NaN only where the model accepts it."""
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, len(base), size=600)].copy()
    if not nan:
        x = np.where(np.isnan(x), 0.0, x)
    thr = _thresholds(est)
    for f, ts_all in thr.items():
        ts = [t for t in ts_all if np.isfinite(t)]  # missing-value splits have threshold inf
        if not ts:
            continue
        t = np.asarray(ts)[rng.integers(0, len(ts), size=len(x))]
        t32 = t.astype(np.float32).astype(np.float64)
        candidates = np.stack(
            [
                t,
                np.nextafter(t, np.inf),
                np.nextafter(t, -np.inf),
                t32,  # rounds to the same float32 as t, may be on the other side in float64
                np.nextafter(t32.astype(np.float32), np.float32(np.inf)).astype(np.float64),
                (t + t32) / 2,
            ]
        )
        pick = rng.integers(0, candidates.shape[0], size=len(x))
        replace = rng.random(len(x)) < 0.6
        x[replace, f] = candidates[pick, np.arange(len(x))][replace]
    extremes = np.array([1e30, -1e30, 0.0, -0.0, 1e-45, 1e-300])
    mask = rng.random(x.shape) < 0.03
    x[mask] = rng.choice(extremes, size=mask.sum())
    if nan:
        x[rng.random(x.shape) < 0.05] = np.nan
    return x


def _accepts_nan(est: Any, x: np.ndarray) -> bool:
    probe = x[:2].copy()
    probe[0, 0] = np.nan
    try:
        (est.predict_proba if hasattr(est, "predict_proba") else est.predict)(probe)
    except ValueError:
        return False
    return True


# (factory, n_classes or None for regression / isolation, fit with NaN)
CASES: dict[str, tuple[Any, int | None, bool]] = {
    "rf-binary": (lambda: RandomForestClassifier(12, max_depth=8, random_state=0), 2, False),
    "rf-binary-nan": (lambda: RandomForestClassifier(12, max_depth=8, random_state=0), 2, True),
    "rf-multi-nan": (lambda: RandomForestClassifier(12, max_depth=8, random_state=0), 3, True),
    "et-binary": (lambda: ExtraTreesClassifier(12, max_depth=8, random_state=0), 2, False),
    "et-multi-nan": (lambda: ExtraTreesClassifier(12, max_depth=8, random_state=0), 4, True),
    "rf-reg-nan": (lambda: RandomForestRegressor(12, max_depth=8, random_state=0), None, True),
    "rf-reg": (lambda: RandomForestRegressor(12, max_depth=8, random_state=0), None, False),
    "et-reg": (lambda: ExtraTreesRegressor(12, max_depth=8, random_state=0), None, False),
    "gb-binary": (lambda: GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), 2, False),
    "gb-multi": (lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0), 3, False),
    "gb-reg": (lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0), None, False),
    "gb-reg-huber": (
        lambda: GradientBoostingRegressor(n_estimators=10, loss="huber", subsample=0.7, random_state=0),
        None,
        False,
    ),
    "gb-binary-zero-init": (
        lambda: GradientBoostingClassifier(n_estimators=10, init="zero", random_state=0),
        2,
        False,
    ),
    "hgb-binary-nan": (lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0), 2, True),
    "hgb-multi-nan": (lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0), 3, True),
    "hgb-reg-nan": (lambda: HistGradientBoostingRegressor(max_iter=20, random_state=0), None, True),
    "hgb-poisson": (
        lambda: HistGradientBoostingRegressor(max_iter=20, loss="poisson", random_state=0),
        None,
        True,
    ),
    "iforest-nan": (lambda: IsolationForest(n_estimators=15, random_state=0), None, True),
    "iforest-subfeatures": (
        lambda: IsolationForest(n_estimators=15, max_features=0.6, max_samples=100, random_state=0),
        None,
        False,
    ),
}

_FITTED: dict[str, tuple[Any, TreeEnsemble, np.ndarray, bool]] = {}


def fitted(case: str) -> tuple[Any, TreeEnsemble, np.ndarray, bool]:
    """(sklearn estimator, exported model, edge-case x, x may hold NaN) — fitted once per case."""
    if case not in _FITTED:
        factory, n_classes, nan = CASES[case]
        x, y = _data(400, n_classes, nan)
        est = factory()
        est.fit(x, y)
        nan_ok = nan and _accepts_nan(est, x)
        _FITTED[case] = (est, TreeEnsemble.from_sklearn(est), _edge_rows(est, x, nan_ok), nan_ok)
    return _FITTED[case]


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_sklearn(case: str) -> None:
    est, m, x, nan_ok = fitted(case)
    assert m.estimator == type(est).__name__
    assert m.n_features == N_FEATURES
    if CASES[case][2] and not isinstance(est, ExtraTreesClassifier):
        # sklearn accepts NaN for these: they must really be compared on NaN rows
        assert nan_ok
    assert np.isnan(x).any() == nan_ok
    pred = est.predict(x)
    got = m.predict(x)
    if hasattr(est, "classes_"):
        np.testing.assert_array_equal(got, pred)
        assert got.dtype == pred.dtype
        np.testing.assert_allclose(m.predict_proba(x), est.predict_proba(x), rtol=0, atol=ATOL)
        assert m.classes == est.classes_.tolist()
    elif isinstance(est, IsolationForest):
        np.testing.assert_array_equal(got, pred)
        np.testing.assert_allclose(m.score_samples(x), est.score_samples(x), rtol=0, atol=ATOL)
        np.testing.assert_allclose(m.decision_function(x), est.decision_function(x), rtol=0, atol=ATOL)
        assert m.classes is None
    else:
        np.testing.assert_allclose(got, pred, rtol=0, atol=ATOL * max(1.0, np.abs(pred).max()))
        assert m.classes is None
    if hasattr(est, "decision_function") and not isinstance(est, IsolationForest):
        np.testing.assert_allclose(m.decision_function(x), est.decision_function(x), rtol=0, atol=ATOL)
    # single row and a float32 / list input give the same as the batch
    np.testing.assert_array_equal(m.predict(x[:1]), got[:1])
    np.testing.assert_array_equal(m.predict(x[:3].tolist()), got[:3])
    # non-contiguous float64 (Fortran order, strided view) takes the copying path: same answers
    np.testing.assert_array_equal(m.predict(np.asfortranarray(x)), got)
    np.testing.assert_array_equal(m.predict(x[::2]), got[::2])


def test_gradient_boosting_routes_nan_by_missing_go_to_left() -> None:
    # sklearn rejects NaN for GradientBoosting*; we route it with the exported tree flags:
    # equal to sklearn on the same rows with the NaN replaced by a value on the flagged side.
    est, m, x, _ = fitted("gb-reg")
    single = est.estimators_[0, 0].tree_
    assert single.feature[0] >= 0
    f, thr, go_left = single.feature[0], single.threshold[0], bool(single.missing_go_to_left[0])
    row = x[:1].copy()
    row[0, f] = np.nan
    assert np.isfinite(m.predict(row)).all()
    stump = GradientBoostingRegressor(n_estimators=1, max_depth=1, learning_rate=1.0).fit(
        np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 0.0, 10.0, 10.0])
    )
    s = TreeEnsemble.from_sklearn(stump)
    t = stump.estimators_[0, 0].tree_
    side = -1e9 if t.missing_go_to_left[0] else 1e9
    np.testing.assert_array_equal(s.predict([[np.nan]]), stump.predict([[side]]))
    assert isinstance(go_left, bool)
    assert np.isfinite(thr)


@pytest.mark.parametrize("case", list(CASES))
def test_contributions_sum_to_output(case: str) -> None:
    est, m, x, _ = fitted(case)
    c = m.contributions(x)
    assert c.shape[:2] == (len(x), N_FEATURES + 1)
    total = c.sum(axis=1)
    if isinstance(est, IsolationForest):
        # score = -2^(-mean_path / c(max_samples))
        cmax = _average_path_length([est._max_samples])[0]
        expected = -np.log2(-est.score_samples(x)) * cmax
    elif hasattr(est, "decision_function"):
        expected = est.decision_function(x)
    elif hasattr(est, "predict_proba"):
        p = est.predict_proba(x)
        expected = p[:, 1] if p.shape[1] == 2 else p
    elif isinstance(est, HistGradientBoostingRegressor):
        expected = est._raw_predict(x).ravel()
    else:
        expected = est.predict(x)
    if expected.ndim == 2:
        assert c.shape == (len(x), N_FEATURES + 1, expected.shape[1])
    else:
        assert c.shape == (len(x), N_FEATURES + 1)
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-9 * max(1.0, np.abs(expected).max()))
    # the bias is the same for every row
    np.testing.assert_array_equal(c[:, -1], np.broadcast_to(c[:1, -1], c[:, -1].shape))


@pytest.mark.parametrize("case", list(CASES))
def test_contributions_batch_equals_rows(case: str) -> None:
    # rows are walked several at a time (and one row through several trees at a time): every
    # row's contributions are the same bits whichever way it was scored
    _, m, x, _ = fitted(case)
    c = m.contributions(x)
    for i in range(0, len(x), 37):
        np.testing.assert_array_equal(m.contributions(x[i : i + 1]), c[i : i + 1])
    np.testing.assert_array_equal(m.contributions(x[5:23]), c[5:23])


def test_contributions_depth_one_by_hand() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    y = np.array([1.0, 1.0, 4.0, 6.0])
    est = RandomForestRegressor(n_estimators=1, max_depth=1, bootstrap=False, random_state=0).fit(x, y)
    m = TreeEnsemble.from_sklearn(est)
    root = y.mean()
    right = y[2:].mean()
    np.testing.assert_allclose(m.contributions([[3.0, 0.0]]), [[right - root, 0.0, root]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.contributions([[0.0, 0.0]]), [[1.0 - root, 0.0, root]], rtol=0, atol=1e-12)
    # GB: bias = init + lr * root value; contribution = lr * (leaf - root)
    gb = GradientBoostingRegressor(n_estimators=1, max_depth=1, learning_rate=0.5).fit(x, y)
    g = TreeEnsemble.from_sklearn(gb)
    t = gb.estimators_[0, 0].tree_
    leaf = t.apply(np.array([[3.0, 0.0]], dtype=np.float32))[0]
    init = y.mean()
    want = [0.5 * (t.value[leaf, 0, 0] - t.value[0, 0, 0]), 0.0, init + 0.5 * t.value[0, 0, 0]]
    np.testing.assert_allclose(g.contributions([[3.0, 0.0]]), [want], rtol=0, atol=1e-12)


def test_string_labels_and_properties() -> None:
    x, y = _data(200, 3, False)
    labels = np.array(["high", "low", "mid"])[y]
    est = RandomForestClassifier(5, max_depth=4, random_state=0).fit(x, labels)
    m = TreeEnsemble.from_sklearn(
        est, feature_names=[f"f{i}" for i in range(N_FEATURES)], metadata={"a": [1, 2]}
    )
    np.testing.assert_array_equal(m.predict(x), est.predict(x))
    assert m.predict(x).dtype == est.predict(x).dtype
    assert m.classes == ["high", "low", "mid"]
    assert m.feature_names == [f"f{i}" for i in range(N_FEATURES)]
    assert m.n_trees == 5
    assert m.sklearn_version == __import__("sklearn").__version__
    assert m.metadata == {"a": [1, 2]}
    m.metadata = {"metrics": {"auc": 0.93}, "version": "v3"}
    assert m.metadata["metrics"]["auc"] == 0.93
    with pytest.raises(ValueError, match="JSON"):
        m.metadata = {"x": object()}
    assert TreeEnsemble.from_sklearn(est).feature_names == [f"x{i}" for i in range(N_FEATURES)]
    est.feature_names_in_ = np.array([f"col{i}" for i in range(N_FEATURES)], dtype=object)
    assert TreeEnsemble.from_sklearn(est, feature_names=["ignored"] * 5).feature_names[0] == "col0"


def test_input_errors() -> None:
    _, m, x, _ = fitted("rf-binary")
    with pytest.raises(ValueError, match="Expected a 2D array"):
        m.predict(x[0])
    with pytest.raises(ValueError, match="features"):
        m.predict(x[:, :3])
    with pytest.raises(ValueError, match="0 sample"):
        m.predict(x[:0])
    with pytest.raises(ValueError, match="not available"):
        m.score_samples(x)
    with pytest.raises(ValueError, match="could not convert"):
        m.predict([["a", "b", "c", "d", "e"]])


def test_unsupported_estimators() -> None:
    x, y = _data(100, 2, False)
    with pytest.raises(TypeError, match="does not support"):
        TreeEnsemble.from_sklearn(LogisticRegression().fit(x, y))
    with pytest.raises(ValueError, match=r"not fitted"):
        TreeEnsemble.from_sklearn(RandomForestClassifier())
    with pytest.raises(ValueError, match="single-output"):
        TreeEnsemble.from_sklearn(RandomForestRegressor(3).fit(x, np.c_[y, y]))
    with pytest.raises(ValueError, match="custom init"):
        TreeEnsemble.from_sklearn(
            GradientBoostingClassifier(n_estimators=2, init=LogisticRegression()).fit(x, y)
        )
    xc = x.copy()
    xc[:, 0] = np.arange(len(x)) % 4
    hgb = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(xc, y)
    with pytest.raises(ValueError, match="custom init"):
        TreeEnsemble.from_sklearn(
            GradientBoostingClassifier(n_estimators=2, init=DummyClassifier(strategy="stratified")).fit(x, y)
        )
    with pytest.raises(ValueError, match="categorical"):
        TreeEnsemble.from_sklearn(hgb)
    with pytest.raises(ValueError, match="feature_names"):
        TreeEnsemble.from_sklearn(RandomForestClassifier(2).fit(x, y), feature_names=["a"])


@pytest.mark.parametrize("case", ["rf-multi-nan", "gb-multi", "hgb-binary-nan", "iforest-subfeatures"])
def test_artifact_round_trip(case: str, tmp_path: Any) -> None:
    est, m, x, _ = fitted(case)
    m.metadata = {"training": {"rows": 400}, "version": "1.2"}
    path = tmp_path / "model.iwt"
    m.save(path)
    m2 = TreeEnsemble.load(str(path))
    for name in (
        "estimator",
        "sklearn_version",
        "feature_names",
        "classes",
        "n_features",
        "n_trees",
        "metadata",
    ):
        assert getattr(m2, name) == getattr(m, name)
    fn = "score_samples" if isinstance(est, IsolationForest) else "predict_proba"
    np.testing.assert_array_equal(getattr(m2, fn)(x), getattr(m, fn)(x))
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    assert m2.predict(x).dtype == m.predict(x).dtype
    assert TreeEnsemble.from_bytes(m.to_bytes()).to_bytes() == m.to_bytes()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).predict(x), m.predict(x))


def test_artifact_rejects_bad_files(tmp_path: Any) -> None:
    _, m, _, _ = fitted("gb-binary")
    data = m.to_bytes()
    bad = {
        "empty": b"",
        "pickle": pickle.dumps({"model": 1}),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "truncated": data[: len(data) // 2],
        "truncated-checksum": data[:-1],
        "padded": data + b"\0",
        "future": data[:8] + (99).to_bytes(4, "little") + data[12:],
        "corrupt": data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:],
    }
    for name, b in bad.items():
        with pytest.raises(ValueError, match="not a valid infrawatch tree artifact") as e:
            TreeEnsemble.from_bytes(b)
        if name == "future":
            assert "version 99" in str(e.value)
        p = tmp_path / name
        p.write_bytes(b)
        with pytest.raises(ValueError, match="not a valid infrawatch tree artifact"):
            TreeEnsemble.load(p)
    with pytest.raises(FileNotFoundError):
        TreeEnsemble.load(tmp_path / "missing")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_artifact_random_mutations(data: st.DataObject) -> None:
    _, m, _, _ = fitted("hgb-multi-nan")
    b = bytearray(m.to_bytes())
    for i in data.draw(st.sets(st.integers(0, len(b) - 1), min_size=1, max_size=4)):
        b[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ValueError, match="not a valid infrawatch tree artifact"):
        TreeEnsemble.from_bytes(bytes(b))
