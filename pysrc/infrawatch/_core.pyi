"""Type stubs for the compiled extension `infrawatch._core` (checked by mypy.stubtest)."""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

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

class FeatureStore: ...

# ---------------------------------------------------------------- end features


# ---------------------------------------------------------------- trees (section owned by trees)

class TreeEnsemble: ...

# ---------------------------------------------------------------- end trees


# ---------------------------------------------------------------- pipeline (section owned by pipeline)

class ProcessResult: ...
class Pipeline: ...

# ---------------------------------------------------------------- end pipeline
