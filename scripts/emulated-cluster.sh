#!/usr/bin/env bash
# An emulated multi-node Spark cluster on this machine: N worker hosts, a master and a driver, each a network
# namespace joined by a veth pair to one bridge whose links are rate-limited with tc (tbf, both directions).
#   scripts/emulated-cluster.sh up N --rate RATE    (RATE: e.g. 10gbit, 1gbit, 100mbit; root only)
#   scripts/emulated-cluster.sh rate RATE           re-shapes every link of the running cluster
#   scripts/emulated-cluster.sh status | down
# Addresses come from one private /24 (${HCL_SUBNET:-10.213.7}.0/24) that exists only inside these namespaces:
# the bridge lives in a namespace of its own (PREFIX-hub), so the machine's own interfaces, routes and firewall
# are never touched, nothing is forwarded or NATed, and nothing in the cluster is reachable from outside.
# Master .2 (spark://SUBNET.2:7077), driver .3, worker i .(10+i); every namespace's link is called hcl0, its
# bridge-side end in the hub v-master, v-driver, v-w1...
# State (the rate, pids, logs) in ${HCL_DIR:-/tmp/harness-emulated-cluster}; names start ${HCL_PREFIX:-hcl}-.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
py=${PYTHON:-.venv/bin/python}
dir=${HCL_DIR:-/tmp/harness-emulated-cluster}
prefix=${HCL_PREFIX:-hcl}
net=${HCL_SUBNET:-10.213.7}
iface=hcl0
port=7077
wmem=${WORKER_MEMORY:-2g}
state=$dir/state

die() { echo "emulated-cluster: $*" >&2; exit 2; }
usage() { die "usage: $0 up N --rate RATE | rate RATE | status | down   (RATE like 10gbit, 1gbit, 100mbit)"; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, veth links and tc): run it with sudo"
  for tool in ip tc java; do command -v "$tool" >/dev/null || die "$tool not found: install iproute2 / Java 17"; done
}

rate_bits() {  # RATE -> bits per second, or empty when RATE is not a tc rate we accept
  local r=$1
  [[ $r =~ ^([0-9]+)(kbit|mbit|gbit)$ ]] || return 0
  local n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
  case $unit in kbit) echo $((n * 1000)) ;; mbit) echo $((n * 1000000)) ;; gbit) echo $((n * 1000000000)) ;; esac
}

check_rate() {
  local bits; bits=$(rate_bits "$1")
  [ -n "$bits" ] && [ "$bits" -ge 1000000 ] && [ "$bits" -le 100000000000 ] ||
    die "bad rate '$1': give a tc rate between 1mbit and 100gbit, e.g. --rate 1gbit or --rate 100mbit"
}

namespaces() {  # every namespace of this cluster that exists now
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}-(hub|master|driver|w[0-9]+)$" || true
}

shape() {  # namespace, device, rate: token bucket on the device's egress
  local bits burst; bits=$(rate_bits "$3")
  # ~1 ms of traffic, at least a few full frames: a larger bucket would let small messages pass unshaped
  burst=$((bits / 8 / 1000)); [ "$burst" -lt 16384 ] && burst=16384
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst "$burst" latency 100ms
}

hosts() {  # "name address" for every host of the state's cluster
  echo "master $net.2"; echo "driver $net.3"
  for i in $(seq 1 "$N"); do echo "w$i $net.$((10 + i))"; done
}

reshape() {  # rate: both ends of every link (out of each host, and into it from the bridge)
  local name addr
  while read -r name addr; do
    shape "$prefix-$name" "$iface" "$1"
    shape "$prefix-hub" "v-$name" "$1"
  done < <(hosts)
}

