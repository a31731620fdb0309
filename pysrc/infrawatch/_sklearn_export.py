"""Turn a fitted scikit-learn tree ensemble into the plain arrays the Rust `TreeEnsemble` takes.

Imported only by `TreeEnsemble.from_sklearn` (loading an artifact needs no scikit-learn).
Only reading sklearn objects happens here; all scoring is in Rust (core_rs/core/src/trees/).
`export` returns ``(header_json, trees)``: the header is the artifact's JSON header (`ModelInfo`
in trees/mod.rs) and each tree is a dict of node arrays with sklearn's conventions (children -1
for leaves, `x <= threshold` goes left, NaN follows `missing_left`).

Values are taken exactly as sklearn computes them at predict time (normalised class fractions,
`_raw_predict_init`, `_baseline_prediction`, isolation path lengths) so scores match bit for bit.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import sklearn
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble._iforest import _average_path_length
from sklearn.utils.validation import check_is_fitted

_FOREST_CLS = ("RandomForestClassifier", "ExtraTreesClassifier")
_FOREST_REG = ("RandomForestRegressor", "ExtraTreesRegressor")


def _check_fitted(est: Any) -> None:
    check_is_fitted(est)


def _feature_names(est: Any, given: Any) -> list[str]:
    n = int(est.n_features_in_)
    if hasattr(est, "feature_names_in_"):
        names = [str(f) for f in est.feature_names_in_]
    elif given is not None:
        names = [str(f) for f in given]
    else:
        names = [f"x{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"feature_names has {len(names)} names but the estimator has {n} features")
    return names


def _tree_arrays(
    tree: Any, value: np.ndarray, output: int, feature_map: np.ndarray | None = None
) -> dict[str, Any]:
    """Node arrays of a fitted sklearn `Tree` (`estimator.tree_`)."""
    left = np.asarray(tree.children_left, dtype=np.int64)
    feature = np.asarray(tree.feature, dtype=np.int64)
    if feature_map is not None:
        feature = np.where(left == -1, -2, feature_map[np.maximum(feature, 0)]).astype(np.int64)
    return {
        "children_left": left,
        "children_right": np.asarray(tree.children_right, dtype=np.int64),
        "feature": feature,
        "threshold": np.asarray(tree.threshold, dtype=np.float64),
        "missing_left": np.asarray(tree.missing_go_to_left, dtype=np.uint8),
        "value": np.ascontiguousarray(value, dtype=np.float64).ravel(),
        "count": np.asarray(tree.n_node_samples, dtype=np.float64),
        "fill_internal": False,
        "output": output,
    }


def _classes(est: Any) -> tuple[list[Any], str]:
    classes = np.asarray(est.classes_)
    if classes.ndim != 1:
        raise ValueError("only single-output classifiers are supported")
    return classes.tolist(), classes.dtype.str


def export(
    estimator: Any, feature_names: Any = None, metadata: Any = None
) -> tuple[str, list[dict[str, Any]]]:
    """(header JSON, per-tree node arrays) for a supported fitted estimator."""
    name = type(estimator).__name__
    supported = (
        *_FOREST_CLS,
        *_FOREST_REG,
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
        "IsolationForest",
    )
    if name not in supported or not type(estimator).__module__.startswith("sklearn."):
        raise TypeError(
            f"TreeEnsemble.from_sklearn does not support {type(estimator).__module__}.{name}; "
            f"supported: {', '.join(supported)}"
        )
    _check_fitted(estimator)
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise ValueError(f"{name}: only single-output models are supported")
    header: dict[str, Any] = {
        "estimator": name,
        "sklearn_version": sklearn.__version__,
        "feature_names": _feature_names(estimator, feature_names),
        "classes": None,
        "classes_dtype": None,
        "width": 1,
        "precision": "f32",
        "metadata": metadata,
        "created": "",
    }
    if name in _FOREST_CLS or name in _FOREST_REG:
        trees = _forest(estimator, header, classifier=name in _FOREST_CLS)
    elif name.startswith("GradientBoosting"):
        trees = _gradient_boosting(estimator, header)
    elif name.startswith("HistGradientBoosting"):
        trees = _hist_gradient_boosting(estimator, header)
    else:
        trees = _isolation_forest(estimator, header)
    try:
        header_json = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata and class labels must be JSON-serialisable: {e}") from None
    return header_json, trees


def _forest(est: Any, header: dict[str, Any], classifier: bool) -> list[dict[str, Any]]:
    header["aggregation"] = {"type": "mean"}
    trees = []
    if classifier:
        header["classes"], header["classes_dtype"] = _classes(est)
        n_classes = len(header["classes"])
        header["width"] = n_classes
        for e in est.estimators_:
            # exactly DecisionTreeClassifier.predict_proba's normalisation, per node
            v = e.tree_.value[:, 0, :n_classes]
            normalizer = v.sum(axis=1)[:, np.newaxis]
            normalizer[normalizer == 0.0] = 1.0
            trees.append(_tree_arrays(e.tree_, v / normalizer, 0))
    else:
        for e in est.estimators_:
            trees.append(_tree_arrays(e.tree_, e.tree_.value[:, 0, 0], 0))
    return trees


def _gradient_boosting(est: Any, header: dict[str, Any]) -> list[dict[str, Any]]:
    init = est.init_
    constant = type(init) is DummyRegressor or (
        type(init) is DummyClassifier and init.strategy in ("prior", "most_frequent", "constant", "uniform")
    )
    if not (isinstance(init, str) and init == "zero") and not constant:
        raise ValueError(
            f"{type(est).__name__}: a custom init estimator ({type(init).__name__}) is not supported"
        )
    classifier = hasattr(est, "classes_")
    if classifier and est.loss != "log_loss":
        raise ValueError(f"{type(est).__name__}: loss={est.loss!r} is not supported (only 'log_loss')")
    n_features = int(est.n_features_in_)
    # the init raw prediction is constant: take it from sklearn itself
    raw_init = est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))[0]
    k = int(est.estimators_.shape[1])
    if classifier:
        header["classes"], header["classes_dtype"] = _classes(est)
        link = "logistic" if k == 1 else "softmax"
    else:
        link = "identity"
    header["aggregation"] = {
        "type": "boosting",
        "init": [float(v) for v in raw_init],
        "scale": float(est.learning_rate),
        "link": link,
        "zero_is_positive": True,
    }
    return [
        _tree_arrays(est.estimators_[i, j].tree_, est.estimators_[i, j].tree_.value[:, 0, 0], j)
        for i in range(est.estimators_.shape[0])
        for j in range(k)
    ]


def _hist_gradient_boosting(est: Any, header: dict[str, Any]) -> list[dict[str, Any]]:
    name = type(est).__name__
    is_cat = getattr(est, "is_categorical_", None)
    if (is_cat is not None and np.any(is_cat)) or getattr(est, "_preprocessor", None) is not None:
        raise ValueError(
            f"{name}: models with categorical features are not supported (numeric features only)"
        )
    classifier = hasattr(est, "classes_")
    k = int(est.n_trees_per_iteration_)
    if classifier:
        header["classes"], header["classes_dtype"] = _classes(est)
        link = "logistic" if k == 1 else "softmax"
    else:
        link_name = type(est._loss.link).__name__
        links = {"IdentityLink": "identity", "LogLink": "exp"}
        if link_name not in links:
            raise ValueError(f"{name}: loss={est.loss!r} ({link_name}) is not supported")
        link = links[link_name]
    header["precision"] = "f64"  # HGB compares raw float64 values with its thresholds
    header["aggregation"] = {
        "type": "boosting",
        "init": [float(v) for v in np.asarray(est._baseline_prediction, dtype=np.float64).ravel()],
        "scale": 1.0,
        "link": link,
        "zero_is_positive": False,
    }
    trees = []
    for predictors in est._predictors:
        for j, p in enumerate(predictors):
            nodes = p.nodes
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(
                {
                    "children_left": np.where(leaf, -1, nodes["left"].astype(np.int64)),
                    "children_right": np.where(leaf, -1, nodes["right"].astype(np.int64)),
                    "feature": np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)),
                    "threshold": np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
                    "missing_left": nodes["missing_go_to_left"].astype(np.uint8),
                    "value": np.ascontiguousarray(nodes["value"], dtype=np.float64),
                    "count": nodes["count"].astype(np.float64),
                    # only leaf values are meaningful: internal = count-weighted mean of children
                    "fill_internal": True,
                    "output": j,
                }
            )
    return trees


def _isolation_forest(est: Any, header: dict[str, Any]) -> list[dict[str, Any]]:
    n_features = int(est.n_features_in_)
    # sklearn only re-indexes columns when the trees were fitted on a feature subset
    subsample = est._max_features != n_features
    header["aggregation"] = {
        "type": "isolation",
        "average_path_length_max_samples": float(_average_path_length([est._max_samples])[0]),
        "offset": float(est.offset_),
    }
    trees = []
    for t, (tree, features) in enumerate(zip(est.estimators_, est.estimators_features_, strict=True)):
        # the exact per-node quantity sklearn sums: depth + c(n_node_samples) - 1
        value = est._decision_path_lengths[t] + est._average_path_length_per_tree[t] - 1.0
        arr = _tree_arrays(tree.tree_, value, 0, np.asarray(features, dtype=np.int64) if subsample else None)
        arr["fill_internal"] = True
        trees.append(arr)
    return trees
