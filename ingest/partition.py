"""Which worker owns a message: a stable hash of its sensor (or gateway) id, modulo the worker count.

Every worker subscribes to the whole topic space through its own session, so each sees every
message; a worker processes those of its partition and acknowledges the rest unprocessed (their
owner gets its own copy). A sensor therefore always reaches the same worker, which keeps its rolling
state (DESIGN.md §8). The hash is CRC-32, stable across processes and machines — never Python's
salted `hash()`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


class PartitionError(ValueError):
    """An unusable `partition` setting; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Partition:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`"i/N"` with 0 <= i < N (INFRAWATCH_WORKER__PARTITION)."""
        try:
            i_text, n_text = text.split("/")
            index, count = int(i_text), int(n_text)
        except ValueError:
            index, count = -1, 0
        if count < 1 or not 0 <= index < count:
            raise PartitionError(
                f"INFRAWATCH_WORKER__PARTITION={text!r}: expected 'i/N' with 0 <= i < N, e.g. '0/1' or '1/3'"
            )
        return cls(index, count)

    @property
    def everything(self) -> bool:
        return self.count == 1

    def owns_key(self, key: str) -> bool:
        return zlib.crc32(key.encode()) % self.count == self.index

    def owns_topic(self, topic: str) -> bool:
        """True when this worker processes a message on `topic`.

        `infrawatch/{site}/{kind}/{sensor_id}/telemetry` and `infrawatch/{site}/gateway/{gateway_id}/batch`
        both carry the owning id at level 4; a topic of another shape is owned by partition 0, so it
        is still processed (and dead-lettered by the decoder) exactly once.
        """
        if self.count == 1:
            return True
        parts = topic.split("/")
        if len(parts) != 5:
            return self.index == 0
        return self.owns_key(parts[3])
