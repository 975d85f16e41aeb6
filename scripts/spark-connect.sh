#!/usr/bin/env bash
# A Spark Connect server on 127.0.0.1 from the pyspark package's own jars (Spark 4 stack: pyspark 3.5's pip
# package ships no Connect server), for `harness run --remote sc://127.0.0.1:PORT`.
#   scripts/spark-connect.sh start | stop | status
# PYTHON (default .venv-spark4/bin/python) names the stack, and is the server's Python for UDFs;
# SPARK_CONNECT_PORT (default 15002); SPARK_CONNECT_CORES (default: all, local[N]); SPARK_CONNECT_MEMORY (4g);
# logs, pid file and scratch folders go to ${SPARK_CONNECT_DIR:-/tmp/harness-spark-connect}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-.venv-spark4/bin/python}
port=${SPARK_CONNECT_PORT:-15002}
dir=${SPARK_CONNECT_DIR:-/tmp/harness-spark-connect}
cores=${SPARK_CONNECT_CORES:-$(nproc)}
mem=${SPARK_CONNECT_MEMORY:-4g}
pidfile=$dir/server.pid
log=$dir/server.log

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

descendants() {  # every process below $1
  local child
  for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done
}

listening() {  # whether something accepts connections on 127.0.0.1:$port
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

case "${1:-}" in
  start)
    if [ ! -x "$py" ]; then
      echo "error: $py not found: Spark Connect needs the Spark 4 stack (make setup STACK=spark4), or set PYTHON to its python" >&2
      exit 2
    fi
    spark_home=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    jar=$(ls "$spark_home"/jars/spark-connect_*.jar 2>/dev/null | head -n1 || true)
    if [ -z "$jar" ]; then
      version=$("$py" -c 'import pyspark; print(pyspark.__version__)')
      echo "error: pyspark $version ($py) ships no Spark Connect server jar: Connect needs the Spark 4 stack (make setup STACK=spark4; PYTHON=.venv-spark4/bin/python)" >&2
      exit 2
    fi
    if running; then echo "already running: sc://127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"; exit 0; fi
    if listening; then echo "error: 127.0.0.1:$port is taken by another process; set SPARK_CONNECT_PORT" >&2; exit 2; fi
    bash scripts/check-java.sh
    mkdir -p "$dir/work"
    python_abs=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")
    # the server runs the cases' Python UDFs: with this stack's Python, importing this checkout's harness
    export SPARK_HOME=$spark_home SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$python_abs \
      PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
    # its own session: `stop` ends the JVM and every Python worker it started (the process group)
    (cd "$dir/work" && exec setsid "$spark_home/bin/spark-submit" \
      --class org.apache.spark.sql.connect.service.SparkConnectServer --name "harness Spark Connect server" \
      --master "local[$cores]" --driver-memory "$mem" \
      --conf spark.connect.grpc.binding.address=127.0.0.1 --conf "spark.connect.grpc.binding.port=$port" \
      --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
      --conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false \
      --conf "spark.sql.shuffle.partitions=$((2 * cores))" \
      --conf "spark.sql.warehouse.dir=$dir/work/warehouse" \
      >"$log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    for _ in $(seq 1 180); do
      if listening; then echo "sc://127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"; exit 0; fi
      if ! running; then echo "error: the Spark Connect server exited; the end of $log:" >&2; tail -20 "$log" >&2; rm -f "$pidfile"; exit 1; fi
      sleep 1
    done
    echo "error: the Spark Connect server did not accept connections on 127.0.0.1:$port within 180 s; see $log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      # the JVM's group, and its Python daemons, which take sessions of their own
      pids="$pid $(descendants "$pid")"
      kill -TERM -- "-$pid" 2>/dev/null || true
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 $pids 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      kill -KILL $pids 2>/dev/null || true
      rm -f "$pidfile"
    fi
    echo "stopped"
    ;;
  status)
    if running; then echo "running: sc://127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"; else echo "not running"; exit 3; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
