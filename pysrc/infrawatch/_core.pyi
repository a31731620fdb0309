"""Type stubs for the compiled extension `infrawatch._core` (checked by mypy.stubtest)."""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str
__build_profile__: str

# ---------------------------------------------------------------- decode (section owned by decode)

class ReadingBatch: ...

def decode(
    payloads: Sequence[bytes], topics: Sequence[str] | None = None, received_ns: int | None = None
) -> ReadingBatch: ...

# ---------------------------------------------------------------- end decode


# ---------------------------------------------------------------- limiter (section owned by limiter)

class TokenBucket: ...

# ---------------------------------------------------------------- end limiter


# ---------------------------------------------------------------- features (section owned by features)

class FeatureStore:
    """Per-sensor rolling-window features over the last `window` folded readings of each sensor.

    Per field `f` of `fields`: `f_last, f_mean, f_std, f_min, f_max, f_delta, f_slope, f_ewma,
    f_zscore`; then `count, dt_s, hour, dow, weekend, night, pressure_flow_ratio`. Missing values
    are NaN, never zero. A reading not newer than its sensor's newest folded reading is not folded:
    its row is all NaN and `stale_count` grows. Non-finite values count as missing.
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

class TreeEnsemble: ...

# ---------------------------------------------------------------- end trees


# ---------------------------------------------------------------- pipeline (section owned by pipeline)

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

class Pipeline:
    """decode → token bucket → rolling features → tree ensembles → risk → line protocol, per batch."""

    def __init__(
        self,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        window: int = 60,
        limiter: TokenBucket | None = None,
        zone_policy: Mapping[str, Mapping[str, float]] | None = None,
        *,
        quality_limits: Mapping[str, tuple[float | None, float | None]] | None = None,
    ) -> None: ...
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
