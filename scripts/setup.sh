#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, each part once: the Debian packages, the
# virtual environment, the Triton server files and the project's packages. One line per stage
# says what it installs and how long it took; the tools' own output goes to build/setup.log,
# whose last lines are shown when a stage fails. Run again, it says in one line that all is
# there. Settings: PYTHON (the interpreter of the environment), VENV (its folder).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# Prometheus (and promtool) for the sandbox, numpy for the system Python that runs Triton's
# Python-backend models, tmux, the terminal the tests watch the live views in, and chromium,
# the headless browser the decision report's test renders the page in.
SYSTEM_PACKAGES=(prometheus python3-numpy tmux chromium)
LOG=build/setup.log
STAMP=$VENV/.installed
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)

started=$EPOCHREALTIME
log_started=false

elapsed() {  # seconds since $1 (an $EPOCHREALTIME), as "0.4 s" or "38 s"
  awk -v since="$1" -v now="$EPOCHREALTIME" \
    'BEGIN { d = now - since; if (d < 10) printf "%.1f s", d; else printf "%d s", d + 0.5 }'
}

fail() {
  echo "setup: $*" >&2
  exit 1
}

# stage DESCRIPTION COMMAND...: runs the command with its output in the log, then says how long
# it took; on failure, shows the log's last lines and where the log is.
stage() {
  local what=$1 since=$EPOCHREALTIME code
  shift
  if ! $log_started; then  # the log holds this run's output only
    mkdir -p "$(dirname "$LOG")"
    : >"$LOG"
    log_started=true
  fi
  printf '\n=== %s\n$ %s\n' "$what" "$*" >>"$LOG"
  printf 'setup: %s ... ' "$what"
  if "$@" >>"$LOG" 2>&1 </dev/null; then
    echo "done ($(elapsed "$since"))"
  else
    code=$?
    echo "failed after $(elapsed "$since") (exit status $code)"
    echo "setup: the last lines of $LOG:" >&2
    tail -n 25 "$LOG" | sed 's/^/  /' >&2
    fail "the whole log: $PWD/$LOG"
  fi
}

# (A stage's command runs as an `if` condition, where `set -e` does not apply: hence &&.)
apt_install() {
  apt-get update &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

make_venv() {
  "$PYTHON" -m venv "$VENV" &&
    "${PIP[@]}" install --progress-bar off --upgrade pip
}

requirement() {  # the lab's requirement on a distribution, from operator/pyproject.toml
  "$VENV/bin/python" - "$1" <<'EOF'
import sys, tomllib
with open("operator/pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
print(next(d for d in deps if d.split(">")[0].split("=")[0].strip() == sys.argv[1]))
EOF
}

sources_hash() {  # what the installed packages were installed from
  cat pyproject.toml operator/pyproject.toml | sha256sum | cut -d' ' -f1
}

# 1. Debian packages.
command -v dpkg-query >/dev/null ||
  fail "this needs Debian or Ubuntu (no dpkg-query): install ${SYSTEM_PACKAGES[*]} yourself"
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  [ "$(id -u)" -eq 0 ] ||
    fail "missing Debian packages; run: sudo apt-get install -y ${missing[*]}, then this again"
  stage "Debian packages ${missing[*]} (apt-get)" apt_install "${missing[@]}"
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  version=$("$PYTHON" -c 'import platform; print(platform.python_version())' 2>/dev/null) ||
    fail "$PYTHON does not run: set PYTHON to a Python 3.11 interpreter"
  stage "virtual environment $VENV (Python $version), with the newest pip" make_venv
fi

# 3. The Triton server files: the largest download, a stage of its own.
if ! compgen -G "$VENV/lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver" \
  >/dev/null; then
  pytriton=$(requirement nvidia-pytriton)
  stage "Triton server files ($pytriton, about 150 MB)" \
    "${PIP[@]}" install --progress-bar off "$pytriton"
fi

# 4. The operator, its lab and the development tools, editable; again when their metadata
# changes.
if [ "$(cat "$STAMP" 2>/dev/null)" != "$(sources_hash)" ]; then
  stage "gelu-rollout, its lab and the development tools (pip install -e)" \
    "${PIP[@]}" install --progress-bar off -e '.[dev]' -e ./operator
  sources_hash >"$STAMP"
fi

# 5. The sandbox's S3 server (moto), in an environment of its own: its AWS libraries pin an
# older python-dateutil than the Kubernetes client accepts.
S3_VENV=build/s3-venv
if [ ! -x "$S3_VENV/bin/moto_server" ]; then
  moto="moto[server]>=5.0"
  stage "S3 server for the sandbox ($moto, in $S3_VENV)" \
    bash -c "'$PYTHON' -m venv '$S3_VENV' && '$S3_VENV/bin/python' -m pip install \
      --disable-pip-version-check --no-input --progress-bar off '$moto'"
fi

# 6. The Prometheus Operator's models, with which the chart's tests validate its monitoring
# objects (npm, pinned by tests/chart/monitoring-schemas/package-lock.json).
SCHEMAS=build/monitoring-schemas
SCHEMAS_SOURCE=tests/chart/monitoring-schemas
if ! cmp -s "$SCHEMAS_SOURCE/package-lock.json" "$SCHEMAS/package-lock.json" ||
  [ ! -d "$SCHEMAS/node_modules/@kubernetes-models/prometheus-operator" ]; then
  if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] ||
      fail "npm is missing; run: sudo apt-get install -y nodejs npm, then this again"
    stage "Debian packages nodejs npm (apt-get)" apt_install nodejs npm
  fi
  stage "the Prometheus Operator's models for the chart's tests (npm ci, in $SCHEMAS)" \
    bash -c "mkdir -p '$SCHEMAS' && cp '$SCHEMAS_SOURCE'/package*.json '$SCHEMAS/' &&
      cd '$SCHEMAS' && npm ci --no-audit --no-fund --loglevel=error"
fi

if $log_started; then
  echo "setup: done in $(elapsed "$started"); the tools' output is in $LOG"
else
  echo "setup: all installed (${SYSTEM_PACKAGES[*]}; $VENV with Triton, gelu-rollout and its lab; $S3_VENV; $SCHEMAS)"
fi
