#!/usr/bin/env bash
# Sets up what the suite needs (system packages, PostgreSQL, RabbitMQ, Chromium), runs pytest,
# and stops the services again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DIR=${SERVICES_DIR:-$(mktemp -d /tmp/tidings-services.XXXXXX)}

if [ -x scripts/services.sh ]; then
  bash scripts/services.sh install
  bash scripts/services.sh start "$DIR"
  trap 'bash scripts/services.sh stop "$DIR" || true' EXIT
  set -a; . "$DIR/env"; set +a
fi
if [ -x scripts/install-chromium.sh ]; then
  bash scripts/install-chromium.sh
fi

set +e
"$BIN/pytest" -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "no tests ran" >&2
  exit 1
fi
exit "$status"
