"""TreeEnsemble scoring against scikit-learn (n_jobs=1) and onnxruntime (skl2onnx, one thread):
one group per (model, batch size) with the three competitors side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier

# the extension directly: core.py re-exports classes other work items are still adding
from infrawatch._core import TreeEnsemble

N_FEATURES = 20
BATCHES = {"1row": 1, "1k": 1_000, "10k": 10_000, "100k": 100_000}
OPSET = {"": 17, "ai.onnx.ml": 3}  # ai.onnx.ml 3 is what IsolationForest's converter needs


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def _session(est: Any, options: dict[Any, Any] | None) -> tuple[ort.InferenceSession, str, str]:
    onx = to_onnx(est, np.zeros((1, N_FEATURES), dtype=np.float32), target_opset=OPSET, options=options)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    return sess, sess.get_inputs()[0].name, outs[-1] if len(outs) > 1 else outs[0]


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Callable[[np.ndarray], Any]]]:
    x, y = _data(20_000, 0)
    rf = RandomForestClassifier(n_estimators=100, max_depth=12, n_jobs=-1, random_state=0).fit(x, y)
    rf.set_params(n_jobs=1)
    gb = GradientBoostingClassifier(n_estimators=200, max_depth=4, random_state=0).fit(x[:8_000], y[:8_000])
    iso = IsolationForest(n_estimators=100, n_jobs=-1, random_state=0).fit(x)
    iso.set_params(n_jobs=1)
    out: dict[str, dict[str, Callable[[np.ndarray], Any]]] = {}
    for name, est, method, options in [
        ("random_forest", rf, "predict_proba", {id(rf): {"zipmap": False}}),
        ("gradient_boosting", gb, "predict_proba", {id(gb): {"zipmap": False}}),
        ("isolation_forest", iso, "score_samples", {id(iso): {"score_samples": True}}),
    ]:
        ours = TreeEnsemble.from_sklearn(est)
        sess, inp, outname = _session(est, options)

        def run_onnx(
            xb: np.ndarray, sess: ort.InferenceSession = sess, inp: str = inp, outname: str = outname
        ) -> Any:
            return sess.run([outname], {inp: xb.astype(np.float32)})[0]

        out[name] = {
            "infrawatch": getattr(ours, method),
            "sklearn": getattr(est, method),
            "onnxruntime": run_onnx,
        }
        # same answers before timing anything (onnxruntime computes in float32)
        xt = _data(200, 1)[0]
        ref = out[name]["sklearn"](xt)
        np.testing.assert_allclose(out[name]["infrawatch"](xt), ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.ravel(out[name]["onnxruntime"](xt)), np.ravel(ref), atol=1e-3)
    return out


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    x = _data(100_000, 2)[0]
    return {k: np.ascontiguousarray(x[:n]) for k, n in BATCHES.items()}


CASES = [
    (m, b, c)
    for m in ("random_forest", "gradient_boosting", "isolation_forest")
    for b in BATCHES
    for c in ("infrawatch", "sklearn", "onnxruntime")
]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_score(benchmark: Any, models: Any, inputs: Any, case: tuple[str, str, str]) -> None:
    model, batch, competitor = case
    benchmark.group = f"trees {model} {batch}"
    fn = models[model][competitor]
    xb = inputs[batch]
    if batch == "100k":
        benchmark.pedantic(fn, args=(xb,), rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn, xb)


CONTRIB_CASES = [(m, b) for m in ("random_forest", "gradient_boosting") for b in ("1row", "1k")]


@pytest.mark.parametrize("case", CONTRIB_CASES, ids=["-".join(c) for c in CONTRIB_CASES])
def test_contributions(benchmark: Any, models: Any, inputs: Any, case: tuple[str, str]) -> None:
    """Saabas contributions (no competitor in the stack: our own figure, one row and a batch)."""
    model, batch = case
    benchmark.group = f"trees contributions {model} {batch}"
    ours = models[model]["infrawatch"].__self__
    benchmark(ours.contributions, inputs[batch])
