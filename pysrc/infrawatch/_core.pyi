"""Type stubs for the compiled extension `infrawatch._core` (checked by mypy.stubtest)."""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__version__: str
__build_profile__: str

# ---------------------------------------------------------------- decode (section owned by decode)

REASON_CODES: tuple[str, ...]
"""Every reason code `decode` can report (docs/reason-codes.md)."""

@final
class ReadingBatch:
    """Decoded readings in columns; immutable, attributes built on first access and cached."""

    def __len__(self) -> int: ...
    @property
    def messages(self) -> int:
        """Number of input messages."""
    @property
    def sensor_id(self) -> list[str]: ...
    @property
    def kind(self) -> list[str]: ...
    @property
    def site(self) -> list[str]: ...
    @property
    def zone(self) -> list[str]: ...
    @property
    def timestamp_ns(self) -> npt.NDArray[np.int64]: ...
    @property
    def fields(self) -> dict[str, npt.NDArray[np.float64]]:
        """Canonical columns first (fixed order), then unknown fields; NaN where missing."""
    @property
    def source(self) -> npt.NDArray[np.int32]:
        """Index of the input message each reading came from."""
    @property
    def errors(self) -> list[tuple[int, str, str]]:
        """`(input index, reason code, message)` per rejected message or gateway element."""

def decode(
    payloads: Sequence[bytes | bytearray | memoryview],
    topics: Sequence[str] | None = None,
    received_ns: int | None = None,
) -> ReadingBatch: ...

# ---------------------------------------------------------------- end decode

# ---------------------------------------------------------------- limiter (section owned by limiter)

@final
class TokenBucket:
    """Per-key token bucket: refills at `rate_per_s`, holds up to `burst`; a new key starts full."""

    def __new__(
        cls, rate_per_s: float = 1.0, burst: float = 1.0, max_keys: int | None = None
    ) -> TokenBucket: ...
    def allow(self, key: str, now_ns: int | None = None) -> bool: ...
    def allow_many(self, keys: Sequence[str], now_ns: int | None = None) -> npt.NDArray[np.bool_]: ...
    def retry_after_s(self, key: str, now_ns: int | None = None) -> float: ...
    def set_rate(self, key: str, rate_per_s: float, burst: float) -> None: ...
    def clear_rate(self, key: str) -> bool: ...
    def rate_of(self, key: str) -> tuple[float, float] | None: ...
    @property
    def rate_per_s(self) -> float: ...
    @property
    def burst(self) -> float: ...
    @property
    def max_keys(self) -> int | None: ...
    @property
    def evictions(self) -> int: ...
    def __len__(self) -> int: ...

# ---------------------------------------------------------------- end limiter

# ---------------------------------------------------------------- features (section owned by features)

@final
class FeatureStore:
    """Per-sensor rolling-window features over the last `window` folded readings of each sensor.

    Per field `f` of `fields`: `f_last, f_mean, f_std, f_min, f_max, f_delta, f_slope, f_ewma,
    f_zscore, f_hod_dev`; then `count, dt_s, hour, dow, weekend, night, pressure_flow_ratio`.
    `f_hod_dev` is the value minus the sensor's own usual level at this time of day: per field, an
    EWMA (alpha 0.25) per UTC quarter-hour, separately for weekdays and weekends, read before the
    reading updates it (NaN until that slot has seen a value). Missing values are NaN, never zero.
    A reading not newer than its sensor's newest folded reading is not folded: its row is all NaN
    and `stale_count` grows. Non-finite values count as missing.
    """

    def __new__(cls, window: int = 60, fields: Sequence[str] | None = None) -> FeatureStore:
        """`window` ≥ 2; `fields` are canonical names (default: every kind's model fields)."""
    def update(self, batch: ReadingBatch) -> npt.NDArray[np.float64]:
        """Fold a decoded batch in order; shape `(len(batch), len(feature_names))`."""
    def update_arrays(
        self,
        sensor_id: Sequence[str],
        timestamp_ns: npt.ArrayLike,
        fields: Mapping[str, npt.ArrayLike],
    ) -> npt.NDArray[np.float64]:
        """The same as `update()` for data you already hold in columns (other keys are ignored)."""
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def window(self) -> int: ...
    @property
    def fields(self) -> list[str]: ...
    @property
    def stale_count(self) -> int: ...
    def __len__(self) -> int: ...
    def snapshot(self) -> bytes: ...
    @staticmethod
    def restore(data: bytes) -> FeatureStore: ...
    def __reduce__(self) -> tuple[Any, tuple[bytes]]: ...

# ---------------------------------------------------------------- end features

# ---------------------------------------------------------------- trees (section owned by trees)

