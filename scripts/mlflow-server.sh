#!/usr/bin/env bash
# A real MLflow tracking server on 127.0.0.1 (never another interface), SQLite-backed, serving artifacts.
#   scripts/mlflow-server.sh start [PORT]   (default 5000; store in ${MLFLOW_SERVER_DIR:-results/mlflow-server})
#   scripts/mlflow-server.sh stop
# Then: harness run quick --tracking-uri http://127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
dir=${MLFLOW_SERVER_DIR:-results/mlflow-server}
port=${2:-5000}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case "${1:-}" in
  start)
    if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
      echo "already running: $(cat "$dir/uri")"; exit 0
    fi
    setsid "$venv/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
      --backend-store-uri "sqlite:///$dir/mlflow.db" --artifacts-destination "$dir/artifacts" \
      >"$dir/server.log" 2>&1 &
    echo $! >"$dir/server.pid"
    echo "http://127.0.0.1:$port" >"$dir/uri"
    for _ in $(seq 1 90); do
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then echo "http://127.0.0.1:$port"; exit 0; fi
      kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break
      sleep 1
    done
    echo "error: MLflow server did not come up on 127.0.0.1:$port; log: $dir/server.log" >&2
    tail -20 "$dir/server.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/server.pid" ]; then
      pid=$(cat "$dir/server.pid")
      kill -- -"$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      rm -f "$dir/server.pid"
    fi
    echo "stopped"
    ;;
  *) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
