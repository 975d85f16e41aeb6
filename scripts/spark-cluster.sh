#!/usr/bin/env bash
# A real Spark standalone cluster on 127.0.0.1 from the pyspark package's own classes:
# one master (spark://127.0.0.1:${SPARK_MASTER_PORT:-7077}) and two workers of ${WORKER_CORES:-1} core(s) each.
#   scripts/spark-cluster.sh start | stop | status
# Logs and pid files go to ${SPARK_CLUSTER_DIR:-/tmp/harness-spark-cluster}.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
dir=${SPARK_CLUSTER_DIR:-/tmp/harness-spark-cluster}
port=${SPARK_MASTER_PORT:-7077}
wcores=${WORKER_CORES:-1}
wmem=${WORKER_MEMORY:-2g}
nworkers=${WORKERS:-2}
spark_home=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME=$spark_home SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1 \
  PYSPARK_PYTHON=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")
# workers launch executors through Spark's launcher, which needs the Scala version when there is no build dir
scala=$(ls "$spark_home/jars" | sed -n 's/^spark-core_\([0-9.]*\)-.*\.jar$/\1/p' | head -n1)
export SPARK_SCALA_VERSION=${scala:-2.12}
mkdir -p "$dir"

start_daemon() {  # name, class, args...
  local name=$1; shift
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then return; fi
  nohup java -cp "$spark_home/jars/*" -Xmx1g "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

wait_for() {  # pattern, file
  for _ in $(seq 1 60); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 1; done
  echo "error: timed out waiting for '$1' in $2" >&2; tail -20 "$2" >&2; return 1
}

case "${1:-}" in
  start)
    bash scripts/check-java.sh
    start_daemon master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port 0
    wait_for "I have been elected leader" "$dir/master.log"
    for i in $(seq 1 "$nworkers"); do
      start_daemon "worker$i" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --webui-port 0 \
        --cores "$wcores" --memory "$wmem" --work-dir "$dir/work$i" "spark://127.0.0.1:$port"
    done
    for i in $(seq 1 "$nworkers"); do wait_for "Successfully registered with master" "$dir/worker$i.log"; done
    echo "spark://127.0.0.1:$port ($nworkers workers x $wcores core(s), logs in $dir)"
    ;;
  stop)
    for f in "$dir"/*.pid; do
      [ -f "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    echo "stopped"
    ;;
  status)
    for f in "$dir"/*.pid; do [ -f "$f" ] && { kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f" .pid) running" || echo "$(basename "$f" .pid) dead"; }; done
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
