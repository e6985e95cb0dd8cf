#!/usr/bin/env bash
# Install what the tests need on a fresh machine, then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests start for real: Redis, bubblewrap (sandbox), PostgreSQL, Chromium (demo page test).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the demo page test drives a headless browser
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]} -- install them (e.g. sudo apt-get install ${missing[*]}) and rerun" >&2
    exit 2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >.venv/pip-install.log 2>&1; then
  grep -v '^WARNING: Location' .venv/pip-install.log >&2
  echo "installing the Python dependencies failed (log above)" >&2
  exit 2
fi
exec .venv/bin/python -m pytest "$@"
