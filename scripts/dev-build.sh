#!/usr/bin/env bash
# Fast inner loop: build the extension with cargo and drop it into pysrc/ (no install).
# Use with: PYTHONPATH=pysrc .venv/bin/python -m pytest ...   (PROFILE=release for benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dev}
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
PYO3_PYTHON=${PYO3_PYTHON:-$(command -v python3)} cargo build -q -p infrawatch-py --profile "$PROFILE"
rm -f pysrc/infrawatch/_core*.so
cp "target/$dir/lib_core.so" pysrc/infrawatch/_core.abi3.so
