"""The typed public face of the Rust core (`infrawatch._core`). See DESIGN.md §2."""

from infrawatch._core import (
    REASON_CODES,
    FeatureStore,
    Pipeline,
    ProcessResult,
    ReadingBatch,
    TokenBucket,
    TreeEnsemble,
    __version__,
    decode,
    kind_fields,
)

__all__ = [
    "REASON_CODES",
    "FeatureStore",
    "Pipeline",
    "ProcessResult",
    "ReadingBatch",
    "TokenBucket",
    "TreeEnsemble",
    "__version__",
    "decode",
    "kind_fields",
]
