"""Dump the pipeline benchmark's workload for `pipeline_bench` (callgrind / perf target).

    PYTHONPATH=pysrc:. .venv/bin/python core_rs/core/examples/pipeline_workload.py OUT_DIR

writes OUT_DIR/leak.iwm, OUT_DIR/burst.iwm and OUT_DIR/batches.bin: per batch a u32 count, then
per message a u32 length + payload bytes and a u32 length + topic bytes (little-endian).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from benches.test_bench_pipeline import make_workload

from infrawatch import core


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    w = make_workload()
    for role in ("leak", "burst"):
        core.TreeEnsemble.from_sklearn(w[role], feature_names=w["names"]).save(out / f"{role}.iwm")
    with (out / "batches.bin").open("wb") as f:
        for payloads, topics in w["batches"]:
            f.write(struct.pack("<I", len(payloads)))
            for p, t in zip(payloads, topics, strict=True):
                tb = t.encode()
                f.write(struct.pack("<I", len(p)) + p + struct.pack("<I", len(tb)) + tb)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