start_java() {  # namespace, address, name, [taskset cpu or -], class, args...
  local ns=$1 addr=$2 name=$3 cpu=$4; shift 4
  local pin=(); [ "$cpu" != - ] && pin=(taskset -c "$cpu")
  # a host name of its own (a private UTS namespace): Horovod tells hosts apart by name, and one machine's name
  # on every host would make all ranks "local" to each other
  ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$ns" \
    env SPARK_LOCAL_IP="$addr" SPARK_PUBLIC_DNS="$addr" "${pin[@]}" \
    nohup java -cp "$spark_home/jars/*" -Xmx1g "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

wait_for() {  # pattern, file
  for _ in $(seq 1 90); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 1; done
  echo "emulated-cluster: timed out waiting for '$1' in $2" >&2; tail -20 "$2" >&2; return 1
}

down() {
  local ns pids
  for ns in $(namespaces); do
    # every process in the namespace: the daemons, their executors, Python workers and ranks
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
  done
  for _ in $(seq 1 20); do
    pids=""; for ns in $(namespaces); do pids+=$(ip netns pids "$ns" 2>/dev/null || true); done
    [ -z "$pids" ] && break
    sleep 0.5
  done
  for ns in $(namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  done
  for ns in $(namespaces); do ip netns del "$ns"; done  # veth pairs and the bridge go with their namespaces
  rm -rf /etc/netns/"$prefix"-*
  rmdir /etc/netns 2>/dev/null || true  # only when empty: another tool's files stay
  rm -f "$state" "$dir"/*.pid
}

up() {
  N=$1 rate=$2
  [ -z "$(namespaces)" ] && [ ! -f "$state" ] ||
    die "a cluster '$prefix' is already up (or left over): run $0 down first"
  # the subnet must be unused on this machine, or addresses would mean two things
  if ip -4 route show | grep -v '^default' | grep -q "^$net\." || ip -4 addr show | grep -q "inet $net\."; then
    die "$net.0/24 is already used on this machine: choose another with HCL_SUBNET=10.x.y"
  fi
  spark_home=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') ||
    die "pyspark not importable with $py: run make setup (or set PYTHON)"
  bash scripts/check-java.sh
  mkdir -p "$dir/logs"
  # whatever stops `up` midway (a failed command under set -e, a timeout, Ctrl-C) removes what it made
  trap 'echo "emulated-cluster: up failed; removing what it made" >&2; down' EXIT
  trap 'exit 1' INT TERM
  ip netns add "$prefix-hub"
  ip netns exec "$prefix-hub" ip link set lo up
  ip netns exec "$prefix-hub" ip link add br0 type bridge
  ip netns exec "$prefix-hub" ip link set br0 up
  local name addr
  while read -r name addr; do
    # `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts: every host resolves every other by name
    mkdir -p "/etc/netns/$prefix-$name"
    { cat /etc/hosts; hosts | while read -r n a; do echo "$a $prefix-$n"; done; } >"/etc/netns/$prefix-$name/hosts"
    ip netns add "$prefix-$name"
    ip netns exec "$prefix-$name" ip link set lo up
    # the pair is made inside the hub, then one end moves into the host's namespace
    ip netns exec "$prefix-hub" ip link add name "v-$name" type veth peer name "$iface" netns "$prefix-$name"
    ip netns exec "$prefix-hub" ip link set dev "v-$name" master br0 up
    ip netns exec "$prefix-$name" ip addr add "$addr/24" dev "$iface"
    ip netns exec "$prefix-$name" ip link set "$iface" up
  done < <(hosts)
  reshape "$rate"
  {
    echo "PREFIX=$prefix"; echo "N=$N"; echo "RATE=$rate"; echo "IFACE=$iface"; echo "SUBNET=$net.0/24"
    echo "MASTER=spark://$net.2:$port"; echo "DRIVER_IP=$net.3"
    echo "WORKERS=$(hosts | awk '/^w/ {printf "%s%s", sep, $2; sep=" "}')"
  } >"$state"

  export SPARK_HOME=$spark_home PYSPARK_PYTHON=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")
  scala=$(ls "$spark_home/jars" | sed -n 's/^spark-core_\([0-9.]*\)-.*\.jar$/\1/p' | head -n1)
  export SPARK_SCALA_VERSION=${scala:-2.12}
  start_java "$prefix-master" "$net.2" master - org.apache.spark.deploy.master.Master \
    --host "$net.2" --port "$port" --webui-port 0
  wait_for "I have been elected leader" "$dir/logs/master.log"
  local ncpu; ncpu=$(nproc)
  for i in $(seq 1 "$N"); do
    # each host gets one core of its own (round robin over the machine's CPUs): ranks inherit the pinning
    start_java "$prefix-w$i" "$net.$((10 + i))" "w$i" $(((i - 1) % ncpu)) org.apache.spark.deploy.worker.Worker \
      --host "$net.$((10 + i))" --webui-port 0 --cores 1 --memory "$wmem" --work-dir "$dir/work$i" \
      "spark://$net.2:$port"
  done
  for i in $(seq 1 "$N"); do wait_for "Successfully registered with master" "$dir/logs/w$i.log"; done
  trap - EXIT INT TERM
  echo "spark://$net.2:$port: $N worker host(s) x 1 core at $rate (logs and state in $dir)"
  echo "run the harness from the driver's namespace:"
  echo "  ip netns exec $prefix-driver env SPARK_LOCAL_IP=$net.3 $repo/.venv/bin/harness run scaling.horovod_spark" \
       "scaling.torch_distributor --master spark://$net.2:$port --conf spark.driver.host=$net.3" \
       "--conf spark.driver.bindAddress=$net.3 --set workers=1,2 --set network=$rate --set local_mode=false"
}

status() {
  [ -f "$state" ] || { echo "no emulated cluster ($state missing)"; [ -z "$(namespaces)" ] || echo "left over: $(namespaces | xargs)"; return 0; }
  cat "$state"
  local f
  for f in "$dir"/*.pid; do
    [ -f "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid) running"; else echo "$(basename "$f" .pid) dead"; fi
  done
  echo "registered workers: $(grep -c 'Registering worker' "$dir/logs/master.log" 2>/dev/null || echo 0)"
  ip netns exec "$prefix-hub" tc qdisc show | grep tbf || true
}

case "${1:-}" in
  up)
    [ $# -eq 4 ] && [ "$3" = --rate ] || usage
    [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 64 ] || die "bad N '$2': give a number of worker hosts, 1 to 64"
    check_rate "$4"
    need_root
    up "$2" "$4"
    ;;
  rate)
    [ $# -eq 2 ] || usage
    check_rate "$2"
    need_root
    [ -f "$state" ] || die "no emulated cluster is up ($state missing): run $0 up N --rate $2"
    N=$(sed -n 's/^N=//p' "$state")
    reshape "$2"
    sed -i "s/^RATE=.*/RATE=$2/" "$state"
    echo "rate $2"
    ;;
  down) [ $# -eq 1 ] || usage; need_root; down; echo "down" ;;
  status) [ $# -eq 1 ] || usage; need_root; N=$(sed -n 's/^N=//p' "$state" 2>/dev/null || echo 0); status ;;
  *) usage ;;
esac
