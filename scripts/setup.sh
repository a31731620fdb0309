#!/usr/bin/env bash
# One-time (idempotent) setup of a fresh machine: Debian packages, the venv, Python deps and the
# release build of the Rust extension. `make run` and `make test` call it; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(influxdb influxdb-client mosquitto mosquitto-clients poppler-utils)
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "[setup] missing Debian packages: ${missing[*]} — run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packaged services are started per run directory by infrawatch, never by the system.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for svc in influxdb mosquitto; do
    (systemctl disable --now "$svc" || service "$svc" stop || true) >/dev/null 2>&1
  done
fi

if ! command -v cargo >/dev/null; then
  echo "[setup] cargo not found: install the Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.deps-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Python dependencies"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "maturin>=1.8,<2"
  # deps only; the package itself is built by maturin below
  "$VENV/bin/python" - <<'PYEOF' > "$VENV/.requirements.txt"
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(p["dependencies"])
for extra in p.get("optional-dependencies", {}).values():
    deps += extra
print("\n".join(deps))
PYEOF
  "$VENV/bin/pip" install -q -r "$VENV/.requirements.txt"
  touch "$stamp"
fi

log "building the Rust extension (release: LTO fat, 1 codegen unit)"
VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/maturin" develop --release --skip-install -q 2>&1 | grep -v "^📦\|^🔗\|^🐍\|^✏️\|^🛠" || true
"$VENV/bin/python" -c "import infrawatch._core" 2>/dev/null || {
  # --skip-install keeps pip from re-resolving deps; make sure the package is importable
  VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/maturin" develop --release -q
}
log "ready: $("$VENV/bin/python" -c 'import infrawatch._core as c; print("infrawatch._core", c.__version__, c.__file__)')"