@final
class TreeEnsemble:
    """A scikit-learn tree ensemble scored in Rust with exact scikit-learn parity.

    Supported: RandomForest/ExtraTrees Classifier+Regressor, GradientBoosting Classifier (log_loss)
    + Regressor, HistGradientBoosting Classifier + Regressor (numeric features), IsolationForest.
    NaN follows each split's `missing_go_to_left` (also for GradientBoosting, which sklearn
    rejects NaN for). X: 2-D array-like of numbers (n, n_features).
    """

    @classmethod
    def from_sklearn(
        cls, estimator: Any, feature_names: Sequence[str] | None = None, metadata: Any = None
    ) -> TreeEnsemble: ...
    def predict_proba(self, x: Any) -> npt.NDArray[np.float64]:
        """(n, n_classes) class probabilities (classifiers)."""
    def predict(self, x: Any) -> npt.NDArray[Any]:
        """Class labels (dtype of `classes_`), regression values, or ±1 for IsolationForest."""
    def score_samples(self, x: Any) -> npt.NDArray[np.float64]:
        """IsolationForest score (lower = more abnormal), shape (n,)."""
    def decision_function(self, x: Any) -> npt.NDArray[np.float64]:
        """IsolationForest: score_samples − offset_; boosting classifiers: raw scores."""
    def contributions(self, x: Any) -> npt.NDArray[np.float64]:
        """Saabas contributions (n, n_features + 1[, n_classes]); the bias is the last column."""
    def save(self, path: str | PathLike[str]) -> None: ...
    @classmethod
    def load(cls, path: str | PathLike[str]) -> TreeEnsemble: ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: bytes) -> TreeEnsemble: ...
    @property
    def n_features(self) -> int: ...
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def classes(self) -> list[Any] | None: ...
    @property
    def estimator(self) -> str: ...
    @property
    def sklearn_version(self) -> str: ...
    @property
    def n_trees(self) -> int: ...
    @property
    def created(self) -> str: ...
    @property
    def metadata(self) -> Any: ...
    @metadata.setter
    def metadata(self, value: Any) -> None: ...

# ---------------------------------------------------------------- end trees

# ---------------------------------------------------------------- pipeline (section owned by pipeline)

@final
class ProcessResult:
    """The outputs of one `Pipeline.process` call."""

    @property
    def line_protocol(self) -> bytes: ...
    @property
    def errors(self) -> list[tuple[int, str, str]]: ...
    @property
    def rate_limited(self) -> list[int]: ...
    @property
    def rate_limited_sensors(self) -> list[str]: ...
    @property
    def alerts(self) -> list[dict[str, Any]]: ...
    @property
    def count(self) -> int: ...
    @property
    def stale(self) -> int: ...
    @property
    def risk(self) -> npt.NDArray[np.int8]:
        """Per written reading, in line-protocol order: risk 0–3, or −1 without a verdict."""
    @property
    def source(self) -> npt.NDArray[np.int32]:
        """Per written reading: the index of the input message it came from."""

@final
class Pipeline:
    """decode → token bucket → rolling features → tree ensembles → risk → line protocol, per batch.

    `models["water_flow"]` may carry `"persistence": {"k": k, "n": n}`: a verdict the zone table
    puts at HIGH or above pages only when k of its sensor's last n verdicts reached HIGH; otherwise
    it is reported as MEDIUM (per-sensor history kept in snapshots; default off).

    `limit_clock`: the token bucket runs on the batch's time of receipt (`"arrival"`, HTTP ingest)
    or on each reading's own timestamp capped at receipt (`"event"`, the MQTT workers: a backlog
    delivered at once after an outage passes; a runaway sensor does not). Either way a reading
    not newer than its sensor's newest (a duplicate, late data) takes no token: it is stored
    without a verdict.
    """

    def __new__(
        cls,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        window: int = 60,
        limiter: TokenBucket | None = None,
        zone_policy: Mapping[str, Mapping[str, float]] | None = None,
        *,
        quality_limits: Mapping[str, tuple[float | None, float | None]] | None = None,
        limit_clock: Literal["arrival", "event"] = "arrival",
    ) -> Pipeline: ...
    def process(
        self, payloads: Sequence[bytes], topics: Sequence[str] | None = None, received_ns: int | None = None
    ) -> ProcessResult: ...
    def set_models(self, models: Mapping[str, Mapping[str, Any]]) -> None: ...
    @property
    def models(self) -> Mapping[str, Mapping[str, Any]] | None: ...
    @property
    def limiter(self) -> TokenBucket | None: ...
    @property
    def window(self) -> int: ...
    def feature_names(self, kind: str) -> list[str]: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...
    def __len__(self) -> int: ...

def kind_fields(kind: str) -> list[str]: ...

# ---------------------------------------------------------------- end pipeline
