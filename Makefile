# infrawatch — the front door. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## install Debian packages, the venv, Python deps and the release build
	@bash scripts/setup.sh

.PHONY: run
run: setup ## the main job: the local stack (InfluxDB, Mosquitto, workers, simulated facility); Ctrl-C stops it
	$(PY) -m infrawatch.cli stack $(ARGS)

.PHONY: lint
lint: setup ## cargo fmt/clippy, ruff, mypy and the stub check
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -q -- -D warnings
	$(VENV)/bin/ruff check pysrc ingest tests benches
	$(VENV)/bin/ruff format --check pysrc ingest tests benches
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest infrawatch._core --allowlist .mypy-stubtest-allowlist

.PHONY: test
test: setup lint ## everything CI runs: lints, cargo test, pytest (real servers, release build)
	cargo test --workspace -q --exclude infrawatch-py
	$(PY) -m pytest tests -q

.PHONY: bench
bench: setup ## pytest-benchmark suites (release build)
	$(PY) -m pytest benches --benchmark-only --benchmark-group-by=group

.PHONY: fuzz
fuzz: ## run the decoder fuzz target for FUZZ_SECONDS (default 600)
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd core_rs/fuzz && mkdir -p corpus/decode && RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . decode corpus/decode seeds -- \
		-dict=decode.dict -max_total_time=$${FUZZ_SECONDS:-600}

.PHONY: clean
clean: ## remove build outputs (keeps the venv)
	cargo clean
	rm -f pysrc/infrawatch/_core*.so
